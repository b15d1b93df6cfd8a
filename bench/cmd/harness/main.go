// Command harness runs a Dora router in-process on embedded parts for the
// benchmarks: a bolt store and a local-directory origin in a data dir, a
// pool fed directly with the instance addresses given on the command line
// (no runtime, no discovery). It registers account "bench", the public
// bucket "bench" (served at bench.localhost), the public ufop named by
// -ufop (release v1, Dora protocol) and creates the objects "small" (-small
// bytes) and "big" (-big-mib MiB, written as a stream), then prints
// "READY <addr>" and serves until interrupted.
package main

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	_ "net/http/pprof" // the -debug listener's /debug/pprof/ (profiles, runtime traces)
	"os"
	"os/signal"
	"path/filepath"
	"runtime/pprof"
	"strings"
	"syscall"
	"time"

	dora "github.com/doraproject/dora"
	"github.com/doraproject/dora/internal/gcfloor"
	"github.com/doraproject/dora/internal/store"
	"github.com/doraproject/dora/internal/store/bolt"
	"github.com/doraproject/dora/pool"
	"github.com/doraproject/dora/router"
	"github.com/doraproject/dora/router/origin"
	"github.com/doraproject/dora/router/origin/local"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:0", "router listen address")
	dir := flag.String("dir", "", "data dir (default: a new temp dir, removed at exit)")
	instances := flag.String("instances", "", "comma-separated host:port of the ufop's instances")
	ufop := flag.String("ufop", "passthru", "ufop name the instances serve")
	small := flag.Int("small", 4096, "size of object \"small\" in bytes")
	bigMiB := flag.Int("big-mib", 0, "size of object \"big\" in MiB (0: none)")
	verbose := flag.Bool("v", false, "access log to stderr")
	cpuprofile := flag.String("cpuprofile", "", "write a CPU profile of the whole run to this file")
	debug := flag.String("debug", "", "serve /debug/pprof/ on this address (a runtime trace of a run: /debug/pprof/trace?seconds=N)")
	gcFloor := flag.Uint64("gc-floor", gcfloor.RouterMin, "floor under the GC's heap goal in bytes, as dorad router's --gc-floor (0: Go's default pacing; GOGC in the environment also turns it off)")
	flag.Parse()
	defer gcfloor.Start(*gcFloor)()
	if *debug != "" {
		ln, err := net.Listen("tcp", *debug)
		if err != nil {
			fmt.Fprintln(os.Stderr, "harness:", err)
			os.Exit(1)
		}
		go func() { _ = http.Serve(ln, nil) }()
	}
	if *cpuprofile != "" {
		f, err := os.Create(*cpuprofile)
		if err == nil {
			err = pprof.StartCPUProfile(f)
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, "harness:", err)
			os.Exit(1)
		}
		defer pprof.StopCPUProfile()
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, *listen, *dir, *instances, *ufop, *small, *bigMiB, *verbose); err != nil {
		fmt.Fprintln(os.Stderr, "harness:", err)
		pprof.StopCPUProfile()
		os.Exit(1)
	}
}

func run(ctx context.Context, listen, dir, instances, ufop string, small, bigMiB int, verbose bool) error {
	if dir == "" {
		d, err := os.MkdirTemp("", "dora-bench-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(d)
		dir = d
	}
	st, err := bolt.Open(filepath.Join(dir, "meta.db"))
	if err != nil {
		return err
	}
	defer st.Close()
	if err := seed(ctx, st, ufop); err != nil {
		return err
	}
	objs, err := local.New(filepath.Join(dir, "objects"))
	if err != nil {
		return err
	}
	defer objs.Close()
	if err := ensure(ctx, objs, "small", int64(small)); err != nil {
		return err
	}
	if bigMiB > 0 {
		if err := ensure(ctx, objs, "big", int64(bigMiB)<<20); err != nil {
			return err
		}
	}
	p := pool.New(pool.Options{})
	var insts []pool.Instance
	for i, a := range strings.Split(instances, ",") {
		if a = strings.TrimSpace(a); a != "" {
			insts = append(insts, pool.Instance{ID: fmt.Sprintf("%s-%d", ufop, i), Ufop: ufop, Version: "v1", Region: dora.DefaultRegion, Addr: a},
				pool.Instance{ID: fmt.Sprintf("%s-%d", CachedUfop, i), Ufop: CachedUfop, Version: "v1", Region: dora.DefaultRegion, Addr: a})
		}
	}
	if len(insts) == 0 {
		return errors.New("-instances is required")
	}
	p.Update(insts)
	log := slog.New(slog.DiscardHandler)
	if verbose {
		log = slog.New(slog.NewTextHandler(os.Stderr, nil))
	}
	r, err := router.New(router.Config{Store: st, Objects: objs, Writer: objs, Pool: p, Logger: log})
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return err
	}
	errc := make(chan error, 2)
	go func() { errc <- r.Run(ctx) }()
	go func() { errc <- r.Serve(ctx, ln) }()
	select {
	case <-r.Ready():
	case <-time.After(10 * time.Second):
		return errors.New("router metadata not ready")
	}
	fmt.Printf("READY %s\n", ln.Addr())
	<-ctx.Done()
	<-errc
	<-errc
	return nil
}

// CachedUfop names the ufop whose results the router caches (the same
// instances as -ufop).
const CachedUfop = "cached"

// seed registers the bench account, bucket, ufop and release.
func seed(ctx context.Context, st store.Store, ufop string) error {
	acct := dora.Account{ID: "1", Name: "bench", AccessKey: "AK-bench", SecretKey: "SK-bench", Created: time.Now()}
	puts := map[string]any{
		store.AccountKey(acct.ID):    acct,
		store.BucketKey("bench"):     dora.Bucket{Name: "bench", Owner: acct.ID, Created: time.Now()},
		store.UfopKey(ufop):          dora.Ufop{Name: ufop, Owner: acct.ID, Mode: dora.ModePublic, ActiveVersion: "v1"},
		store.ReleaseKey(ufop, "v1"): dora.Release{Ufop: ufop, Version: "v1", Protocol: dora.ProtocolDora},
		// The same program under another name, its results cached: the
		// cache-hit row.
		store.UfopKey(CachedUfop): dora.Ufop{Name: CachedUfop, Owner: acct.ID, Mode: dora.ModePublic, ActiveVersion: "v1"},
		store.ReleaseKey(CachedUfop, "v1"): dora.Release{Ufop: CachedUfop, Version: "v1", Protocol: dora.ProtocolDora,
			Cache: &dora.CachePolicy{Enabled: true}},
	}
	for k, v := range puts {
		b, err := json.Marshal(v)
		if err != nil {
			return err
		}
		if _, err := st.Put(ctx, k, b); err != nil {
			return fmt.Errorf("seed %s: %w", k, err)
		}
	}
	_, err := st.Put(ctx, store.AccessKeyKey(acct.AccessKey), []byte(acct.ID))
	return err
}

// ensure writes object key of size bytes (random, streamed) unless it is
// already there with that size.
func ensure(ctx context.Context, objs *local.Dir, key string, size int64) error {
	if o, err := objs.Stat(ctx, "bench", key); err == nil && o.Size == size {
		return nil
	}
	block := make([]byte, 1<<20)
	if _, err := rand.Read(block); err != nil {
		return err
	}
	_, err := objs.Put(ctx, "bench", key, io.LimitReader(&repeat{b: block}, size), origin.PutOptions{MimeType: "application/octet-stream"})
	return err
}

// repeat reads a block over and over.
type repeat struct {
	b   []byte
	off int
}

func (r *repeat) Read(p []byte) (int, error) {
	n := 0
	for n < len(p) {
		m := copy(p[n:], r.b[r.off:])
		n += m
		r.off = (r.off + m) % len(r.b)
	}
	return n, nil
}
