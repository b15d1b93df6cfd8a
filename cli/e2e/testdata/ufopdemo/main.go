// Command ufopdemo is shaped like Qiniu's public Go demo (ufop-golang-demo):
// POST /handler?cmd=<step>&url=<input> (and the older POST /uop), GET /health, listening on
// $PORT_HTTP or the fixed port 9100 (it ignores $PORT). It answers its
// input in upper case; the step "<ufop>/eat/<MiB>" first allocates and
// touches that many MiB (to exceed a memory limit). With UFOPDEMO_EXIT=<n>
// set it exits at once with status n. Built static by the
// e2e tests and packed into an image.
package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
)

func main() {
	if code := os.Getenv("UFOPDEMO_EXIT"); code != "" {
		fmt.Fprintln(os.Stderr, "ufopdemo: told to exit at once")
		n, _ := strconv.Atoi(code)
		os.Exit(n)
	}
	port := os.Getenv("PORT_HTTP")
	if port == "" {
		port = "9100"
	}
	var hold [][]byte
	http.HandleFunc("/health", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") })
	http.HandleFunc("/handler", func(w http.ResponseWriter, r *http.Request) {
		cmd := r.URL.Query().Get("cmd")
		if f := strings.Split(cmd, "/"); len(f) == 3 && f[1] == "eat" {
			n, _ := strconv.Atoi(f[2])
			for i := 0; i < n; i++ {
				b := bytes.Repeat([]byte{1}, 1<<20)
				hold = append(hold, b)
			}
			fmt.Fprintf(os.Stderr, "ate %d MiB\n", n)
		}
		var in io.Reader = r.Body
		if u := r.URL.Query().Get("url"); u != "" {
			resp, err := http.Get(u)
			if err != nil {
				http.Error(w, "fetch input: "+err.Error(), http.StatusBadGateway)
				return
			}
			defer resp.Body.Close()
			in = resp.Body
		}
		b, err := io.ReadAll(in)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		w.Write(bytes.ToUpper(b))
	})
	// The older UFOP protocol, which program packages speak by default.
	http.HandleFunc("/uop", func(w http.ResponseWriter, r *http.Request) {
		var req struct {
			Src struct {
				URL string `json:"url"`
			} `json:"src"`
		}
		if err := json.NewDecoder(io.LimitReader(r.Body, 64<<10)).Decode(&req); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		resp, err := http.Get(req.Src.URL)
		if err != nil {
			http.Error(w, "fetch input: "+err.Error(), http.StatusBadGateway)
			return
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		w.Write(bytes.ToUpper(b))
	})
	fmt.Println("ufopdemo listening on :" + port)
	if err := http.ListenAndServe(":"+port, nil); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
