// Command ufopdemo is shaped like Qiniu's public Go demo (ufop-golang-demo):
// POST /handler?cmd=<step>&url=<input>, GET /health, listening on
// $PORT_HTTP or the fixed port 9100 (it ignores $PORT). It answers its
// input in upper case; the step "<ufop>/eat/<MiB>" first allocates and
// touches that many MiB (to exceed a memory limit). Built static by the
// e2e tests and packed into an image.
package main

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
)

func main() {
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
	fmt.Println("ufopdemo listening on :" + port)
	if err := http.ListenAndServe(":"+port, nil); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
