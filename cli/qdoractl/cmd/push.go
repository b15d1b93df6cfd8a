package cmd

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"regexp"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/validate"
	"github.com/spf13/cobra"
)

// ErrNoImageSource is returned by push when no Docker daemon answers and no
// --from was given.
var ErrNoImageSource = errors.New("no image source")

var repoRE = regexp.MustCompile(`^[a-z0-9]+(?:[._-][a-z0-9]+)*(?:/[a-z0-9]+(?:[._-][a-z0-9]+)*)*$`)
var tagRE = regexp.MustCompile(`^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$`)

// parseImageName splits "ufopdemo:v1" into repository and tag ("latest"
// when absent). Registry hosts and digests are not accepted: the platform's
// registry and the caller's account are implied.
func parseImageName(s string) (repo, tag string, err error) {
	repo, tag = s, "latest"
	if i := strings.LastIndex(s, ":"); i > strings.LastIndex(s, "/") {
		repo, tag = s[:i], s[i+1:]
	}
	if !repoRE.MatchString(repo) || !tagRE.MatchString(tag) {
		return "", "", usagef("image %q: want <name>[:<tag>] with a lowercase name such as ufopdemo:v1", s)
	}
	if strings.Contains(repo, "/") && strings.ContainsAny(strings.SplitN(repo, "/", 2)[0], ".:") {
		return "", "", usagef("image %q: give the name without a registry host", s)
	}
	return repo, tag, nil
}

func (a *app) pushCmd() *cobra.Command {
	var from, dockerHost string
	c := &cobra.Command{
		Use:   "push <image> [--from <docker-save tar | OCI layout dir>]",
		Short: "Push an image to the platform's registry (then name it in dora.yaml)",
		Long: `push copies an image to the platform's registry as <account id>/<name>:<tag>,
authenticating with your AK/SK. Without --from it reads the image from the
local Docker daemon; with --from it reads a "docker save" tarball or an OCI
image layout directory.`,
		Example: `  qdoractl push ufopdemo:v1
  docker save ufopdemo:v1 -o ufopdemo.tar && qdoractl push ufopdemo:v1 --from ufopdemo.tar
  qdoractl push ufopdemo:v1 --from ./oci-layout`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			repo, tag, err := parseImageName(args[0])
			if err != nil {
				return err
			}
			cl, err := a.client()
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			img, cleanup, err := loadImage(ctx, args[0], from, dockerHost)
			if err != nil {
				return err
			}
			defer cleanup()
			// Every layer is read and checked against its digest before
			// anything is sent: a corrupt or truncated tarball is refused
			// with nothing stored in the registry.
			if err := validate.Image(img); err != nil {
				return fmt.Errorf("image %s is corrupt or incomplete (nothing was pushed): %w", args[0], err)
			}
			acct, err := cl.Whoami(ctx)
			if err != nil {
				return err
			}
			var opts []name.Option
			if strings.HasPrefix(cl.Endpoint(), "http://") {
				opts = append(opts, name.Insecure)
			}
			dest := fmt.Sprintf("%s/%s/%s:%s", cl.Host(), acct.ID, repo, tag)
			ref, err := name.NewTag(dest, opts...)
			if err != nil {
				return fmt.Errorf("destination %s: %w", dest, err)
			}
			if !a.jsonOut {
				fmt.Fprintf(a.stdout, "Pushing %s to %s\n", args[0], ref.String())
			}
			err = remote.Write(ref, img, remote.WithContext(ctx),
				remote.WithAuth(&authn.Basic{Username: cl.AccessKey(), Password: a.v.GetString(keySK)}))
			if err != nil {
				return fmt.Errorf("push %s: %w", args[0], err)
			}
			digest, err := img.Digest()
			if err != nil {
				return err
			}
			out := map[string]string{"name": repo + ":" + tag, "ref": ref.String(), "digest": digest.String()}
			return a.show(out, func() error {
				fmt.Fprintf(a.stdout, "Push success\nImage: %s:%s\nDigest: %s\nRun `qdoractl image` to list your images\n", repo, tag, digest)
				return nil
			})
		},
	}
	c.Flags().StringVar(&from, "from", "", "docker-save tarball or OCI layout directory to read the image from")
	c.Flags().StringVar(&dockerHost, "docker-host", "", "Docker daemon address (default $DOCKER_HOST or unix:///var/run/docker.sock)")
	return c
}

// loadImage reads the image from --from, or from the Docker daemon. The
// cleanup func removes temporary files.
func loadImage(ctx context.Context, image, from, dockerHost string) (v1.Image, func(), error) {
	nop := func() {}
	if from != "" {
		st, err := os.Stat(from)
		if err != nil {
			return nil, nop, fmt.Errorf("--from: %w", err)
		}
		if st.IsDir() {
			img, err := imageFromLayout(from, image)
			return img, nop, err
		}
		img, err := imageFromTarball(from, image)
		return img, nop, err
	}
	if dockerHost == "" {
		dockerHost = os.Getenv("DOCKER_HOST")
	}
	if dockerHost == "" {
		dockerHost = "unix:///var/run/docker.sock"
	}
	d, err := newDockerClient(dockerHost)
	if err == nil {
		err = d.ping(ctx)
	}
	if err != nil {
		return nil, nop, fmt.Errorf("%w: no Docker daemon answers at %s (%v); export the image with "+
			"`docker save %s -o image.tar` and run `qdoractl push %s --from image.tar`, or give an OCI layout directory with --from",
			ErrNoImageSource, dockerHost, err, image, image)
	}
	tmp, err := d.save(ctx, image)
	if err != nil {
		return nil, nop, err
	}
	cleanup := func() { os.Remove(tmp) }
	img, err := imageFromTarball(tmp, image)
	if err != nil {
		cleanup()
		return nil, nop, err
	}
	return img, cleanup, nil
}

// imageFromTarball reads a docker-save tarball: the image tagged image, or
// the only image of the tarball.
func imageFromTarball(path, image string) (v1.Image, error) {
	if tag, err := name.NewTag(image); err == nil {
		if img, err := tarball.ImageFromPath(path, &tag); err == nil {
			return img, nil
		}
	}
	img, err := tarball.ImageFromPath(path, nil)
	if err != nil {
		return nil, fmt.Errorf("read %s as a docker-save tarball: %w", path, err)
	}
	return img, nil
}

// imageFromLayout reads an OCI image layout: the manifest whose ref name
// annotation is image (or its tag), or the only manifest of the layout.
func imageFromLayout(dir, image string) (v1.Image, error) {
	idx, err := layout.ImageIndexFromPath(dir)
	if err != nil {
		return nil, fmt.Errorf("read %s as an OCI layout: %w", dir, err)
	}
	im, err := idx.IndexManifest()
	if err != nil {
		return nil, fmt.Errorf("read %s as an OCI layout: %w", dir, err)
	}
	_, tag, _ := parseImageName(image)
	var pick *v1.Descriptor
	for i, d := range im.Manifests {
		ref := d.Annotations["org.opencontainers.image.ref.name"]
		if ref != "" && (ref == image || ref == tag) {
			pick = &im.Manifests[i]
			break
		}
	}
	if pick == nil && len(im.Manifests) == 1 {
		pick = &im.Manifests[0]
	}
	if pick == nil {
		return nil, fmt.Errorf("OCI layout %s holds %d manifests and none is named %s", dir, len(im.Manifests), image)
	}
	if !pick.MediaType.IsImage() {
		return nil, fmt.Errorf("OCI layout %s: %s is a %s, not a single image", dir, pick.Digest, pick.MediaType)
	}
	return idx.Image(pick.Digest)
}

// dockerClient speaks the few calls of the Docker Engine API push needs.
type dockerClient struct {
	http *http.Client
	base string
}

func newDockerClient(host string) (*dockerClient, error) {
	u, err := url.Parse(host)
	if err != nil {
		return nil, err
	}
	switch u.Scheme {
	case "unix":
		sock := u.Path
		tr := &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", sock)
		}}
		return &dockerClient{http: &http.Client{Transport: tr}, base: "http://docker"}, nil
	case "tcp", "http":
		return &dockerClient{http: &http.Client{}, base: "http://" + u.Host}, nil
	}
	return nil, fmt.Errorf("unsupported DOCKER_HOST scheme %q", u.Scheme)
}

func (d *dockerClient) ping(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, d.base+"/_ping", nil)
	if err != nil {
		return err
	}
	resp, err := d.http.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("ping: %s", resp.Status)
	}
	return nil
}

// save streams `docker save <image>` into a temporary file and returns its path.
func (d *dockerClient) save(ctx context.Context, image string) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, d.base+"/images/get?names="+url.QueryEscape(image), nil)
	if err != nil {
		return "", err
	}
	resp, err := d.http.Do(req)
	if err != nil {
		return "", fmt.Errorf("docker save %s: %w", image, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		return "", fmt.Errorf("docker save %s: %s %s", image, resp.Status, strings.TrimSpace(string(b)))
	}
	f, err := os.CreateTemp("", "qdoractl-push-*.tar")
	if err != nil {
		return "", err
	}
	if _, err := io.Copy(f, resp.Body); err != nil {
		f.Close()
		os.Remove(f.Name())
		return "", fmt.Errorf("docker save %s: %w", image, err)
	}
	if err := f.Close(); err != nil {
		os.Remove(f.Name())
		return "", err
	}
	return f.Name(), nil
}
