package cmd

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/schollz/progressbar/v3"
	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/doraproject/dora/admin/client"
	"github.com/doraproject/dora/internal/api"
)

// progressThreshold: uploads larger than this show a progress bar on a terminal.
const progressThreshold = 4 << 20

func (a *app) bucketCmd() *cobra.Command {
	c := &cobra.Command{
		Use:   "bucket",
		Short: "Create and list buckets, bind domains",
		Example: `  qdoractl bucket create photos --private --domain img.example.com
  qdoractl bucket list
  qdoractl bucket domain photos cdn.example.com`,
	}
	var spec client.BucketSpec
	create := &cobra.Command{
		Use:   "create <name> [--private] [--domain d]... [--mirror url]",
		Short: "Create a bucket (served at <name>.<router domain> and at its domains)",
		Example: `  qdoractl bucket create photos
  qdoractl bucket create secret --private
  qdoractl bucket create mirrored --mirror https://origin.example.com/`,
		Args: cobra.ExactArgs(1),
		RunE: a.withClient(func(cmd *cobra.Command, args []string, cl *client.Client) error {
			spec.Name = args[0]
			b, err := cl.CreateBucket(cmd.Context(), spec)
			if err != nil {
				return err
			}
			return a.show(b, func() error {
				fmt.Fprintf(a.stdout, "Bucket %s created (private: %v, domains: %s, mirror: %s)\n",
					b.Name, b.Private, orDash(strings.Join(b.Domains, " ")), orDash(b.Mirror))
				return nil
			})
		}),
	}
	create.Flags().BoolVar(&spec.Private, "private", false, "downloads need a token")
	create.Flags().StringArrayVar(&spec.Domains, "domain", nil, "extra host name bound to the bucket (repeatable)")
	create.Flags().StringVar(&spec.Mirror, "mirror", "", "http(s) URL prefix to fetch missing objects from")
	list := &cobra.Command{
		Use:     "list",
		Short:   "List your buckets",
		Example: `  qdoractl bucket list`,
		Args:    cobra.NoArgs,
		RunE: a.withClient(func(cmd *cobra.Command, args []string, cl *client.Client) error {
			bs, err := cl.ListBuckets(cmd.Context())
			if err != nil {
				return err
			}
			return a.show(bs, func() error {
				rows := make([][]string, 0, len(bs))
				for _, b := range bs {
					rows = append(rows, []string{b.Name, strconv.FormatBool(b.Private),
						orDash(strings.Join(b.Domains, ",")), orDash(b.Mirror), fmtTime(b.Created)})
				}
				return a.table([]string{"Name", "Private", "Domains", "Mirror", "Created"}, rows)
			})
		}),
	}
	domain := &cobra.Command{
		Use:     "domain <name> <domain>",
		Short:   "Bind a host name to a bucket",
		Example: `  qdoractl bucket domain photos img.example.com`,
		Args:    cobra.ExactArgs(2),
		RunE: a.withClient(func(cmd *cobra.Command, args []string, cl *client.Client) error {
			b, err := cl.AddDomain(cmd.Context(), args[0], args[1])
			if err != nil {
				return err
			}
			return a.show(b, func() error {
				fmt.Fprintf(a.stdout, "Bucket %s domains: %s\n", b.Name, strings.Join(b.Domains, " "))
				return nil
			})
		}),
	}
	rm := &cobra.Command{
		Use:     "rm <name>",
		Short:   "Delete an empty bucket",
		Example: `  qdoractl bucket rm photos`,
		Args:    cobra.ExactArgs(1),
		RunE: a.withClient(func(cmd *cobra.Command, args []string, cl *client.Client) error {
			if err := cl.DeleteBucket(cmd.Context(), args[0]); err != nil {
				return err
			}
			fmt.Fprintf(a.stdout, "Bucket %s deleted\n", args[0])
			return nil
		}),
	}
	c.AddCommand(create, list, domain, rm)
	return c
}

// isTerminal reports whether w is a terminal.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

func (a *app) putCmd() *cobra.Command {
	var mime string
	var insertOnly bool
	c := &cobra.Command{
		Use:   "put <bucket> <key> <file>",
		Short: "Upload a file (streamed; '-' reads standard input)",
		Example: `  qdoractl put photos cat.jpg ./cat.jpg
  qdoractl put logs 2026/01/app.log ./app.log --mime text/plain
  tar c . | qdoractl put backups site.tar -`,
		Args: cobra.ExactArgs(3),
		RunE: a.withClient(func(cmd *cobra.Command, args []string, cl *client.Client) error {
			bucket, key, file := args[0], args[1], args[2]
			var r io.Reader
			size := int64(-1)
			if file == "-" {
				r = cmd.InOrStdin()
			} else {
				// A file that is missing or not a file is a runtime error
				// (the command line was right): no usage.
				f, err := os.Open(file)
				if errors.Is(err, fs.ErrNotExist) {
					return fmt.Errorf("%s does not exist", file)
				} else if err != nil {
					return err
				}
				defer f.Close()
				st, err := f.Stat()
				if err != nil {
					return err
				}
				if st.IsDir() {
					return fmt.Errorf("%s is a directory: put uploads one file", file)
				}
				if !st.Mode().IsRegular() {
					return fmt.Errorf("%s is not a regular file (use - to upload standard input)", file)
				}
				r, size = f, st.Size()
			}
			var opts []client.PutOption
			if insertOnly {
				opts = append(opts, client.InsertOnly())
			}
			if size > progressThreshold && isTerminal(a.stderr) {
				bar := progressbar.NewOptions64(size,
					progressbar.OptionSetWriter(a.stderr),
					progressbar.OptionSetDescription(key),
					progressbar.OptionShowBytes(true),
					progressbar.OptionThrottle(100*time.Millisecond),
					progressbar.OptionOnCompletion(func() { fmt.Fprintln(a.stderr) }),
				)
				opts = append(opts, client.WithProgress(func(n int64) { _ = bar.Set64(n) }))
			}
			obj, err := cl.PutObject(cmd.Context(), bucket, key, r, size, mime, opts...)
			if err != nil {
				return err
			}
			return a.show(obj, func() error {
				fmt.Fprintf(a.stdout, "Put %s/%s: %d bytes, hash %s, %s\n", obj.Bucket, obj.Key, obj.Size, obj.ETag, obj.MimeType)
				return nil
			})
		}),
	}
	c.Flags().StringVar(&mime, "mime", "", "content type (detected when absent)")
	c.Flags().BoolVar(&insertOnly, "insert-only", false, "fail if the key exists")
	return c
}

func (a *app) lsCmd() *cobra.Command {
	var limit int
	c := &cobra.Command{
		Use:   "ls <bucket> [prefix]",
		Short: "List a bucket's objects, sorted by key",
		Example: `  qdoractl ls photos
  qdoractl ls photos 2026/ --limit 100`,
		Args: cobra.RangeArgs(1, 2),
		RunE: a.withClient(func(cmd *cobra.Command, args []string, cl *client.Client) error {
			prefix := ""
			if len(args) == 2 {
				prefix = args[1]
			}
			objs, err := cl.ListObjects(cmd.Context(), args[0], prefix, limit)
			if err != nil {
				return err
			}
			return a.show(objs, func() error {
				rows := make([][]string, 0, len(objs))
				for _, o := range objs {
					rows = append(rows, objectRow(o))
				}
				return a.table([]string{"Key", "Size", "Hash", "MimeType", "PutTime"}, rows)
			})
		}),
	}
	c.Flags().IntVar(&limit, "limit", 0, "at most this many objects (0: server default)")
	return c
}

func objectRow(o api.Object) []string {
	return []string{o.Key, strconv.FormatInt(o.Size, 10), o.ETag, o.MimeType, fmtTime(o.Modified)}
}

func (a *app) statCmd() *cobra.Command {
	return &cobra.Command{
		Use:     "stat <bucket> <key>",
		Short:   "Describe an object",
		Example: `  qdoractl stat photos cat.jpg`,
		Args:    cobra.ExactArgs(2),
		RunE: a.withClient(func(cmd *cobra.Command, args []string, cl *client.Client) error {
			o, err := cl.StatObject(cmd.Context(), args[0], args[1])
			if err != nil {
				return err
			}
			return a.show(o, func() error {
				fmt.Fprintf(a.stdout, "Bucket: %s\nKey: %s\nSize: %d\nHash: %s\nMimeType: %s\nPutTime: %s\n",
					o.Bucket, o.Key, o.Size, o.ETag, o.MimeType, fmtTime(o.Modified))
				return nil
			})
		}),
	}
}

func (a *app) getCmd() *cobra.Command {
	var out string
	c := &cobra.Command{
		Use:   "get <bucket> <key> [-o file]",
		Short: "Download an object to standard output or a file",
		Example: `  qdoractl get photos cat.jpg -o cat.jpg
  qdoractl get logs app.log | less`,
		Args: cobra.ExactArgs(2),
		RunE: a.withClient(func(cmd *cobra.Command, args []string, cl *client.Client) error {
			rc, _, err := cl.GetObject(cmd.Context(), args[0], args[1])
			if err != nil {
				return err
			}
			defer rc.Close()
			if out == "" || out == "-" {
				_, err := io.Copy(a.stdout, rc)
				return err
			}
			return writeFileAtomic(out, rc)
		}),
	}
	c.Flags().StringVarP(&out, "output", "o", "", "file to write (default: standard output)")
	return c
}

// writeFileAtomic streams r to a temporary file beside path, then renames it.
func writeFileAtomic(path string, r io.Reader) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := io.Copy(tmp, r); err != nil {
		tmp.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := tmp.Chmod(0o644); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}

func (a *app) rmCmd() *cobra.Command {
	return &cobra.Command{
		Use:     "rm <bucket> <key>",
		Short:   "Delete an object",
		Example: `  qdoractl rm photos cat.jpg`,
		Args:    cobra.ExactArgs(2),
		RunE: a.withClient(func(cmd *cobra.Command, args []string, cl *client.Client) error {
			if err := cl.DeleteObject(cmd.Context(), args[0], args[1]); err != nil {
				return err
			}
			fmt.Fprintf(a.stdout, "Deleted %s/%s\n", args[0], args[1])
			return nil
		}),
	}
}
