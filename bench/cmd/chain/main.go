// Command chain is the baseline of the 1 GiB row of the benchmarks: it
// pushes -mib MiB through -hops loopback TCP connections in a row (a source,
// hops-1 relays copying with io.Copy, a sink) and prints MB/s. A 1 GiB
// object through three steps crosses seven sockets (router → step → router,
// three times, then router → client), so `chain -hops 7` on the same
// machine in the same run is what the router's figure is measured against.
//
// The relays copy with io.Copy, which Go turns into splice(2) between two
// TCP connections: no byte crosses into user space. -copy user makes
// each relay read into and write from a 32 KiB buffer instead, the way a
// program that handles the bytes (a ufop instance, the router) must: the
// second figure says how much of the gap to the first is that copy.
package main

import (
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"time"
)

func main() {
	hops := flag.Int("hops", 7, "loopback connections in a row")
	mib := flag.Int64("mib", 1024, "MiB to push through")
	kv := flag.Bool("kv", false, "print a last machine-readable kv line")
	copyMode := flag.String("copy", "splice", "how relays copy: splice (io.Copy between the sockets) or user (through a buffer in user space)")
	flag.Parse()
	label := "(d) loopback chain"
	switch *copyMode {
	case "splice":
	case "user":
		label = "(d) chain, user-space copies"
	default:
		fmt.Fprintf(os.Stderr, "chain: -copy %q: splice or user\n", *copyMode)
		os.Exit(2)
	}
	mbps, err := run(*hops, *mib<<20, *copyMode == "user")
	if err != nil {
		fmt.Fprintln(os.Stderr, "chain:", err)
		os.Exit(1)
	}
	fmt.Printf("%-28s %d hops, %d MiB  %8.1f MB/s\n", label, *hops, *mib, mbps)
	if *kv {
		fmt.Printf("kv mbps=%.1f\n", mbps)
	}
}

// onlyReader and onlyWriter hide a connection's ReadFrom and WriteTo, so
// that io.CopyBuffer copies through its buffer.
type onlyReader struct{ io.Reader }
type onlyWriter struct{ io.Writer }

func run(hops int, n int64, user bool) (float64, error) {
	if hops < 1 {
		return 0, fmt.Errorf("hops %d: at least 1", hops)
	}
	sink, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer sink.Close()
	got := make(chan int64, 1)
	go func() {
		c, err := sink.Accept()
		if err != nil {
			got <- -1
			return
		}
		defer c.Close()
		m, _ := io.Copy(io.Discard, c)
		got <- m
	}()
	next := sink.Addr().String()
	for range hops - 1 {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return 0, err
		}
		defer ln.Close()
		to := next
		go func() {
			in, err := ln.Accept()
			if err != nil {
				return
			}
			defer in.Close()
			out, err := net.Dial("tcp", to)
			if err != nil {
				return
			}
			if user {
				io.CopyBuffer(onlyWriter{out}, onlyReader{in}, make([]byte, 32<<10))
			} else {
				io.Copy(out, in)
			}
			out.Close()
		}()
		next = ln.Addr().String()
	}
	src, err := net.Dial("tcp", next)
	if err != nil {
		return 0, err
	}
	block := make([]byte, 32<<10)
	start := time.Now()
	for left := n; left > 0; {
		k := min(left, int64(len(block)))
		if _, err := src.Write(block[:k]); err != nil {
			return 0, err
		}
		left -= k
	}
	src.Close()
	m := <-got
	secs := time.Since(start).Seconds()
	if m != n {
		return 0, fmt.Errorf("sink read %d of %d bytes", m, n)
	}
	return float64(n) / 1e6 / secs, nil
}
