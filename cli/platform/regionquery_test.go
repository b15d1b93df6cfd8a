package platform

import (
	"context"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"testing"

	"github.com/doraproject/dora/cli/platform/platformtest"
)

// TestRegionQueryNamesTheDomainSuffix: the SDKs' region query names where a
// bucket is downloaded from (io_src) as <bucket>.<the routers' domain
// suffix>; dorad admin did not pass its --domain-suffix to the handler, so
// every admin answered <bucket>.localhost, a name that only dorad dev's
// routers answer to.
func TestRegionQueryNamesTheDomainSuffix(t *testing.T) {
	dir := platformtest.ReachableTempDir(t)
	a, err := StartAdmin(context.Background(), AdminConfig{
		Listen:       "127.0.0.1:0",
		Store:        "bolt://" + filepath.Join(dir, "meta.db"),
		Runtime:      "local://",
		Objects:      "file://" + filepath.Join(dir, "objects"),
		DataDir:      dir,
		DomainSuffix: "dora.example",
		RouterHost:   "dl.example:9080",
		RunAs:        RunAsSelf,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	resp, err := http.Get(a.URL + "/v4/query?ak=AK&bucket=photos")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(b), `"photos.dora.example:9080"`) {
		t.Fatalf("/v4/query: %d %s; want io_src photos.dora.example:9080", resp.StatusCode, b)
	}
}
