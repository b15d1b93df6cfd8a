// Command grepd is an example ufop speaking the Dora instance protocol: it
// keeps the lines of its input that contain the word given as its argument.
//
//	POST /handler?cmd=grepd/<word>[&url=<input url>]   input from url, else the body
//	POST /uop {"cmd":"grepd/<word>","src":{"url":...}}  the older UFOP protocol
//	GET  /health                                        200 when serving
//
// It listens on PORT, else PORT_HTTP, else 9100, on the interface named by
// HOST (empty: all interfaces, as a program in a container must; the local
// runtime sets HOST=127.0.0.1). Output is streamed line by line, so memory
// stays bounded whatever the input size (one line is at most 4 MiB).
package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"
)

// maxLine bounds one input line; longer lines fail the request.
const maxLine = 4 << 20

// maxUopBody bounds the JSON body of a /uop request.
const maxUopBody = 64 << 10

func main() {
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	srv := &http.Server{
		Addr:              listenAddr(os.Getenv),
		Handler:           newHandler(inputClient()),
		ReadHeaderTimeout: 10 * time.Second,
		// Keep-alive connections from the router are reused across
		// requests; an idle one is closed after two minutes.
		IdleTimeout: 2 * time.Minute,
	}
	if err := serve(srv, log); err != nil {
		log.Error("grepd", "err", err)
		os.Exit(1)
	}
}

// inputClient returns the client that fetches url= inputs. Its one
// Transport is shared by every request, so connections to the router are
// kept alive and reused: Go's default keeps only 2 idle connections per
// host, and under load every other fetch then opens a new connection and
// leaves the closed one in TIME_WAIT. Inputs are streamed as they are, so
// no gzip is asked for.
func inputClient() *http.Client {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.MaxIdleConns = 1024
	t.MaxIdleConnsPerHost = 256
	t.IdleConnTimeout = 90 * time.Second
	t.DisableCompression = true
	return &http.Client{Transport: t}
}

// serve runs srv until SIGTERM/SIGINT, then shuts it down gracefully.
func serve(srv *http.Server, log *slog.Logger) error {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	ln, err := net.Listen("tcp", srv.Addr)
	if err != nil {
		return err
	}
	log.Info("listening", "addr", ln.Addr().String())
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 4*time.Second)
	defer cancel()
	return srv.Shutdown(sctx)
}

// listenAddr is HOST:PORT, PORT falling back to PORT_HTTP, then 9100.
func listenAddr(getenv func(string) string) string {
	port := getenv("PORT")
	if port == "" {
		port = getenv("PORT_HTTP")
	}
	if port == "" {
		port = "9100"
	}
	return net.JoinHostPort(getenv("HOST"), port)
}

// newHandler serves the Dora and UFOP protocols; client fetches url inputs.
func newHandler(client *http.Client) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /health", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok\n") })
	mux.HandleFunc("POST /handler", func(w http.ResponseWriter, r *http.Request) {
		// Stream: write output while the body is still arriving (HTTP/1
		// otherwise drains the whole body before the first write).
		// Closing the body on return avoids golang/go#68560 (a panic when
		// a full-duplex handler returns without reading the whole body).
		http.NewResponseController(w).EnableFullDuplex()
		defer r.Body.Close()
		word, err := argOf(r.URL.Query().Get("cmd"))
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		in := io.Reader(r.Body)
		if u := r.URL.Query().Get("url"); u != "" {
			body, status, err := fetch(r.Context(), client, u)
			if err != nil {
				http.Error(w, err.Error(), status)
				return
			}
			defer body.Close()
			in = body
		}
		grep(w, in, word)
	})
	mux.HandleFunc("POST /uop", func(w http.ResponseWriter, r *http.Request) {
		var req struct {
			Cmd string `json:"cmd"`
			Src struct {
				URL string `json:"url"`
			} `json:"src"`
		}
		if err := json.NewDecoder(io.LimitReader(r.Body, maxUopBody)).Decode(&req); err != nil {
			http.Error(w, "bad uop request: "+err.Error(), http.StatusBadRequest)
			return
		}
		word, err := argOf(req.Cmd)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		if req.Src.URL == "" {
			http.Error(w, "src.url is required", http.StatusBadRequest)
			return
		}
		body, status, err := fetch(r.Context(), client, req.Src.URL)
		if err != nil {
			http.Error(w, err.Error(), status)
			return
		}
		defer body.Close()
		grep(w, body, word)
	})
	return mux
}

// argOf returns the percent-decoded text after the first "/" of cmd.
func argOf(cmd string) (string, error) {
	_, arg, ok := strings.Cut(cmd, "/")
	if !ok || arg == "" {
		return "", fmt.Errorf("cmd %q: want grepd/<word>", cmd)
	}
	word, err := url.PathUnescape(arg)
	if err != nil {
		return "", fmt.Errorf("cmd %q: %v", cmd, err)
	}
	return word, nil
}

// fetch GETs an input url; on failure it returns the status to answer with.
func fetch(ctx context.Context, client *http.Client, u string) (io.ReadCloser, int, error) {
	pu, err := url.Parse(u)
	if err != nil || (pu.Scheme != "http" && pu.Scheme != "https") || pu.Host == "" {
		return nil, http.StatusBadRequest, fmt.Errorf("url %q: want an http(s) URL", u)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, http.StatusBadRequest, fmt.Errorf("url %q: %v", u, err)
	}
	resp, err := client.Do(req)
	if err != nil {
		return nil, http.StatusBadGateway, fmt.Errorf("fetch input: %v", err)
	}
	if resp.StatusCode != http.StatusOK {
		resp.Body.Close()
		return nil, http.StatusBadGateway, fmt.Errorf("fetch input: status %d", resp.StatusCode)
	}
	return resp.Body, 0, nil
}

// grep writes the lines of in containing word, flushing after each one.
func grep(w http.ResponseWriter, in io.Reader, word string) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	rc := http.NewResponseController(w)
	sc := bufio.NewScanner(in)
	sc.Buffer(make([]byte, 64<<10), maxLine)
	needle := []byte(word)
	newline := []byte{'\n'}
	wrote := false
	for sc.Scan() {
		line := sc.Bytes()
		if !bytes.Contains(line, needle) {
			continue
		}
		wrote = true
		if _, err := w.Write(line); err != nil {
			return
		}
		if _, err := w.Write(newline); err != nil {
			return
		}
		rc.Flush()
	}
	if err := sc.Err(); err != nil {
		if !wrote {
			status := http.StatusBadGateway
			if errors.Is(err, bufio.ErrTooLong) {
				status = http.StatusRequestEntityTooLarge
			}
			http.Error(w, "read input: "+err.Error(), status)
			return
		}
		// Headers are gone: abort the response so the caller sees a
		// truncated body rather than a silently short result.
		panic(http.ErrAbortHandler)
	}
}
