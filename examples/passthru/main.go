// Command passthru is an example ufop that copies its input to its output,
// streaming, so benchmarks can measure the platform rather than the program.
//
//	POST /handler?cmd=passthru[&url=<input url>]   input from url, else the body
//	POST /uop {"cmd":"passthru","src":{"url":...}}  the older UFOP protocol
//	GET  /health                                    200 when serving
//
// It listens on PORT, else PORT_HTTP, else 9100, on the interface named by
// HOST (empty: all interfaces, as a program in a container must; the local
// runtime sets HOST=127.0.0.1).
package main

import (
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
	"sync"
	"syscall"
	"time"
)

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
		log.Error("passthru", "err", err)
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
	// Copy buffers, reused across requests.
	bufs := &sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /health", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok\n") })
	mux.HandleFunc("POST /handler", func(w http.ResponseWriter, r *http.Request) {
		// Stream: write output while the body is still arriving (HTTP/1
		// otherwise drains the whole body before the first write).
		// Closing the body on return avoids golang/go#68560 (a panic when
		// a full-duplex handler returns without reading the whole body).
		http.NewResponseController(w).EnableFullDuplex()
		defer r.Body.Close()
		if u := r.URL.Query().Get("url"); u != "" {
			body, ctype, size, status, err := fetch(r.Context(), client, u)
			if err != nil {
				http.Error(w, err.Error(), status)
				return
			}
			defer body.Close()
			copyOut(w, body, ctype, size, bufs)
			return
		}
		copyOut(w, r.Body, r.Header.Get("Content-Type"), r.ContentLength, bufs)
	})
	mux.HandleFunc("POST /uop", func(w http.ResponseWriter, r *http.Request) {
		var req struct {
			Cmd string `json:"cmd"`
			Src struct {
				URL      string `json:"url"`
				MimeType string `json:"mimetype"`
			} `json:"src"`
		}
		if err := json.NewDecoder(io.LimitReader(r.Body, maxUopBody)).Decode(&req); err != nil {
			http.Error(w, "bad uop request: "+err.Error(), http.StatusBadRequest)
			return
		}
		if req.Src.URL == "" {
			http.Error(w, "src.url is required", http.StatusBadRequest)
			return
		}
		body, ctype, size, status, err := fetch(r.Context(), client, req.Src.URL)
		if err != nil {
			http.Error(w, err.Error(), status)
			return
		}
		defer body.Close()
		if req.Src.MimeType != "" {
			ctype = req.Src.MimeType
		}
		copyOut(w, body, ctype, size, bufs)
	})
	return mux
}

// fetch GETs an input url: its body, type and size (-1 unknown); on
// failure it returns the status to answer with.
func fetch(ctx context.Context, client *http.Client, u string) (body io.ReadCloser, ctype string, size int64, status int, err error) {
	pu, err := url.Parse(u)
	if err != nil || (pu.Scheme != "http" && pu.Scheme != "https") || pu.Host == "" {
		return nil, "", -1, http.StatusBadRequest, fmt.Errorf("url %q: want an http(s) URL", u)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, "", -1, http.StatusBadRequest, fmt.Errorf("url %q: %v", u, err)
	}
	resp, err := client.Do(req)
	if err != nil {
		return nil, "", -1, http.StatusBadGateway, fmt.Errorf("fetch input: %v", err)
	}
	if resp.StatusCode != http.StatusOK {
		resp.Body.Close()
		return nil, "", -1, http.StatusBadGateway, fmt.Errorf("fetch input: status %d", resp.StatusCode)
	}
	return resp.Body, resp.Header.Get("Content-Type"), resp.ContentLength, 0, nil
}

// copyOut streams in to w with the given content type. The output is the
// input, so a known input size is the output's Content-Length: the caller
// then gets a plain body instead of a chunked one, and knows a truncated
// one when it sees it. The copy goes through a pooled buffer: handing w's
// ReadFrom a body of known length would write the headers on their own
// and copy through a fresh 32 KiB buffer per request.
func copyOut(w http.ResponseWriter, in io.Reader, ctype string, size int64, bufs *sync.Pool) {
	if ctype == "" {
		ctype = "application/octet-stream"
	}
	w.Header().Set("Content-Type", ctype)
	if size >= 0 {
		w.Header().Set("Content-Length", strconv.FormatInt(size, 10))
	}
	bp := bufs.Get().(*[]byte)
	defer bufs.Put(bp)
	if _, err := io.CopyBuffer(writerOnly{w}, in, *bp); err != nil {
		// Abort so the caller sees a truncated body, not a short success.
		panic(http.ErrAbortHandler)
	}
}

// writerOnly hides the ReadFrom of the writer it wraps.
type writerOnly struct{ io.Writer }
