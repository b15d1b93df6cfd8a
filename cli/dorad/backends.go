package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"github.com/spf13/viper"

	"github.com/doraproject/dora"
	"github.com/doraproject/dora/cli/platform"
)

// Flag help shared by the production commands.
const (
	storeHelp     = "metadata store URL: bolt://<file> (one process) or consul://<host:port>/<prefix>"
	runtimeHelp   = "runtime URL: local:// (child processes) or nomad://<host:port>[?driver=raw_exec|exec][&network=host|bridge]"
	discoveryHelp = "instance discovery URL: memory:// (in-process only) or consul://<host:port>"
	loadHelp      = "load store URL: memory:// (in-process only) or redis://<host:port>/<db>"
	objectsHelp   = "object origin URL: file://<dir> (one host: the same directory as the admin's) or s3://<s3-bucket>[/<prefix>]?endpoint=http(s)://host:port[&region=r][&path-style=true] shared by every host (credentials from AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or AWS_PROFILE)"
	regionsHelp   = "deployment regions, the first is the default: NAME[=NOMAD_REGION[/DC[+DC...]]], e.g. z0=global/dc1 (a config file may give {name, desc, nomad_region, datacenters} maps)"
	shutdownLimit = 30 * time.Second
)

// addBackendFlag adds one of the backend URL flags.
func addBackendFlag(f *pflag.FlagSet, name, def, help string) { f.String(name, def, help) }

// listenAlias makes --addr (the spelling of nomad-jobs/dora-*.nomad.hcl)
// an alias of --listen.
func listenAlias(_ *pflag.FlagSet, name string) pflag.NormalizedName {
	if name == "addr" {
		name = "listen"
	}
	return pflag.NormalizedName(name)
}

// addRootKeyFlags adds --root-ak/--root-sk (DORA_ROOT_AK/DORA_ROOT_SK).
func addRootKeyFlags(f *pflag.FlagSet) {
	f.String("root-ak", "", "root access key (prefer DORA_ROOT_AK: flags show in ps)")
	f.String("root-sk", "", "root secret key (prefer DORA_ROOT_SK: flags show in ps)")
}

// dataDirOf is --data-dir, or the platform's default ./.dora when it is
// empty (as StartDev and StartAdmin take it), for messages naming files
// in it.
func dataDirOf(v *viper.Viper) string {
	if d := v.GetString("data-dir"); d != "" {
		return d
	}
	return "./.dora"
}

// rootKeys reads the root keys: --root-ak/--root-sk, DORA_ROOT_AK and
// DORA_ROOT_SK, or the config file's root-ak/root-sk or root_ak/root_sk
// (the file accepts both spellings, so both are read, the flag's first).
func rootKeys(v *viper.Viper) (ak, sk string) {
	first := func(keys ...string) string {
		for _, k := range keys {
			if s := v.GetString(k); s != "" {
				return s
			}
		}
		return ""
	}
	return first("root-ak", "root_ak"), first("root-sk", "root_sk")
}

// addRegionFlags adds --region (the single region when --regions is not
// given, described by help) and --regions, the pair regionsFrom and the
// platform read: the roles that serve several regions (admin, autoscaler)
// take both.
func addRegionFlags(f *pflag.FlagSet, help string) {
	f.String("region", dora.DefaultRegion, help)
	f.StringSlice("regions", nil, regionsHelp)
}

// loggerAndRegions reads what a role serving several regions needs before
// it starts: its logger (newLogger) and its regions (regionsFrom).
func loggerAndRegions(v *viper.Viper) (*slog.Logger, []platform.RegionSpec, error) {
	log, err := newLogger(v)
	if err != nil {
		return nil, nil, err
	}
	regions, err := regionsFrom(v)
	if err != nil {
		return nil, nil, err
	}
	return log, regions, nil
}

// stringList reads a list flag as the flag takes it: items separated by
// commas, from the flag, DORA_* (where viper would split on spaces only)
// or a config file string; spaces separate items too, and a config file
// list is taken item by item.
func stringList(v *viper.Viper, key string) []string {
	var out []string
	split := func(s string) {
		out = append(out, strings.FieldsFunc(s, func(r rune) bool { return r == ',' || r == ' ' || r == '\n' || r == '\t' })...)
	}
	switch x := v.Get(key).(type) {
	case string:
		split(x)
	case []string:
		for _, s := range x {
			split(s)
		}
	case []any:
		for _, item := range x {
			split(fmt.Sprint(item))
		}
	}
	return out
}

// regionsFrom reads --regions: a flag or env list of NAME[=NOMAD_REGION[/DC+DC]]
// strings, or, from a config file, a list mixing such strings and maps.
func regionsFrom(v *viper.Viper) ([]platform.RegionSpec, error) {
	raw := v.Get("regions")
	var out []platform.RegionSpec
	add := func(s string) error {
		for _, part := range strings.FieldsFunc(s, func(r rune) bool { return r == ',' || r == ' ' || r == '\n' || r == '\t' }) {
			r, err := platform.ParseRegion(part)
			if err != nil {
				return fmt.Errorf("--regions: %w", err)
			}
			out = append(out, r)
		}
		return nil
	}
	switch x := raw.(type) {
	case nil:
	case string:
		if err := add(x); err != nil {
			return nil, err
		}
	case []string:
		for _, s := range x {
			if err := add(s); err != nil {
				return nil, err
			}
		}
	case []any:
		for i, item := range x {
			switch it := item.(type) {
			case string:
				if err := add(it); err != nil {
					return nil, err
				}
			case map[string]any:
				r, err := regionFromMap(it)
				if err != nil {
					return nil, fmt.Errorf("regions[%d] in the config file: %w", i, err)
				}
				out = append(out, r)
			default:
				return nil, fmt.Errorf("regions[%d] in the config file: want a string or a map, got %T", i, item)
			}
		}
	default:
		return nil, fmt.Errorf("regions: want a list, got %T", raw)
	}
	if err := platform.ValidateRegions(out); err != nil {
		return nil, fmt.Errorf("--regions: %w", err)
	}
	return out, nil
}

// regionFromMap decodes one {name, desc, nomad_region, datacenters} map,
// refusing unknown keys (a typo would otherwise be silently ignored).
func regionFromMap(m map[string]any) (platform.RegionSpec, error) {
	b, err := json.Marshal(m)
	if err != nil {
		return platform.RegionSpec{}, err
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	var r platform.RegionSpec
	if err := dec.Decode(&r); err != nil {
		return platform.RegionSpec{}, fmt.Errorf("want keys name, desc, nomad_region, datacenters: %w", err)
	}
	return r, nil
}

// flavorsFrom reads the optional `flavors` list of the config file
// ({name, cpu, memoryMB, desc} maps; cpu in MHz, memory in MiB). None means
// the platform defaults.
func flavorsFrom(v *viper.Viper) ([]dora.Flavor, error) {
	raw := v.Get("flavors")
	if raw == nil {
		return nil, nil
	}
	list, ok := raw.([]any)
	if !ok {
		return nil, fmt.Errorf("flavors in the config file: want a list, got %T", raw)
	}
	seen := map[string]bool{}
	out := make([]dora.Flavor, 0, len(list))
	for i, item := range list {
		m, ok := item.(map[string]any)
		if !ok {
			return nil, fmt.Errorf("flavors[%d] in the config file: want a map, got %T", i, item)
		}
		// viper lower-cases keys; accept memorymb for memoryMB.
		if v, ok := m["memorymb"]; ok {
			delete(m, "memorymb")
			m["memoryMB"] = v
		}
		b, err := json.Marshal(m)
		if err != nil {
			return nil, err
		}
		dec := json.NewDecoder(bytes.NewReader(b))
		dec.DisallowUnknownFields()
		var f dora.Flavor
		if err := dec.Decode(&f); err != nil {
			return nil, fmt.Errorf("flavors[%d] in the config file: want keys name, cpu, memoryMB, desc: %w", i, err)
		}
		if f.Name == "" || f.CPU <= 0 || f.MemoryMB <= 0 || seen[f.Name] {
			return nil, fmt.Errorf("flavors[%d] in the config file: a unique name and a positive cpu and memoryMB are required (%+v)", i, f)
		}
		seen[f.Name] = true
		out = append(out, f)
	}
	return out, nil
}

// service is what runUntilStopped waits on: a platform.Service or Admin.
type service interface {
	Done() <-chan struct{}
	Err() error
	Close() error
}

// runUntilStopped waits for SIGINT/SIGTERM (or the command's context) or a
// failing part, then closes svc within shutdownLimit.
func runUntilStopped(ctx context.Context, log *slog.Logger, name string, svc service) error {
	select {
	case <-ctx.Done():
		log.Info("shutting down", "role", name)
	case <-svc.Done():
		log.Error("a part failed; shutting down", "role", name, "err", svc.Err())
	}
	closed := make(chan error, 1)
	go func() { closed <- svc.Close() }()
	select {
	case err := <-closed:
		if err != nil {
			return fmt.Errorf("%s: shutdown: %w", name, err)
		}
	case <-time.After(shutdownLimit):
		return fmt.Errorf("%s: shutdown took longer than %v", name, shutdownLimit)
	}
	return svc.Err()
}

// signalContext is the command's context, cancelled by SIGINT or SIGTERM.
// Once it is cancelled the signals get their default action back: a
// second Ctrl-C during a slow shutdown ends the process at once.
func signalContext(cmd *cobra.Command) (context.Context, context.CancelFunc) {
	ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
	context.AfterFunc(ctx, stop)
	return ctx, stop
}
