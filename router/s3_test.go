package router

import (
	"bytes"
	"context"
	"crypto/md5"
	"fmt"
	"io"
	"path/filepath"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/valyala/fasthttp"

	dora "github.com/doraproject/dora"
	"github.com/doraproject/dora/internal/agenttest"
	"github.com/doraproject/dora/router/origin"
	"github.com/doraproject/dora/router/origin/local"
	s3origin "github.com/doraproject/dora/router/origin/s3"
)

// startS3 starts SeaweedFS with one S3 bucket and returns an S3 origin on
// it.
func startS3(tb testing.TB) *s3origin.Store {
	tb.Helper()
	w := agenttest.StartSeaweedFS(tb)
	w.CreateBucket(tb, "dora")
	s, err := s3origin.New(context.Background(), s3origin.Config{
		Bucket: "dora", Prefix: "objects", Endpoint: w.Endpoint, PathStyle: true,
		Credentials: credentials.NewStaticCredentialsProvider(w.AccessKey, w.SecretKey, ""),
	})
	if err != nil {
		tb.Fatal(err)
	}
	return s
}

// TestGiBThroughThreeStepsFromS3 is TestGiBThroughThreeSteps with the
// object in an S3 store (SeaweedFS): the GET from S3 streams too, so the
// router's heap stays under 64 MiB. Run with TestGiBThroughThreeSteps
// (make large) to compare the two rates in one run.
func TestGiBThroughThreeStepsFromS3(t *testing.T) {
	if testing.Short() {
		t.Skip("writes and streams 1 GiB")
	}
	if raceEnabled {
		t.Skip("too slow under the race detector")
	}
	const size = 1 << 30
	s := startS3(t)
	want := md5.New()
	start := time.Now()
	obj, err := s.Put(context.Background(), "photos", "big.bin", io.TeeReader(io.LimitReader(&pattern{}, size), want),
		origin.PutOptions{MimeType: "application/octet-stream"})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("1 GiB streamed into S3 (multipart) in %v (%.0f MB/s)", time.Since(start).Round(time.Millisecond),
		float64(size)/1e6/time.Since(start).Seconds())
	if st, err := s.Stat(context.Background(), "photos", "big.bin"); err != nil || st.ETag != obj.ETag || st.Size != size {
		t.Fatalf("Stat = %+v, %v; want etag %s", st, err, obj.ETag)
	}
	gibThroughThreeSteps(t, s, size, want.Sum(nil))
}

// BenchmarkOneStepOrigins is BenchmarkPipeline's 4 KiB case (one passthru
// step) with the object in each origin: in memory, in a local directory
// and in an S3 store (SeaweedFS on loopback). Each request reads the
// object from its origin (no result cache: passthru is a ufop).
func BenchmarkOneStepOrigins(b *testing.B) {
	const size = 4 << 10
	data := make([]byte, size)
	mem := newMemOrigin()
	mem.add("photos", "small", "application/octet-stream", data)
	dir, err := local.New(filepath.Join(b.TempDir(), "objects"))
	if err != nil {
		b.Fatal(err)
	}
	defer dir.Close()
	s3 := startS3(b)
	for _, w := range []origin.Writer{dir, s3} {
		if _, err := w.Put(context.Background(), "photos", "small", bytes.NewReader(data), origin.PutOptions{}); err != nil {
			b.Fatal(err)
		}
	}
	for _, o := range []struct {
		name string
		objs origin.Reader
	}{{"memory", mem}, {"local", dir}, {"s3", s3}} {
		b.Run(fmt.Sprintf("%s/%dKiB", o.name, size>>10), func(b *testing.B) { benchOneStep(b, o.objs, size) })
	}
}

func benchOneStep(b *testing.B, objs origin.Reader, size int) {
	hc := benchServe(b, benchRouter(b, objs, dora.Release{}))
	b.SetBytes(int64(size))
	b.ReportAllocs()
	start := time.Now()
	benchGets(b, hc, "/small?passthru", func(resp *fasthttp.Response) error { return checkBody(resp, size) })
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "req/s")
}
