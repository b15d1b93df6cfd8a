package stats

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sort"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// MaxScrapeBytes bounds one scraped /metrics reply.
const MaxScrapeBytes = 16 << 20

// Scrape is a prometheus.Gatherer over other processes' /metrics pages:
// in production the routers and the autoscaler run apart from the admin,
// and the console's charts read their figures from their metrics
// listeners (addresses the operator configures, never user input). The
// families of all pages are concatenated, not merged: the Sampler sums
// the series of every router.
type Scrape struct {
	// URLs are the /metrics addresses, e.g. http://router-1:8080/metrics.
	URLs []string
	// Client fetches them; http.DefaultClient when nil.
	Client *http.Client
	// Timeout bounds each fetch; 5 s when 0.
	Timeout time.Duration
}

// Gather fetches every URL and returns the families of those that
// answered; the error names those that did not (the Sampler still uses a
// partial gather).
func (s Scrape) Gather() ([]*dto.MetricFamily, error) {
	var out []*dto.MetricFamily
	var errs []error
	for _, u := range s.URLs {
		fams, err := s.fetch(u)
		if err != nil {
			errs = append(errs, fmt.Errorf("scrape %s: %w", u, err))
			continue
		}
		names := make([]string, 0, len(fams))
		for n := range fams {
			names = append(names, n)
		}
		sort.Strings(names)
		for _, n := range names {
			out = append(out, fams[n])
		}
	}
	return out, errors.Join(errs...)
}

func (s Scrape) fetch(u string) (map[string]*dto.MetricFamily, error) {
	timeout := s.Timeout
	if timeout <= 0 {
		timeout = 5 * time.Second
	}
	client := s.Client
	if client == nil {
		client = http.DefaultClient
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, err
	}
	// The text format: what every Prometheus client serves.
	req.Header.Set("Accept", "text/plain;version=0.0.4")
	resp, err := client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("status %s", resp.Status)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(io.LimitReader(resp.Body, MaxScrapeBytes))
	if err != nil {
		return nil, fmt.Errorf("parse: %w", err)
	}
	return fams, nil
}
