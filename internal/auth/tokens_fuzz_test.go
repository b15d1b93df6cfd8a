package auth

import (
	"context"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"
)

// FuzzDownloadAndSaveAsTokens feeds arbitrary tokens, signs, deadlines and
// X-Qiniu-Date values to the verifiers: none may panic, every refusal wraps
// ErrUnauthorized, and whatever is accepted is exactly what the signer
// makes (one spelling of a sign, an unexpired deadline the URL ends with).
func FuzzDownloadAndSaveAsTokens(f *testing.F) {
	full := DownloadURL("http://photos.localhost:8080/a.jpg?grepd/x", testAK, testSK, 1700000000)
	upToE, token, _ := strings.Cut(full, "&token=")
	hpq := "photos.localhost:8080/a.jpg?grepd/x|saveas/Yjpr"
	f.Add(upToE, token, int64(1700000000), hpq, testAK, SaveAsSign(testSK, hpq), "20260102T030405Z")
	f.Add(upToE, "AK:"+strings.TrimRight(token[3:], "="), int64(1700000000), hpq, "AK", "x\n", "2026-01-02")
	f.Add("e=", ":", int64(-1), "", "", "", "99999999T999999Z")
	f.Add(upToE, "AK:AK:"+token[3:], int64(1<<62), hpq, "AK:", token[3:]+"\r", "20260102T030405Z\x00")
	ctx := context.Background()
	now := time.Unix(1700000000, 0)
	f.Fuzz(func(t *testing.T, url, tok string, deadline int64, hostPathQuery, ak, sign, date string) {
		got, err := VerifyDownloadToken(ctx, lookup, url, tok, deadline, now)
		if err != nil {
			if !errors.Is(err, ErrUnauthorized) {
				t.Fatalf("download token: error %v does not wrap ErrUnauthorized", err)
			}
		} else {
			if got != testAK || tok != testAK+":"+HMACSHA1(testSK, []byte(url)) {
				t.Fatalf("download token %q accepted for %q as %q", tok, url, got)
			}
			if deadline < now.Unix() || !strings.HasSuffix(url, "e="+strconv.FormatInt(deadline, 10)) {
				t.Fatalf("download token accepted with deadline %d for %q at %d", deadline, url, now.Unix())
			}
		}
		if err := VerifySaveAs(ctx, lookup, hostPathQuery, ak, sign); err != nil {
			if !errors.Is(err, ErrUnauthorized) {
				t.Fatalf("saveas: error %v does not wrap ErrUnauthorized", err)
			}
		} else if ak != testAK || sign != SaveAsSign(testSK, hostPathQuery) {
			t.Fatalf("saveas sign %q of %q accepted for %q", sign, ak, hostPathQuery)
		}
		h := http.Header{DateHeader: {date}}
		authz := SignQiniu(testAK, testSK, "GET", "/v1/whoami", "h", "", h, nil)
		if _, err := verifier().Verify(ctx, authz, "GET", "/v1/whoami", "h", "", h, nil); err != nil {
			if !errors.Is(err, ErrUnauthorized) {
				t.Fatalf("date %q: error %v does not wrap ErrUnauthorized", date, err)
			}
		} else if d, perr := time.Parse(DateFormat, date); perr != nil || d.Sub(testDate) > 20*time.Minute || testDate.Sub(d) > 20*time.Minute {
			t.Fatalf("X-Qiniu-Date %q accepted", date)
		}
	})
}
