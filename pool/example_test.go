package pool_test

import (
	"errors"
	"fmt"
	"time"

	"github.com/doraproject/dora/pool"
)

// The router's use of a pool for one pipeline step: pick, count the request
// in flight, report whether the connection was made, and retry once on
// another instance when the connect failed.
func Example() {
	p := pool.New(pool.Options{})
	p.Update([]pool.Instance{
		{ID: "d1-1", Ufop: "grepd", Version: "v1", Region: "z0", Addr: "127.0.0.1:9101"},
		{ID: "d1-2", Ufop: "grepd", Version: "v1", Region: "z0", Addr: "127.0.0.1:9102"},
	})
	k := pool.Key{Ufop: "grepd", Version: "v1", Region: "z0"}
	errConnect := errors.New("connection refused")
	call := func(h *pool.Host) error { // stands for the HTTP call
		if h.Instance().Addr == "127.0.0.1:9101" {
			return errConnect
		}
		return nil
	}

	var avoid *pool.Host
	for attempt := 0; attempt < 2; attempt++ {
		now := time.Now()
		h := p.Pick(k, avoid, now)
		if h == nil {
			fmt.Println("503: no instance available")
			return
		}
		h.Begin()
		err := call(h)
		h.End()
		if errors.Is(err, errConnect) {
			h.ConnectFailed(now)
			avoid = h
			continue
		}
		h.Succeeded()
		fmt.Println("served by", h.Instance().Addr)
		return
	}
	// Output: served by 127.0.0.1:9102
}
