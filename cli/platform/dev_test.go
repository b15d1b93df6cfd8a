package platform

import (
	"context"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

func TestResolveRunAs(t *testing.T) {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	root := os.Geteuid() == 0
	tests := []struct {
		spec    string
		wantUid int // -1: nil (the platform's own user)
		wantErr bool
	}{
		{spec: RunAsSelf, wantUid: -1},
		{spec: "no-such-user-here", wantErr: true},
		{spec: "", wantUid: map[bool]int{true: 65534, false: -1}[root]},
		{spec: "65534", wantUid: 65534, wantErr: !root},
		{spec: "65534:65534", wantUid: 65534, wantErr: !root},
	}
	for _, tt := range tests {
		u, err := resolveRunAs(tt.spec, log)
		if tt.wantErr {
			if err == nil {
				t.Errorf("resolveRunAs(%q) = %v, want an error", tt.spec, u)
			}
			continue
		}
		if err != nil {
			t.Errorf("resolveRunAs(%q): %v", tt.spec, err)
			continue
		}
		got := -1
		if u != nil {
			got = int(u.Uid)
		}
		if got != tt.wantUid {
			t.Errorf("resolveRunAs(%q) = uid %d, want %d", tt.spec, got, tt.wantUid)
		}
	}
}

// TestDevDataDirModes starts the embedded platform as root and checks the
// data directory's modes and owners (docs/security.md), then that a data
// directory the run-as user cannot reach is refused with a clear error.
func TestDevDataDirModes(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("the run-as user is the platform's own when not root")
	}
	parent, err := os.MkdirTemp("", "dev-datadir-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(parent) })
	os.Chmod(parent, 0o711)
	data := filepath.Join(parent, "data")
	cfg := DevConfig{DataDir: data, AdminAddr: "127.0.0.1:0", RouterAddr: "127.0.0.1:0",
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}
	d, err := StartDev(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	d.Close()
	want := map[string]struct {
		mode os.FileMode
		uid  uint32
	}{
		"":               {0o711, 0},
		CredentialsFile:  {0o600, 0},
		"meta.db":        {0o600, 0},
		"pfop.db":        {0o600, 0},
		"objects":        {0o700, 0},
		"registry":       {0o700, 0},
		"builds":         {0o711, 0},
		"instances":      {0o711, 0},
		"cache/go-build": {0o700, 65534},
	}
	for name, w := range want {
		fi, err := os.Stat(filepath.Join(data, name))
		if err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		if fi.Mode().Perm() != w.mode || fi.Sys().(*syscall.Stat_t).Uid != w.uid {
			t.Errorf("%s: mode %04o owner %d, want %04o owner %d", name, fi.Mode().Perm(), fi.Sys().(*syscall.Stat_t).Uid, w.mode, w.uid)
		}
	}

	// A data dir below a 0700 directory: nobody could not reach its builds.
	closed := t.TempDir()
	cfg.DataDir = filepath.Join(closed, "data")
	if d, err := StartDev(context.Background(), cfg); err == nil {
		d.Close()
		t.Fatal("started with a data dir the run-as user cannot reach")
	} else if !strings.Contains(err.Error(), "nobody") || !strings.Contains(err.Error(), "run-as") {
		t.Fatalf("error does not explain itself: %v", err)
	}
	cfg.RunAs = RunAsSelf
	d, err = StartDev(context.Background(), cfg)
	if err != nil {
		t.Fatalf("run-as self: %v", err)
	}
	d.Close()
}
