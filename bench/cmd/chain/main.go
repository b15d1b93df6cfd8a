// Command chain is the baseline of the 1 GiB row of the benchmarks: it
// pushes -mib MiB through -hops loopback TCP connections in a row (a source,
// hops-1 relays copying with io.Copy, a sink) and prints MB/s. A 1 GiB
// object through three steps crosses seven sockets (router → step → router,
// three times, then router → client), so `chain -hops 7` on the same
// machine in the same run is what the router's figure is measured against.
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
	flag.Parse()
	mbps, err := run(*hops, *mib<<20)
	if err != nil {
		fmt.Fprintln(os.Stderr, "chain:", err)
		os.Exit(1)
	}
	fmt.Printf("%-28s %d hops, %d MiB  %8.1f MB/s\n", "(d) loopback chain", *hops, *mib, mbps)
	if *kv {
		fmt.Printf("kv mbps=%.1f\n", mbps)
	}
}

func run(hops int, n int64) (float64, error) {
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
			io.Copy(out, in)
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
