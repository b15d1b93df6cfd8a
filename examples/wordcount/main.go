// Command wordcount is an example ufop speaking the older UFOP instance
// protocol: it counts the lines, words and bytes of its input.
//
//	POST /uop {"cmd":"wordcount","src":{"url":...,"mimetype":...,"fsize":...,"bucket":...,"key":...}}
//	     → {"lines":n,"words":n,"bytes":n}
//	GET  /health → 200 when serving
//
// Words are runs of non-space characters (as wc counts them); lines are
// newline characters. The input is read as a stream, so any size works.
// It listens on PORT, else PORT_HTTP, else 9100, on the interface named by
// HOST (empty: all interfaces, as a program in a container must; the local
// runtime sets HOST=127.0.0.1).
package main

import (
	"bufio"
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
	"syscall"
	"time"
	"unicode"
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
		log.Error("wordcount", "err", err)
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

// uopRequest is the older protocol's request body.
type uopRequest struct {
	Cmd string `json:"cmd"`
	Src struct {
		URL      string `json:"url"`
		MimeType string `json:"mimetype"`
		Fsize    int64  `json:"fsize"`
		Bucket   string `json:"bucket"`
		Key      string `json:"key"`
	} `json:"src"`
}

// Counts is the reply.
type Counts struct {
	Lines int64 `json:"lines"`
	Words int64 `json:"words"`
	Bytes int64 `json:"bytes"`
}

// newHandler serves the UFOP protocol; client fetches src.url.
func newHandler(client *http.Client) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /health", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok\n") })
	mux.HandleFunc("POST /uop", func(w http.ResponseWriter, r *http.Request) {
		var req uopRequest
		if err := json.NewDecoder(io.LimitReader(r.Body, maxUopBody)).Decode(&req); err != nil {
			httpError(w, "bad uop request: "+err.Error(), http.StatusBadRequest)
			return
		}
		if req.Src.URL == "" {
			httpError(w, "src.url is required", http.StatusBadRequest)
			return
		}
		body, status, err := fetch(r.Context(), client, req.Src.URL)
		if err != nil {
			httpError(w, err.Error(), status)
			return
		}
		defer body.Close()
		c, err := count(body)
		if err != nil {
			httpError(w, "read input: "+err.Error(), http.StatusBadGateway)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(c)
	})
	return mux
}

// httpError answers with the platform's JSON error body.
func httpError(w http.ResponseWriter, msg string, status int) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(map[string]string{"error": msg})
}

// count reads r to the end, counting as wc does.
func count(r io.Reader) (Counts, error) {
	var c Counts
	br := bufio.NewReaderSize(r, 64<<10)
	inWord := false
	for {
		ru, size, err := br.ReadRune()
		if err == io.EOF {
			return c, nil
		}
		if err != nil {
			return c, err
		}
		c.Bytes += int64(size)
		if ru == '\n' {
			c.Lines++
		}
		if unicode.IsSpace(ru) {
			inWord = false
		} else if !inWord {
			inWord = true
			c.Words++
		}
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
