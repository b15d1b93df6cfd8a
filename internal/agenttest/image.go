package agenttest

import (
	"archive/tar"
	"bytes"
	"crypto/rand"
	"io"
	"os"
	"runtime"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// ImageOptions shape a test image made by PackImage.
type ImageOptions struct {
	// Arch is the image's architecture; empty: this host's.
	Arch string
	// Entrypoint is the image's entrypoint; nil: /app; an empty non-nil
	// slice: none.
	Entrypoint []string
	// Env is the image's environment.
	Env []string
	// Salt adds a file of random bytes, so that the image's layer is new
	// to a container engine that has seen the same binary before.
	Salt bool
	// WorkingDir is the image's working directory; empty: none.
	WorkingDir string
	// Layer, if set, writes more entries into the image's layer after
	// /app (and the salt), for tests that need files in the image.
	Layer func(*tar.Writer)
}

// PackImage packs the program bin as /app into a one-layer linux image
// (see Image), writes it to path as a docker-save tarball tagged tag (as
// `docker save` would) and returns the image. Images to push or pull in
// tests come from here instead of a registry.
func PackImage(t testing.TB, bin, path, tag string, o ImageOptions) v1.Image {
	t.Helper()
	img := Image(t, bin, o)
	ref, err := name.NewTag(tag)
	if err != nil {
		t.Fatal(err)
	}
	if err := tarball.WriteToFile(path, ref, img); err != nil {
		t.Fatal(err)
	}
	return img
}

// Image packs the program bin as /app into a one-layer linux image shaped
// by o and returns it, for tests that write it somewhere themselves (a
// registry on loopback, say); PackImage writes it to a tarball.
func Image(t testing.TB, bin string, o ImageOptions) v1.Image {
	t.Helper()
	data, err := os.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	files := []struct {
		name string
		data []byte
	}{{"app", data}}
	if o.Salt {
		files = append(files, struct {
			name string
			data []byte
		}{"salt", []byte(rand.Text())})
	}
	for _, f := range files {
		if err := tw.WriteHeader(&tar.Header{Name: f.name, Mode: 0o755, Size: int64(len(f.data)), Typeflag: tar.TypeReg}); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write(f.data); err != nil {
			t.Fatal(err)
		}
	}
	if o.Layer != nil {
		o.Layer(tw)
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	// From memory: tarball.LayerFromReader would buffer the layer in a
	// temporary file it never removes (10 MB in /tmp per image, every run).
	b := buf.Bytes()
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(b)), nil })
	if err != nil {
		t.Fatal(err)
	}
	img, err := mutate.AppendLayers(empty.Image, layer)
	if err != nil {
		t.Fatal(err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture = "linux", runtime.GOARCH
	if o.Arch != "" {
		cf.Architecture = o.Arch
	}
	cf.Config.Entrypoint = []string{"/app"}
	if o.Entrypoint != nil {
		cf.Config.Entrypoint = o.Entrypoint
	}
	cf.Config.Env = o.Env
	cf.Config.WorkingDir = o.WorkingDir
	if img, err = mutate.ConfigFile(img, cf); err != nil {
		t.Fatal(err)
	}
	return img
}
