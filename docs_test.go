package dora

import (
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// TestDocsReferenceOnlyFilesInTheRepo: every relative Markdown link and
// every backticked repository path (docs/…, examples/…, scripts/…, …) in
// README.md and docs/*.md names a file or directory that exists.
func TestDocsReferenceOnlyFilesInTheRepo(t *testing.T) {
	files, _ := filepath.Glob("docs/*.md")
	files = append(files, "README.md")
	link := regexp.MustCompile(`\]\(([^)#\s]+)`)
	path := regexp.MustCompile("`((?:docs|examples|scripts|cli|admin|router|pool|autoscaler|nomad-jobs|bench|internal)/[A-Za-z0-9_./-]*)`")
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		check := func(ref, base string) {
			p := filepath.Join(base, ref)
			if _, err := os.Stat(p); err != nil {
				// A Go identifier in a package: admin/runtime/nomad.Config.
				slash := strings.LastIndex(p, "/")
				if dot := strings.Index(p[slash+1:], "."); dot > 0 {
					pkg, ident := p[:slash+1+dot], p[slash+2+dot:]
					if fi, err := os.Stat(pkg); err == nil && fi.IsDir() && ident != "" && ident[0] >= 'A' && ident[0] <= 'Z' {
						return
					}
				}
				t.Errorf("%s refers to %s, which is not in the repository", f, ref)
			}
		}
		for _, m := range link.FindAllStringSubmatch(string(b), -1) {
			if strings.Contains(m[1], "://") || strings.HasPrefix(m[1], "mailto:") {
				continue
			}
			check(m[1], filepath.Dir(f))
		}
		for _, m := range path.FindAllStringSubmatch(string(b), -1) {
			if strings.ContainsAny(m[1], "<>*") {
				continue
			}
			check(m[1], ".")
		}
	}
}

// TestGrafanaDashboard: docs/grafana-dashboard.json is a dashboard whose
// panels query the platform's series, the new ones of pfop, builds and
// autoscaler decisions included.
func TestGrafanaDashboard(t *testing.T) {
	b, err := os.ReadFile("docs/grafana-dashboard.json")
	if err != nil {
		t.Fatal(err)
	}
	var d struct {
		Title  string
		Panels []struct {
			Title   string
			Targets []struct{ Expr string }
		}
	}
	if err := json.Unmarshal(b, &d); err != nil || d.Title == "" || len(d.Panels) == 0 {
		t.Fatalf("dashboard: %v %+v", err, d)
	}
	var exprs strings.Builder
	for _, p := range d.Panels {
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
		for _, tg := range p.Targets {
			exprs.WriteString(tg.Expr + "\n")
		}
	}
	for _, name := range []string{
		"dora_router_requests_total", "dora_router_step_seconds_bucket", "dora_router_sent_bytes_total", "dora_router_read_bytes_total",
		"dora_router_inflight_calls", "dora_autoscaler_desired_instances", "dora_autoscaler_ready_instances", "dora_autoscaler_decisions_total",
		"dora_pfop_queue_jobs", "dora_pfop_jobs_total", "dora_pfop_job_duration_seconds_bucket", "dora_admin_build_duration_seconds_count",
		"dora_admin_requests_total",
	} {
		if !strings.Contains(exprs.String(), name) {
			t.Errorf("no panel queries %s", name)
		}
	}
}
