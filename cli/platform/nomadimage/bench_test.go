package nomadimage_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/doraproject/dora"
	"github.com/doraproject/dora/admin/client"
	"github.com/doraproject/dora/cli/platform/platformtest"
	"github.com/doraproject/dora/internal/agenttest"
)

// BenchmarkPassthruOnNomad: 4 KiB one-step requests through the router to
// examples/passthru deployed twice on one Nomad client in the same run:
// as an OCI image (docker driver on podman, bridge network, 9100 published
// on a loopback port) and as a program package (raw_exec on the client's
// network). Each sub-benchmark reports req/s; compare them, not absolute
// figures (the machine is shared). Not part of `make test`:
//
//	go test -run '^$' -bench PassthruOnNomad -benchtime 8s ./cli/platform/nomadimage/
func BenchmarkPassthruOnNomad(b *testing.B) {
	e := startPlatform(b, "")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	bin := buildStatic(b, e.work, "./examples/passthru", "passthru")
	tarPath := filepath.Join(e.work, "passthru.tar")
	agenttest.PackImage(b, bin, tarPath, "passthru:v1", agenttest.ImageOptions{})
	if out := qdoractl(b, "push", "passthru:v1", "--from", tarPath); !strings.Contains(out, "Push success") {
		b.Fatalf("push:\n%s", out)
	}
	e.putObjects(b)
	data := make([]byte, 4096)
	rand.Read(data)
	p := filepath.Join(e.work, "4k.bin")
	if err := os.WriteFile(p, data, 0o644); err != nil {
		b.Fatal(err)
	}
	qdoractl(b, "put", "demo", "4k.bin", p)

	c := e.client
	if _, err := c.RegisterUfop(ctx, "passimg", "passthru image", dora.ModePrivate); err != nil {
		b.Fatal(err)
	}
	if _, err := c.CreateRelease(ctx, client.ReleaseConfig{
		UfopName: "passimg", VerStr: "v1", Image: "passthru:v1", Flavor: "default",
		HealthCheck: &client.HealthCheckConfig{Path: "/health", Timeout: 1}, Protocol: "dora",
	}); err != nil {
		b.Fatal(err)
	}
	if _, err := c.Deploy(ctx, "passimg", client.DeployRequest{Version: "v1", Region: "z0", Expect: 2}); err != nil {
		b.Fatal(err)
	}
	e.deployPackage(b, ctx, "passpkg", bin, "./passthru")
	hc := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
	ok := func(got []byte) bool { return bytes.Equal(got, data) }
	for _, u := range []string{"passimg", "passpkg"} {
		twoHealthy(b, ctx, c, e.nc, e.cc, u, "ufop-"+u+"-v1")
		platformtest.Eventually(b, wait, u+" answering", func() error { return expect(hc, e.routerURL, "/4k.bin?"+u, ok) })
	}
	for _, u := range []string{"passimg", "passpkg"} {
		b.Run(u, func(b *testing.B) {
			b.SetParallelism(8)
			b.ResetTimer()
			start := time.Now()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if err := expect(hc, e.routerURL, "/4k.bin?"+u, ok); err != nil {
						b.Error(err)
						return
					}
				}
			})
			b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "req/s")
		})
	}
}
