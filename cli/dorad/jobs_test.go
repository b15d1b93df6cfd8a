package main

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// The platform's Nomad jobs (nomad-jobs/dora-*.nomad.hcl) run dorad with
// literal args; TestNomadJobArgs parses each job's args with the real
// command tree, so a job whose flags drift from the commands fails here
// rather than in a cluster.

var (
	// argsBlockRE finds `args = [ ... ]` (the list holds no brackets).
	argsBlockRE = regexp.MustCompile(`(?s)\bargs\s*=\s*\[(.*?)\]`)
	// argTokenRE is one list element: a quoted string or a reference
	// such as var.objects.
	argTokenRE = regexp.MustCompile(`"((?:[^"\\]|\\.)*)"|\b(var\.[A-Za-z0-9_]+)\b`)
	// commandRE is the task's command.
	commandRE = regexp.MustCompile(`\bcommand\s*=\s*(var\.dorad|"[^"]*dorad")`)
	// variableRE is a variable with a string default.
	variableRE  = regexp.MustCompile(`(?s)variable\s+"([A-Za-z0-9_]+)"\s*\{(.*?)\n\}`)
	defaultRE   = regexp.MustCompile(`\bdefault\s*=\s*"((?:[^"\\]|\\.)*)"`)
	interpRE    = regexp.MustCompile(`\$\{[^}]*\}`)
	hclCommentR = regexp.MustCompile(`(?m)^\s*#.*$`)
)

// nomadPlaceholder stands for a ${...} interpolation Nomad fills at run
// time (a port, an address): digits, so that "0.0.0.0:${NOMAD_PORT_http}"
// stays a host:port.
const nomadPlaceholder = "20000"

// jobArgs extracts the dorad args of one job file: quoted strings with
// ${...} replaced by a placeholder, var.X by the variable's default.
func jobArgs(t *testing.T, name, src string) []string {
	t.Helper()
	src = hclCommentR.ReplaceAllString(src, "")
	if !commandRE.MatchString(src) {
		t.Fatalf("%s: no task runs dorad (command = var.dorad)", name)
	}
	defaults := map[string]string{}
	for _, m := range variableRE.FindAllStringSubmatch(src, -1) {
		if d := defaultRE.FindStringSubmatch(m[2]); d != nil {
			defaults[m[1]] = d[1]
		}
	}
	blocks := argsBlockRE.FindAllStringSubmatch(src, -1)
	if len(blocks) != 1 {
		t.Fatalf("%s: %d args lists, want 1", name, len(blocks))
	}
	var args []string
	for _, m := range argTokenRE.FindAllStringSubmatch(blocks[0][1], -1) {
		if m[2] != "" {
			v, ok := defaults[strings.TrimPrefix(m[2], "var.")]
			if !ok {
				t.Fatalf("%s: args use %s, which has no string default", name, m[2])
			}
			args = append(args, v)
			continue
		}
		s := strings.NewReplacer(`\"`, `"`, `\\`, `\`).Replace(m[1])
		args = append(args, interpRE.ReplaceAllString(s, nomadPlaceholder))
	}
	return args
}

func TestJobArgsExtraction(t *testing.T) {
	src := `
variable "objects" {
  description = "a {braced} description"
  type        = string
  default     = "file:///srv/objects"
}
job "x" {
  # args = ["commented", "out"]
  task "t" {
    config {
      command = var.dorad
      args = [
        "router",
        "--addr", "0.0.0.0:${NOMAD_PORT_http}",
        "--objects", var.objects,
        "--domain-suffix", "say \"hi\"",
      ]
    }
  }
}
`
	got := strings.Join(jobArgs(t, "inline", src), " ")
	want := `router --addr 0.0.0.0:20000 --objects file:///srv/objects --domain-suffix say "hi"`
	if got != want {
		t.Fatalf("args = %q, want %q", got, want)
	}
}

// TestNomadJobArgs: every platform job's dorad args name a dorad command
// and parse with that command's real flags, leaving no stray argument.
func TestNomadJobArgs(t *testing.T) {
	files, err := filepath.Glob(filepath.Join("..", "..", "nomad-jobs", "dora-*.nomad.hcl"))
	if err != nil {
		t.Fatal(err)
	}
	if len(files) < 4 {
		t.Fatalf("found %d platform jobs (%v), want admin, router, autoscaler and worker", len(files), files)
	}
	seen := map[string]bool{}
	for _, path := range files {
		name := filepath.Base(path)
		t.Run(name, func(t *testing.T) {
			src, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			args := jobArgs(t, name, string(src))
			if len(args) == 0 {
				t.Fatal("empty args")
			}
			root := newRootCommand()
			cmd, rest, err := root.Find(args)
			if err != nil || cmd == root {
				t.Fatalf("args %q name no dorad command: %v", args, err)
			}
			if want := strings.TrimSuffix(strings.TrimPrefix(name, "dora-"), ".nomad.hcl"); cmd.Name() != want {
				t.Fatalf("%s runs dorad %s", name, cmd.Name())
			}
			seen[cmd.Name()] = true
			if err := cmd.ParseFlags(rest); err != nil {
				t.Fatalf("dorad %s does not accept the job's args %q: %v", cmd.Name(), rest, err)
			}
			if stray := cmd.Flags().Args(); len(stray) > 0 {
				t.Fatalf("dorad %s: stray arguments %q in the job's args", cmd.Name(), stray)
			}
			// The role's listener must be reachable by Consul's check and
			// the other nodes: a job that serves must say where.
			if f := cmd.Flags().Lookup("listen"); f != nil && !f.Changed {
				t.Errorf("dorad %s: the job leaves --listen at its loopback default %s", cmd.Name(), f.DefValue)
			}
		})
	}
	for _, role := range []string{"admin", "router", "autoscaler", "worker"} {
		if !seen[role] {
			t.Errorf("no nomad-jobs/dora-%s.nomad.hcl checked", role)
		}
	}
}
