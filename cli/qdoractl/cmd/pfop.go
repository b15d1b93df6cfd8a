package cmd

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/spf13/cobra"

	"github.com/doraproject/dora/admin/client"
	"github.com/doraproject/dora/internal/api"
	"github.com/doraproject/dora/internal/auth"
)

// maxPfopReplyBytes bounds a pfop/prefop answer read by qdoractl.
const maxPfopReplyBytes = 1 << 20

// pfopCmd is `qdoractl pfop <bucket> <key> <fops>`: submit a persistent
// processing job (POST /pfop/, signed like the Qiniu SDK) and print its
// persistentId, or with --wait its final status.
func (a *app) pfopCmd() *cobra.Command {
	var notifyURL, pipeline string
	var force, wait bool
	var typ int
	c := &cobra.Command{
		Use:   "pfop <bucket> <key> <fops>",
		Short: "Run fop pipelines on a stored object in the background (persistent processing)",
		Long: `pfop queues a job that runs each ';'-separated pipeline of <fops> on
<bucket>:<key> and saves the results: where a pipeline ends in
|saveas/<EncodedEntryURI>, else at <key>_<urlsafe sha1 of the pipeline> in the
same bucket (then also served at ?p/1/<pipeline>). It prints the
persistentId; "qdoractl prefop <id>" shows the progress.`,
		Example: `  qdoractl pfop photos doc.txt 'grepd/error|qhash/md5;grepd/warn'
  qdoractl pfop photos doc.txt 'grepd/x|saveas/cGhvdG9zOm91dC50eHQ=' --force --wait
  qdoractl pfop photos big.txt 'wordcount' --pipeline slow --notify-url https://hooks.example.com/pfop`,
		Args: cobra.ExactArgs(3),
		RunE: func(cmd *cobra.Command, args []string) error {
			form := url.Values{"bucket": {args[0]}, "key": {args[1]}, "fops": {args[2]}}
			if notifyURL != "" {
				form.Set("notifyURL", notifyURL)
			}
			if pipeline != "" {
				form.Set("pipeline", pipeline)
			}
			if force {
				form.Set("force", "1")
			}
			if typ != 0 {
				form.Set("type", strconv.Itoa(typ))
			}
			var reply struct {
				PersistentID string `json:"persistentId"`
			}
			if err := a.pfopCall(cmd.Context(), http.MethodPost, api.PathPfopSlash, form, &reply); err != nil {
				return err
			}
			if !wait {
				return a.show(reply, func() error {
					fmt.Fprintln(a.stdout, reply.PersistentID)
					return nil
				})
			}
			st, err := a.waitPrefop(cmd.Context(), reply.PersistentID)
			if err != nil {
				return err
			}
			if err := a.showStatus(st); err != nil {
				return err
			}
			if st.Code != api.PfopSuccess {
				return fmt.Errorf("job %s ended with code %d (%s)", st.ID, st.Code, st.Desc)
			}
			return nil
		},
	}
	f := c.Flags()
	f.StringVar(&notifyURL, "notify-url", "", "http(s) URL the job's status is POSTed to when it ends")
	f.StringVar(&pipeline, "pipeline", "", "named queue (default "+api.DefaultPipeline+")")
	f.BoolVar(&force, "force", false, "overwrite existing results")
	f.IntVar(&typ, "type", 0, "1: run only when the queue is otherwise idle")
	f.BoolVar(&wait, "wait", false, "wait for the job to end and print its status")
	return c
}

// prefopCmd is `qdoractl prefop <persistentId>`.
func (a *app) prefopCmd() *cobra.Command {
	return &cobra.Command{
		Use:     "prefop <persistentId>",
		Short:   "Show the status of a persistent processing job",
		Example: `  qdoractl prefop z0.0123456789abcdef01234567`,
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			st, err := a.prefop(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			return a.showStatus(st)
		},
	}
}

func (a *app) prefop(ctx context.Context, id string) (api.PfopStatus, error) {
	var st api.PfopStatus
	err := a.pfopCall(ctx, http.MethodGet, api.PathPrefop+"?id="+url.QueryEscape(id), nil, &st)
	return st, err
}

// waitPrefop polls prefop until the job ends.
func (a *app) waitPrefop(ctx context.Context, id string) (api.PfopStatus, error) {
	for {
		st, err := a.prefop(ctx, id)
		if err != nil {
			return st, err
		}
		if st.Code != api.PfopWaiting && st.Code != api.PfopProcessing {
			return st, nil
		}
		t := time.NewTimer(a.pollInterval)
		select {
		case <-ctx.Done():
			t.Stop()
			return st, ctx.Err()
		case <-t.C:
		}
	}
}

func (a *app) showStatus(st api.PfopStatus) error {
	return a.show(st, func() error {
		fmt.Fprintf(a.stdout, "%s  %s:%s  pipeline %s  code %d (%s)  created %s\n",
			st.ID, st.InputBucket, st.InputKey, st.Pipeline, st.Code, st.Desc, st.CreationDate)
		rows := make([][]string, 0, len(st.Items))
		for _, it := range st.Items {
			msg := it.Error
			if it.ErrorIndex != nil {
				msg = fmt.Sprintf("step %d: %s", *it.ErrorIndex, it.Error)
			}
			if it.ReturnOld == 1 {
				msg = "existing result returned"
			}
			rows = append(rows, []string{it.Cmd, strconv.Itoa(it.Code), orDash(it.Key), orDash(it.Hash), orDash(msg)})
		}
		return a.table([]string{"CMD", "CODE", "KEY", "HASH", "NOTE"}, rows)
	})
}

// pfopCall sends a pfop API request signed with the configured keys (the
// Qiniu form, as the SDK does) and decodes the JSON answer into out. The
// endpoint, the HTTP client (its timeouts) and the errors are the API
// client's: "host:port" means http, and a refusal is a *client.APIError
// with the API's message, status and request id.
func (a *app) pfopCall(ctx context.Context, method, pathQuery string, form url.Values, out any) error {
	cl, err := a.client()
	if err != nil {
		return err
	}
	var body []byte
	if form != nil {
		body = []byte(form.Encode())
	}
	req, err := http.NewRequestWithContext(ctx, method, cl.Endpoint()+pathQuery, bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("%s %s: %w", method, pathQuery, err)
	}
	if form != nil {
		req.Header.Set("Content-Type", auth.ContentTypeForm)
	}
	req.Header.Set("User-Agent", "qdoractl")
	auth.SignRequest(req, cl.AccessKey(), a.v.GetString(keySK), body, time.Now())
	hc := cl.HTTP
	if hc == nil {
		hc = client.NewHTTPClient(client.DialTimeout, client.ResponseHeaderTimeout)
	}
	resp, err := hc.Do(req)
	if err != nil {
		return fmt.Errorf("%s %s: %w", method, pathQuery, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return client.ErrorFromResponse(resp)
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxPfopReplyBytes))
	if err != nil {
		return fmt.Errorf("read the answer: %w", err)
	}
	if err := json.Unmarshal(b, out); err != nil {
		return fmt.Errorf("decode the answer: %w", err)
	}
	return nil
}
