package agenttest

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
)

// SeaweedFSReadyTimeout bounds the start of SeaweedFS (master, volume
// server, filer and S3 gateway in one process).
const SeaweedFSReadyTimeout = 90 * time.Second

// SeaweedFS is a running `weed server -s3` on loopback: master, volume
// server, filer and the S3 gateway in one process, with authentication on
// (one identity, AccessKey/SecretKey, allowed everything), so requests
// without valid signatures are refused as on a real store. Its data stays
// in Dir across Stop and Start.
type SeaweedFS struct {
	// Endpoint is the S3 gateway's base URL, "http://127.0.0.1:<port>".
	Endpoint string
	// S3Port is the S3 gateway's port.
	S3Port int
	// AccessKey and SecretKey are the one identity's credentials.
	AccessKey, SecretKey string
	// Dir holds the data; LogPath the process output across restarts.
	Dir, LogPath string

	outage
}

// StartSeaweedFS starts weed (found in $DORA_WEED, ~/.cache/dora-deps/bin,
// then PATH; built by scripts/install-deps.sh) and waits until its S3
// gateway answers a signed ListBuckets. It is stopped when the test ends.
func StartSeaweedFS(t testing.TB) *SeaweedFS {
	t.Helper()
	bin := findBinary(t, "weed", "DORA_WEED", true)
	dir := t.TempDir()
	ports := freePorts(t, 8)
	w := &SeaweedFS{
		S3Port:    ports[6],
		AccessKey: "DORATEST" + strings.ToUpper(randHex(6)),
		SecretKey: randHex(20),
		Dir:       dir,
		LogPath:   filepath.Join(dir, "weed.log"),
	}
	w.Endpoint = fmt.Sprintf("http://127.0.0.1:%d", w.S3Port)
	data := filepath.Join(dir, "data")
	if err := os.MkdirAll(data, 0o700); err != nil {
		t.Fatalf("agenttest: weed data dir: %v", err)
	}
	conf, err := json.Marshal(map[string]any{"identities": []any{map[string]any{
		"name":        "dora",
		"credentials": []any{map[string]string{"accessKey": w.AccessKey, "secretKey": w.SecretKey}},
		"actions":     []string{"Admin", "Read", "List", "Tagging", "Write"},
	}}})
	if err != nil {
		t.Fatal(err)
	}
	confPath := filepath.Join(dir, "s3.json")
	if err := os.WriteFile(confPath, conf, 0o600); err != nil {
		t.Fatalf("agenttest: weed s3 config: %v", err)
	}
	w.p = &process{
		t:    t,
		name: "weed server " + w.Endpoint,
		bin:  bin,
		args: []string{
			"server",
			"-ip=127.0.0.1", "-ip.bind=127.0.0.1",
			"-dir=" + data,
			"-master.port=" + itoa(ports[0]), "-master.port.grpc=" + itoa(ports[1]),
			"-master.volumeSizeLimitMB=128", "-master.telemetry=false",
			"-volume.port=" + itoa(ports[2]), "-volume.port.grpc=" + itoa(ports[3]),
			"-volume.max=200", "-volume.preStopSeconds=0",
			"-filer", "-filer.port=" + itoa(ports[4]), "-filer.port.grpc=" + itoa(ports[5]),
			"-filer.localSocket=" + filepath.Join(dir, "filer.sock"),
			"-s3", "-s3.port=" + itoa(ports[6]), "-s3.port.grpc=" + itoa(ports[7]),
			"-s3.port.iceberg=0", "-s3.port.lance=0",
			"-s3.localSocket=" + filepath.Join(dir, "s3.sock"),
			"-s3.config=" + confPath,
		},
		dir:     dir,
		logPath: w.LogPath,
		ready: func(ctx context.Context) error {
			cctx, cancel := context.WithTimeout(ctx, 3*time.Second)
			defer cancel()
			_, err := w.Client().ListBuckets(cctx, &s3.ListBucketsInput{})
			return err
		},
		timeout: SeaweedFSReadyTimeout,
	}
	w.p.register()
	return w
}

// Client returns an S3 client for the gateway with the test identity
// (path-style, the SDK's default retries).
func (w *SeaweedFS) Client() *s3.Client {
	return s3.New(s3.Options{
		Region:       "us-east-1",
		BaseEndpoint: aws.String(w.Endpoint),
		UsePathStyle: true,
		Credentials:  credentials.NewStaticCredentialsProvider(w.AccessKey, w.SecretKey, ""),
		// As the origin does: checksums only where required.
		RequestChecksumCalculation: aws.RequestChecksumCalculationWhenRequired,
		ResponseChecksumValidation: aws.ResponseChecksumValidationWhenRequired,
	})
}

// CreateBucket creates an S3 bucket and waits (bounded) until an object
// can be written to it: a fresh server grows its first volumes lazily.
func (w *SeaweedFS) CreateBucket(t testing.TB, name string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), SeaweedFSReadyTimeout)
	defer cancel()
	c := w.Client()
	if _, err := c.CreateBucket(ctx, &s3.CreateBucketInput{Bucket: aws.String(name)}); err != nil {
		t.Fatalf("agenttest: create S3 bucket %s: %v", name, err)
	}
	probe := ".agenttest-probe-" + randHex(4)
	var last error
	for ctx.Err() == nil {
		_, last = c.PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String(name), Key: aws.String(probe), Body: bytes.NewReader([]byte("x"))})
		if last == nil {
			if _, err := c.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: aws.String(name), Key: aws.String(probe)}); err != nil {
				t.Fatalf("agenttest: delete probe in %s: %v", name, err)
			}
			return
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Fatalf("agenttest: S3 bucket %s not writable within %v: %v\n%s", name, SeaweedFSReadyTimeout, last, w.p.tail())
}

func randHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}
