package admin

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/doraproject/dora"
	"github.com/doraproject/dora/admin/runtime"
)

// Limits of the instance endpoints.
const (
	MaxIndexes     = 1000
	DefaultLogTail = 100
	MaxLogTail     = 10000
)

// activeDeployment returns the live deployment of the caller's ufop's
// active version in region; 404 when there is none.
func (s *Server) activeDeployment(r *http.Request, c *call, region string) (dora.Ufop, dora.Deployment, error) {
	u, _, err := s.ownedUfop(r.Context(), c, r.PathValue("name"))
	if err != nil {
		return u, dora.Deployment{}, err
	}
	if u.ActiveVersion == "" {
		return u, dora.Deployment{}, errf(http.StatusNotFound, "ufop %s has no active version", u.Name)
	}
	deps, err := s.deployments(r.Context(), u.Name)
	if err != nil {
		return u, dora.Deployment{}, err
	}
	j := findLive(deps, u.ActiveVersion, region)
	if j < 0 {
		return u, dora.Deployment{}, errf(http.StatusNotFound, "ufop %s: no deployment of %s in region %s", u.Name, u.ActiveVersion, region)
	}
	return u, deps[j], nil
}

func (s *Server) listInstances(w http.ResponseWriter, r *http.Request, c *call) error {
	q := r.URL.Query()
	region, err := s.regionParam(q.Get("region"))
	if err != nil {
		return err
	}
	u, _, deps, err := s.ownedDeployments(r.Context(), c, r.PathValue("name"))
	if err != nil {
		return err
	}
	all := q.Get("all") == "1" || q.Get("all") == "true"
	out := []runtime.InstanceStatus{}
	for _, d := range deps {
		if !liveDeployment(d) || d.Region != region || (!all && d.Version != u.ActiveVersion) {
			continue
		}
		st, err := s.rt.Status(r.Context(), d.ID)
		if errors.Is(err, runtime.ErrNotFound) {
			continue
		}
		if err != nil {
			return errf(http.StatusServiceUnavailable, "runtime status of %s: %v", d.ID, err)
		}
		out = append(out, st.Instances...)
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

func (s *Server) stopInstances(w http.ResponseWriter, r *http.Request, c *call) error {
	return s.startStop(w, r, c, false)
}

func (s *Server) startInstances(w http.ResponseWriter, r *http.Request, c *call) error {
	return s.startStop(w, r, c, true)
}

func (s *Server) startStop(w http.ResponseWriter, r *http.Request, c *call, start bool) error {
	var req struct {
		Region  string `json:"region"`
		Indexes []int  `json:"indexes"`
	}
	if err := c.decode(r, &req); err != nil {
		return err
	}
	if len(req.Indexes) > MaxIndexes {
		return errf(http.StatusBadRequest, "indexes: at most %d", MaxIndexes)
	}
	for _, i := range req.Indexes {
		if i < 1 {
			return errf(http.StatusBadRequest, "indexes: instance numbers start at 1 (got %d)", i)
		}
	}
	region, err := s.regionParam(req.Region)
	if err != nil {
		return err
	}
	_, d, err := s.activeDeployment(r, c, region)
	if err != nil {
		return err
	}
	if start {
		err = s.rt.StartInstances(r.Context(), d.ID, req.Indexes)
	} else {
		err = s.rt.StopInstances(r.Context(), d.ID, req.Indexes)
	}
	if errors.Is(err, runtime.ErrNotFound) {
		return errf(http.StatusNotFound, "deployment %s: no such instance (%v)", d.ID, err)
	}
	if err != nil {
		return errf(http.StatusServiceUnavailable, "runtime: %v", err)
	}
	if start && len(req.Indexes) == 0 && d.Status == dora.DeployStopped {
		// The record says PENDING at once, not at the next status
		// check: until then routers answer the deployment's requests
		// "stopped by its owner" instead of holding them.
		if _, err := s.updateDeployment(r.Context(), d.Ufop, d.ID, func(nd *dora.Deployment) bool {
			if nd.Status != dora.DeployStopped {
				return false
			}
			nd.Status, nd.Message, nd.Updated = dora.DeployPending, "started by its owner", s.nowUTC()
			return true
		}); err != nil {
			s.log.Warn("admin: record a started deployment", "deployment", d.ID, "err", err)
		}
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// logParams reads type and tail.
func logParams(q map[string][]string) (stream string, tail int, err error) {
	get := func(k string) string {
		if v := q[k]; len(v) > 0 {
			return v[0]
		}
		return ""
	}
	stream = get("type")
	switch stream {
	case "":
		stream = "stdout"
	case "stdout", "stderr":
	default:
		return "", 0, errf(http.StatusBadRequest, "type %q: must be stdout or stderr", stream)
	}
	tail = DefaultLogTail
	if v := get("tail"); v != "" {
		tail, err = strconv.Atoi(v)
		if err != nil || tail < 1 || tail > MaxLogTail {
			return "", 0, errf(http.StatusBadRequest, "tail: must be 1 to %d", MaxLogTail)
		}
	}
	return stream, tail, nil
}

func (s *Server) instanceLogs(w http.ResponseWriter, r *http.Request, c *call) error {
	q := r.URL.Query()
	index, err := strconv.Atoi(r.PathValue("index"))
	if err != nil || index < 1 {
		return errf(http.StatusBadRequest, "index %q: instance numbers start at 1", r.PathValue("index"))
	}
	stream, tail, err := logParams(q)
	if err != nil {
		return err
	}
	region, err := s.regionParam(q.Get("region"))
	if err != nil {
		return err
	}
	_, d, err := s.activeDeployment(r, c, region)
	if err != nil {
		return err
	}
	follow := wantFollow(r)
	rc, err := s.rt.Logs(r.Context(), d.ID, runtime.LogQuery{Index: index, Stream: stream, Tail: tail, Follow: follow})
	if errors.Is(err, runtime.ErrNotFound) {
		return errf(http.StatusNotFound, "deployment %s has no instance %d", d.ID, index)
	}
	if err != nil {
		return errf(http.StatusServiceUnavailable, "runtime logs: %v", err)
	}
	defer rc.Close()
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	if follow {
		// ?follow=1: the reply lasts until the client hangs up or the
		// instance goes away, each line flushed as it comes.
		_, _ = io.Copy(streaming(w), rc)
		return nil
	}
	w.WriteHeader(http.StatusOK)
	_, _ = io.Copy(w, rc)
	return nil
}

// fileLogCollector is implemented by runtimes that collect the files an
// instance writes under its release's log_file_paths (the local runtime).
type fileLogCollector interface {
	CollectedLogs(deploymentID string, index int) ([]string, error)
}

// ufopLogs serves GET /v1/ufops/{name}/logs: per instance, the lines of the
// files under the release's log_file_paths when the runtime collects them
// (filtered by the keyword k; they carry no time, so from/to do not apply),
// then the instance's stdout lines (each prefixed with its RFC 3339 time)
// filtered by from/to and k.
func (s *Server) ufopLogs(w http.ResponseWriter, r *http.Request, c *call) error {
	q := r.URL.Query()
	region, err := s.regionParam(q.Get("region"))
	if err != nil {
		return err
	}
	var from, to time.Time
	for name, dst := range map[string]*time.Time{"from": &from, "to": &to} {
		if v := q.Get(name); v != "" {
			t, err := time.Parse(time.RFC3339, v)
			if err != nil {
				return errf(http.StatusBadRequest, "%s %q: want RFC 3339", name, v)
			}
			*dst = t
		}
	}
	instance := 0
	if v := q.Get("instance"); v != "" {
		instance, err = strconv.Atoi(v)
		if err != nil || instance < 1 {
			return errf(http.StatusBadRequest, "instance %q: instance numbers start at 1", v)
		}
	}
	keyword := q.Get("k")
	u, _, err := s.ownedUfop(r.Context(), c, r.PathValue("name"))
	if err != nil {
		return err
	}
	version := q.Get("version")
	if version == "" {
		version = u.ActiveVersion
	}
	deps, err := s.deployments(r.Context(), u.Name)
	if err != nil {
		return err
	}
	j := findLive(deps, version, region)
	if j < 0 {
		return errf(http.StatusNotFound, "ufop %s: no deployment of version %q in region %s", u.Name, version, region)
	}
	d := deps[j]
	indexes := []int{instance}
	if instance == 0 {
		st, err := s.rt.Status(r.Context(), d.ID)
		if err != nil && !errors.Is(err, runtime.ErrNotFound) {
			return errf(http.StatusServiceUnavailable, "runtime status: %v", err)
		}
		indexes = indexes[:0]
		for _, in := range st.Instances {
			indexes = append(indexes, in.Index)
		}
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.WriteHeader(http.StatusOK)
	collector, _ := s.rt.(fileLogCollector)
	for _, idx := range indexes {
		prefix := ""
		if instance == 0 {
			prefix = fmt.Sprintf("[%d] ", idx)
		}
		if collector != nil {
			lines, err := collector.CollectedLogs(d.ID, idx)
			if err == nil {
				for _, line := range lines {
					if keyword == "" || strings.Contains(line, keyword) {
						_, _ = io.WriteString(w, prefix+line+"\n")
					}
				}
			}
		}
		rc, err := s.rt.Logs(r.Context(), d.ID, runtime.LogQuery{Index: idx, Stream: "stdout", Tail: MaxLogTail})
		if err != nil {
			continue
		}
		sc := bufio.NewScanner(rc)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			line := sc.Text()
			if keyword != "" && !strings.Contains(line, keyword) {
				continue
			}
			if !from.IsZero() || !to.IsZero() {
				ts, _, _ := strings.Cut(line, " ")
				t, err := time.Parse(time.RFC3339Nano, ts)
				if err != nil || (!from.IsZero() && t.Before(from)) || (!to.IsZero() && t.After(to)) {
					continue
				}
			}
			_, _ = io.WriteString(w, prefix+line+"\n")
		}
		rc.Close()
	}
	return nil
}
