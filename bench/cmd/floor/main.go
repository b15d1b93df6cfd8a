// Command floor is the least a proxy written in Go does for the benchmark's
// one-step request, so that `make bench` can show how much of the router's
// CPU per request is its own work and how much any Go program pays: a GET
// comes in, the object's bytes (held in memory) go to the instance as the
// body of POST /handler?cmd=<step>, and the instance's answer goes back.
//
// With -mode raw (the default) it uses no HTTP library: per client
// connection one goroutine and one keep-alive connection to the instance; it
// reads up to the end of each request head, writes one prepared request, and
// relays the answer as framed by its Content-Length. It checks nothing else
// and serves nothing else: it is a measuring stick, not a server. With
// -mode fasthttp it does the same through fasthttp's server and HostClient,
// the libraries the router is built on.
//
// With -steps N (raw mode) each request goes through the instance N times,
// every answer's body the next step's input, as the router runs an N-step
// pipeline: its three-step rate ÷ its one-step rate is the most the three/one
// row of issue 11 can reach on this machine for a proxy that does nothing
// else.
//
// It prints "READY <addr>" when it listens and serves until killed.
package main

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"strconv"

	"github.com/valyala/fasthttp"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:0", "address to serve on")
	instance := flag.String("instance", "", "host:port of the instance")
	object := flag.String("object", "", "file whose bytes are the input of every request")
	step := flag.String("step", "passthru", "the instance's cmd")
	mode := flag.String("mode", "raw", "raw (no HTTP library) or fasthttp")
	steps := flag.Int("steps", 1, "times each request goes through the instance (raw mode), each answer the next input")
	flag.Parse()
	if err := run(*listen, *instance, *object, *step, *mode, *steps); err != nil {
		fmt.Fprintln(os.Stderr, "floor:", err)
		os.Exit(1)
	}
}

func run(listen, instance, object, step, mode string, steps int) error {
	if instance == "" || object == "" {
		return errors.New("-instance and -object are required")
	}
	if steps < 1 || steps > 1 && mode != "raw" {
		return fmt.Errorf("-steps %d: at least 1, and more only with -mode raw", steps)
	}
	input, err := os.ReadFile(object)
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return err
	}
	fmt.Println("READY", ln.Addr())
	path := "/handler?cmd=" + url.QueryEscape(step)
	switch mode {
	case "raw":
		return serveRaw(ln, instance, rawRequest(instance, path, input), steps)
	case "fasthttp":
		return serveFasthttp(ln, instance, path, input)
	}
	return fmt.Errorf("unknown -mode %q", mode)
}

// rawRequest is the whole request sent to the instance for every request.
func rawRequest(instance, path string, input []byte) []byte {
	return appendRequest(nil, instance, path, input)
}

// appendRequest appends the request that sends input to the instance.
func appendRequest(dst []byte, instance, path string, input []byte) []byte {
	dst = append(dst, "POST "+path+" HTTP/1.1\r\nHost: "+instance+
		"\r\nContent-Type: application/octet-stream\r\nContent-Length: "...)
	dst = strconv.AppendInt(dst, int64(len(input)), 10)
	dst = append(dst, "\r\n\r\n"...)
	return append(dst, input...)
}

func serveRaw(ln net.Listener, instance string, req []byte, steps int) error {
	for {
		c, err := ln.Accept()
		if err != nil {
			return err
		}
		go func() {
			defer c.Close()
			u, err := net.Dial("tcp", instance)
			if err != nil {
				return
			}
			defer u.Close()
			_ = relayRaw(c, u, req, steps, instance)
		}()
	}
}

var (
	headEnd       = []byte("\r\n\r\n")
	contentLength = []byte("\nContent-Length: ")
	errNoLength   = errors.New("instance answer without Content-Length")
)

// relayRaw serves client c's requests, one at a time, through instance u,
// steps times each: the first step sends req, every later one the body of the
// answer before it, as a request to the path req names.
func relayRaw(c, u io.ReadWriter, req []byte, steps int, instance string) error {
	in := make([]byte, 8<<10)
	out := make([]byte, 64<<10)
	var path string
	if steps > 1 {
		path = string(req[len("POST "):bytes.Index(req, []byte(" HTTP/1.1\r\n"))])
	}
	next := make([]byte, 0, 64<<10)
	n := 0
	for {
		end := bytes.Index(in[:n], headEnd)
		for end < 0 {
			if n == len(in) {
				return errors.New("request head too long")
			}
			m, err := c.Read(in[n:])
			if err != nil {
				return err
			}
			n += m
			end = bytes.Index(in[:n], headEnd)
		}
		n = copy(in, in[end+4:n])
		send := req
		var answer []byte
		for step := 0; step < steps; step++ {
			if step > 0 {
				body := answer[bytes.Index(answer, headEnd)+len(headEnd):]
				next = appendRequest(next[:0], instance, path, body)
				send = next
			}
			if _, err := u.Write(send); err != nil {
				return err
			}
			var err error
			if answer, err = readAnswer(u, out); err != nil {
				return err
			}
		}
		if _, err := c.Write(answer); err != nil {
			return err
		}
	}
}

// readAnswer reads one answer framed by Content-Length into buf.
func readAnswer(u io.Reader, buf []byte) ([]byte, error) {
	n := 0
	for {
		m, err := u.Read(buf[n:])
		if err != nil {
			return nil, err
		}
		n += m
		h := bytes.Index(buf[:n], headEnd)
		if h < 0 {
			if n == len(buf) {
				return nil, errors.New("answer head too long")
			}
			continue
		}
		i := bytes.Index(buf[:h+2], contentLength)
		if i < 0 {
			return nil, errNoLength
		}
		v := buf[i+len(contentLength) : h+2]
		v = v[:bytes.IndexByte(v, '\r')]
		size, err := strconv.Atoi(string(v))
		if err != nil || size < 0 || h+4+size > len(buf) {
			return nil, fmt.Errorf("answer Content-Length %q", v)
		}
		total := h + 4 + size
		for n < total {
			m, err := u.Read(buf[n:])
			if err != nil {
				return nil, err
			}
			n += m
		}
		return buf[:total], nil
	}
}

func serveFasthttp(ln net.Listener, instance, path string, input []byte) error {
	uri := "http://" + instance + path
	client := &fasthttp.HostClient{Addr: instance, MaxConns: 1024}
	srv := &fasthttp.Server{Handler: func(ctx *fasthttp.RequestCtx) {
		req := fasthttp.AcquireRequest()
		resp := fasthttp.AcquireResponse()
		defer fasthttp.ReleaseRequest(req)
		defer fasthttp.ReleaseResponse(resp)
		req.Header.SetMethod(fasthttp.MethodPost)
		req.SetRequestURI(uri)
		req.Header.SetContentType("application/octet-stream")
		req.SetBodyRaw(input)
		if err := client.Do(req, resp); err != nil {
			ctx.Error(err.Error(), fasthttp.StatusBadGateway)
			return
		}
		ctx.SetStatusCode(resp.StatusCode())
		ctx.Response.Header.SetContentTypeBytes(resp.Header.ContentType())
		ctx.SetBody(resp.Body())
	}}
	return srv.Serve(ln)
}
