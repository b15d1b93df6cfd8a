// Command slowpoke is an example ufop for autoscaler tests: it sleeps the
// number of milliseconds given as its argument, then echoes its input, so a
// test can hold requests in flight for a known time.
//
//	POST /handler?cmd=slowpoke/<ms>[&url=<input url>]   input from url, else the body
//	POST /uop {"cmd":"slowpoke/<ms>","src":{"url":...}}  the older UFOP protocol
//	GET  /health                                         200 when serving
//
// The sleep is capped at maxSleep and ends early when the caller goes away.
// It listens on PORT, else PORT_HTTP, else 9100, on the interface named by
// HOST (empty: all interfaces, as a program in a container must; the local
// runtime sets HOST=127.0.0.1).
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// maxSleep bounds the requested sleep.
const maxSleep = 10 * time.Minute

// maxUopBody bounds the JSON body of a /uop request.
const maxUopBody = 64 << 10

func main() {
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	srv := &http.Server{
		Addr:              listenAddr(os.Getenv),
		Handler:           newHandler(inputClient(), log),
		ReadHeaderTimeout: 10 * time.Second,
		// Keep-alive connections from the router are reused across
		// requests; an idle one is closed after two minutes.
		IdleTimeout: 2 * time.Minute,
	}
	if err := serve(srv, log); err != nil {
		log.Error("slowpoke", "err", err)
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

// maxHeldBody bounds the body input read before the sleep; the rest
// streams afterwards.
const maxHeldBody = 1 << 20

// newHandler serves the Dora and UFOP protocols; client fetches url inputs;
// log hears of requests cancelled during their sleep (the caller went away).
func newHandler(client *http.Client, log *slog.Logger) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /health", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok\n") })
	mux.HandleFunc("POST /handler", func(w http.ResponseWriter, r *http.Request) {
		// Stream: write output while the body is still arriving (HTTP/1
		// otherwise drains the whole body before the first write).
		// Closing the body on return avoids golang/go#68560 (a panic when
		// a full-duplex handler returns without reading the whole body).
		http.NewResponseController(w).EnableFullDuplex()
		defer r.Body.Close()
		d, err := sleepOf(r.URL.Query().Get("cmd"))
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		// An input sent as the body is read (up to maxHeldBody) before the
		// sleep: Go's HTTP server notices a caller that went away only
		// once the request body has been read to its end.
		in := io.Reader(r.Body)
		if r.URL.Query().Get("url") == "" {
			head, err := io.ReadAll(io.LimitReader(r.Body, maxHeldBody))
			if err != nil {
				http.Error(w, err.Error(), http.StatusBadRequest)
				return
			}
			in = io.MultiReader(bytes.NewReader(head), r.Body)
		}
		if !sleep(r.Context(), d) {
			log.Info("request cancelled", "cmd", r.URL.Query().Get("cmd"))
			return
		}
		if u := r.URL.Query().Get("url"); u != "" {
			body, status, err := fetch(r.Context(), client, u)
			if err != nil {
				http.Error(w, err.Error(), status)
				return
			}
			defer body.Close()
			copyOut(w, body)
			return
		}
		copyOut(w, in)
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
		d, err := sleepOf(req.Cmd)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		if req.Src.URL == "" {
			http.Error(w, "src.url is required", http.StatusBadRequest)
			return
		}
		if !sleep(r.Context(), d) {
			log.Info("request cancelled", "cmd", req.Cmd)
			return
		}
		body, status, err := fetch(r.Context(), client, req.Src.URL)
		if err != nil {
			http.Error(w, err.Error(), status)
			return
		}
		defer body.Close()
		copyOut(w, body)
	})
	return mux
}

// sleepOf reads the milliseconds after the first "/" of cmd.
func sleepOf(cmd string) (time.Duration, error) {
	_, arg, ok := strings.Cut(cmd, "/")
	if !ok || arg == "" {
		return 0, fmt.Errorf("cmd %q: want slowpoke/<milliseconds>", cmd)
	}
	ms, err := strconv.ParseInt(arg, 10, 64)
	if err != nil || ms < 0 {
		return 0, fmt.Errorf("cmd %q: milliseconds must be a non-negative integer", cmd)
	}
	d := time.Duration(ms) * time.Millisecond
	if ms > int64(maxSleep/time.Millisecond) {
		return 0, fmt.Errorf("cmd %q: at most %d milliseconds", cmd, maxSleep.Milliseconds())
	}
	return d, nil
}

// sleep waits d or until ctx ends; it reports whether the full wait happened.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
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

// copyOut streams in to w.
func copyOut(w http.ResponseWriter, in io.Reader) {
	w.Header().Set("Content-Type", "application/octet-stream")
	if _, err := io.Copy(w, in); err != nil {
		panic(http.ErrAbortHandler)
	}
}
