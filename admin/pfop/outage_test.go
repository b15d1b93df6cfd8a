package pfop_test

import (
	"net/http"
	"net/url"
	"testing"
)

// TestStoreOutageIs503: a correctly signed pfop whose access key cannot be
// looked up because the metadata store does not answer gets 503 (retry),
// not 401 (the production soak saw "401 bad signature" during a Consul
// outage). The store is closed here to make it fail.
func TestStoreOutageIs503(t *testing.T) {
	e := newEnv(t)
	if err := e.st.Close(); err != nil {
		t.Fatal(err)
	}
	status, v, _ := e.pfopCall("/pfop/", alice, signers["qiniu"], url.Values{
		"bucket": {"photos"}, "key": {"a.txt"}, "fops": {"upper"},
	})
	if status != http.StatusServiceUnavailable {
		t.Fatalf("pfop during a store outage: %d %v, want 503", status, v)
	}
}
