package router

import (
	"context"
	"crypto/md5"
	"encoding/hex"
	"io"
	"net/http"
	"path/filepath"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	dora "github.com/doraproject/dora"
	"github.com/doraproject/dora/pool"
	"github.com/doraproject/dora/router/origin"
	"github.com/doraproject/dora/router/origin/local"
)

// pattern is an endless deterministic byte stream.
type pattern struct{ i uint64 }

func (p *pattern) Read(b []byte) (int, error) {
	for k := range b {
		p.i++
		b[k] = byte(p.i*2654435761>>13) ^ byte(p.i>>20)
	}
	return len(b), nil
}

// TestGiBThroughThreeSteps streams a 1 GiB object (a real file in a local
// origin) through passthru|passthru|passthru and checks the bytes and that
// the router's heap stays under 64 MiB meanwhile.
func TestGiBThroughThreeSteps(t *testing.T) {
	if testing.Short() {
		t.Skip("writes and streams 1 GiB")
	}
	if raceEnabled {
		t.Skip("too slow under the race detector")
	}
	const size = 1 << 30
	dir, err := local.New(filepath.Join(t.TempDir(), "objects"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { dir.Close() })
	want := md5.New()
	if _, err := dir.Put(context.Background(), "photos", "big.bin", io.TeeReader(io.LimitReader(&pattern{}, size), want),
		origin.PutOptions{MimeType: "application/octet-stream"}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { dir.Delete(context.Background(), "photos", "big.bin") })

	gibThroughThreeSteps(t, dir, size, want.Sum(nil))
}

// gibThroughThreeSteps streams photos/big.bin (size bytes, md5 wantMD5)
// from objs through passthru|passthru|passthru, checks the bytes and that
// the router's heap stays under 64 MiB meanwhile, and returns the rate in
// MB/s.
func gibThroughThreeSteps(t *testing.T, objs origin.Reader, size int64, wantMD5 []byte) float64 {
	e := newEnv(t, func(c *Config) { c.Objects = objs })
	insts := []pool.Instance{}
	for i := range 3 {
		p := startExample(t, "passthru")
		insts = append(insts, poolInst("p"+string(rune('0'+i)), "passthru", "v1", p.addr))
	}
	e.ufop(dora.Ufop{Name: "passthru", Owner: alice.ID}, dora.ProtocolDora)
	e.pool.Update(insts)

	runtime.GC()
	var peak atomic.Uint64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		var ms runtime.MemStats
		for {
			runtime.ReadMemStats(&ms)
			if ms.HeapInuse > peak.Load() {
				peak.Store(ms.HeapInuse)
			}
			select {
			case <-stop:
				return
			case <-tick.C:
			}
		}
	})
	req, _ := http.NewRequest("GET", "http://"+e.addr+"/big.bin?passthru|passthru|passthru", nil)
	req.Host = "photos.localhost"
	start := time.Now()
	resp, err := e.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	got := md5.New()
	n, err := io.Copy(got, resp.Body)
	resp.Body.Close()
	close(stop)
	wg.Wait()
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("status %d, read %d bytes: %v", resp.StatusCode, n, err)
	}
	if n != size || hex.EncodeToString(got.Sum(nil)) != hex.EncodeToString(wantMD5) {
		t.Fatalf("got %d bytes (md5 %x), want %d (md5 %x)", n, got.Sum(nil), size, wantMD5)
	}
	t.Logf("%T: 1 GiB through three passthru steps in %v (%.0f MB/s), peak heap in use %.1f MiB",
		objs, time.Since(start).Round(time.Millisecond), float64(size)/1e6/time.Since(start).Seconds(), float64(peak.Load())/(1<<20))
	if p := peak.Load(); p >= 64<<20 {
		t.Fatalf("peak heap in use %d bytes, want < 64 MiB", p)
	}
	return float64(size) / 1e6 / time.Since(start).Seconds()
}
