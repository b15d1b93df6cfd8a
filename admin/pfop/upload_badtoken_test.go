package pfop_test

import (
	"testing"
	"time"

	dora "github.com/doraproject/dora"
)

// An upload token of an unknown access key gets the answer of a token with
// a wrong sign (Qiniu: 401 "bad token" to both): a different one told an
// attacker which access keys exist.
func TestUploadTokenUnknownKeyAnswersLikeBadSign(t *testing.T) {
	e := newEnv(t)
	future := time.Now().Add(time.Hour).Unix()
	policy := map[string]any{"scope": "photos", "deadline": future}
	data := []byte("x")
	sUnknown, vUnknown := e.formUpload(uploadToken(dora.Account{AccessKey: "nobody", SecretKey: "x"}, policy), strp("u.txt"), nil, "f.bin", data)
	sBad, vBad := e.formUpload(badSign(uploadToken(alice, policy)), strp("u.txt"), nil, "f.bin", data)
	if sUnknown != 401 || sBad != 401 {
		t.Fatalf("unknown AK %d %v, bad sign %d %v: want 401 both", sUnknown, vUnknown, sBad, vBad)
	}
	if vUnknown["error"] != vBad["error"] {
		t.Fatalf("unknown AK answers %v, bad sign %v: the answer tells which keys exist", vUnknown["error"], vBad["error"])
	}
}
