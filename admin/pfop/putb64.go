package pfop

import (
	"encoding/base64"
	"errors"
	"fmt"
	"hash"
	"hash/crc32"
	"io"
	"net/http"
	"strings"
)

// pathPutb64 is Qiniu's base64 upload (the Go SDK's storage.Base64Uploader):
//
//	POST /putb64/<fsize>[/key/<EncodedKey>][/mimeType/<Encoded>][/crc32/<decimal>][/x:<var>/<Encoded>]...
//	Authorization: UpToken <upload token>
//	body: the file in base64 (standard or URL-safe alphabet; line breaks skipped)
//
// fsize is the decoded size, -1 when not given. The token's policy applies
// exactly as to form uploads (checkUpload, storeUpload, replyUpload). The
// body is decoded as it streams into the store; a size or crc32 that does
// not match, or a body that is not base64, stores nothing. The text may
// be at most what a file of the declared fsize (else of the policy's
// limit) encodes to, with line breaks (b64TextMax): 413 beyond.
const pathPutb64 = "/putb64/"

func (h *Handler) servePutb64(w http.ResponseWriter, r *http.Request, reqid string) int {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", "POST")
		return writeError(w, http.StatusMethodNotAllowed, "use POST")
	}
	token, ok := upToken(r)
	if !ok {
		return writeError(w, http.StatusUnauthorized, `putb64 takes "Authorization: UpToken <upload token>"`)
	}
	rest := strings.TrimPrefix(r.URL.Path, pathPutb64)
	// crc32's value is decimal, the others URL-safe base64 (mkfileParams).
	segs := strings.Split(rest, "/")
	f := &b64File{crc: crc32.NewIEEE(), fsize: -1}
	kept := segs[:1]
	for i := 1; i+1 < len(segs); i += 2 {
		if segs[i] == "crc32" {
			want, ue := parseCRC32(segs[i+1])
			if ue != nil {
				return writeError(w, ue.status, ue.msg)
			}
			f.crcWant, f.crcWanted = want, true
			continue
		}
		kept = append(kept, segs[i], segs[i+1])
	}
	if len(segs)%2 == 0 {
		kept = append(kept, segs[len(segs)-1]) // an odd parameter: mkfileParams refuses it
	}
	declared := kept[0] != "-1"
	if !declared {
		kept[0] = "0"
	}
	fsize, key, hasKey, fname, mt, vars, err := mkfileParams(strings.Join(kept, "/"))
	if err != nil {
		return writeError(w, http.StatusBadRequest, strings.Replace(err.Error(), "mkfile", "putb64", 1))
	}
	if declared {
		f.fsize = fsize
	}
	t, ue := h.checkUpload(r.Context(), token, key, hasKey)
	if ue != nil {
		return writeError(w, ue.status, ue.msg)
	}
	limit := h.uploadLimit(t.policy)
	if f.fsize > limit {
		return writeError(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("exceed FsizeLimit of %d bytes", limit))
	}
	if f.fsize >= 0 {
		limit = f.fsize
	}
	// The decoder skips line breaks: without a bound on the text, a body
	// of them alone would be read without end.
	body := http.MaxBytesReader(w, r.Body, b64TextMax(limit))
	f.dec = base64.NewDecoder(base64.StdEncoding, urlSafeToStd{body})
	up, ue := h.storeUpload(r.Context(), t, f, mt, fname, vars)
	if f.failed != nil { // the body's own fault, whatever the store made of it
		ue = f.failed
	}
	if ue != nil {
		return writeError(w, ue.status, ue.msg)
	}
	return h.replyUpload(w, r, reqid, t, up, vars, "")
}

// b64TextMax bounds the base64 text of a file of at most n bytes: its
// encoding, padded, with a line break (CRLF) every 64 characters (PEM's
// lines; MIME's are 76), and some slack.
func b64TextMax(n int64) int64 {
	enc := (n + 2) / 3 * 4
	return enc + enc/32 + 4<<10
}

// urlSafeToStd maps the URL-safe base64 alphabet's '-' and '_' to the
// standard one's '+' and '/' (neither alphabet holds the other's).
type urlSafeToStd struct{ r io.Reader }

func (u urlSafeToStd) Read(p []byte) (int, error) {
	n, err := u.r.Read(p)
	for i, c := range p[:n] {
		switch c {
		case '-':
			p[i] = '+'
		case '_':
			p[i] = '/'
		}
	}
	return n, err
}

// b64File is the decoded body of a putb64 as the store reads it: at its
// end it checks the size and crc32 the path declared and only then answers
// io.EOF, which lets the store commit the object; any fault ends it with
// an error instead, and the store keeps nothing (as formFile).
type b64File struct {
	dec       io.Reader
	crc       hash.Hash32
	crcWant   uint32
	crcWanted bool
	fsize     int64 // -1: not declared
	n         int64
	end       error
	failed    *uploadError
}

func (f *b64File) Read(p []byte) (int, error) {
	if f.end != nil {
		return 0, f.end
	}
	n, err := f.dec.Read(p)
	f.crc.Write(p[:n])
	f.n += int64(n)
	var corrupt base64.CorruptInputError
	switch {
	case f.fsize >= 0 && f.n > f.fsize: // no need to read on
		f.failed = uerr(http.StatusBadRequest, "putb64: fsize %d, but the body decodes to more", f.fsize)
	case err == nil:
		return n, nil
	case err == io.EOF:
		f.failed = f.finish()
	case errors.As(err, &corrupt):
		f.failed = uerr(http.StatusBadRequest, "putb64: the body is not base64 (byte %d)", int64(corrupt))
	default:
		f.failed = bodyErr(err)
	}
	if f.failed != nil {
		f.end = f.failed
	} else {
		f.end = io.EOF
	}
	return n, f.end
}

func (f *b64File) finish() *uploadError {
	if f.fsize >= 0 && f.n != f.fsize {
		return uerr(http.StatusBadRequest, "putb64: fsize %d, but the body decodes to %d bytes", f.fsize, f.n)
	}
	if f.crcWanted && f.crc.Sum32() != f.crcWant {
		return uerr(http.StatusNotAcceptable, "crc32 not match")
	}
	return nil
}
