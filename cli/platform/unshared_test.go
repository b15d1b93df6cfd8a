package platform

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"
)

func TestUnshared(t *testing.T) {
	got := unshared(
		backendUse{"store", "bolt://./.dora/meta.db"},
		backendUse{"objects", "s3://bkt?endpoint=http://127.0.0.1:8333"},
		backendUse{"queue", "redis://u:s3cret@127.0.0.1:6379/0"},
		backendUse{"discovery", "MEMORY://"},
		backendUse{"objects", "file://./.dora/objects"},
		backendUse{"load", "redis://127.0.0.1:6379"},
		backendUse{"runtime", "local://"},
		backendUse{"store", "consul://127.0.0.1:8500/dora"},
	)
	want := []string{
		"--store=bolt://./.dora/meta.db (a file locked by one process)",
		"--discovery=MEMORY:// (one process's memory)",
		"--objects=file://./.dora/objects (one host's directory)",
		"--runtime=local:// (this process's children)",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("unshared = %q, want %q", got, want)
	}

	var buf bytes.Buffer
	log := slog.New(slog.NewTextHandler(&buf, nil))
	warnUnshared(log, "router", backendUse{"store", "consul://127.0.0.1:8500"}, backendUse{"objects", "s3://bkt"})
	if buf.Len() != 0 {
		t.Fatalf("all shared, yet: %s", buf.String())
	}
	warnUnshared(log, "router", backendUse{"store", "bolt://x.db"}, backendUse{"objects", "file:///srv/o"}, backendUse{"load", "memory://"})
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 1 || !strings.Contains(lines[0], "level=WARN") || !strings.Contains(lines[0], "cannot be shared") ||
		!strings.Contains(lines[0], "--store=bolt://x.db") || !strings.Contains(lines[0], "--objects=file:///srv/o") || !strings.Contains(lines[0], "--load=memory://") {
		t.Fatalf("want one warning naming the three backends, got %q", buf.String())
	}
}
