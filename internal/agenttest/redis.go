package agenttest

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// Redis is a running redis-server on loopback without persistence (no RDB
// snapshots, no AOF): Stop followed by Start comes back empty.
type Redis struct {
	// Addr is "127.0.0.1:<port>".
	Addr string
	// Port is the TCP port.
	Port int
	// Dir is the server's working directory.
	Dir string
	// LogPath is the file holding the server's output across restarts.
	LogPath string

	outage
}

// StartRedis starts redis-server and waits until it answers PING. It is
// stopped when the test ends.
func StartRedis(t testing.TB) *Redis {
	t.Helper()
	bin := findBinary(t, "redis-server", "DORA_REDIS_SERVER", false)
	dir := t.TempDir()
	r := &Redis{Port: FreePort(t), Dir: dir, LogPath: filepath.Join(dir, "redis.log")}
	r.Addr = fmt.Sprintf("127.0.0.1:%d", r.Port)
	r.p = &process{
		t:    t,
		name: "redis-server " + r.Addr,
		bin:  bin,
		args: []string{
			"--port", itoa(r.Port), "--bind", "127.0.0.1",
			"--save", "", "--appendonly", "no",
			"--dir", dir, "--daemonize", "no", "--logfile", "",
		},
		dir:     dir,
		logPath: r.LogPath,
		ready:   func(ctx context.Context) error { return redisReady(ctx, r.Addr) },
		timeout: RedisReadyTimeout,
	}
	r.p.register()
	return r
}

// redisReady sends PING in RESP and expects +PONG.
func redisReady(ctx context.Context, addr string) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return err
	}
	defer conn.Close()
	if dl, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(dl)
	}
	if _, err := conn.Write([]byte("PING\r\n")); err != nil {
		return err
	}
	line, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil {
		return err
	}
	if strings.TrimSpace(line) != "+PONG" {
		return fmt.Errorf("PING answered %q: %w", strings.TrimSpace(line), errNotReady)
	}
	return nil
}
