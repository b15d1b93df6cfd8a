package admin

import (
	"context"
	"net/http"

	"github.com/doraproject/dora"
	"github.com/doraproject/dora/internal/api"
)

// PfopSubmitter submits pfop jobs for an account the admin API has already
// authenticated; pfop.Handler is one. It returns the persistentId, or the
// HTTP status and error to answer.
type PfopSubmitter interface {
	SubmitFor(ctx context.Context, acct dora.Account, req api.PfopRequest, reqid string) (string, int, error)
}

// submitPfop is POST /v1/pfop: the JSON form of Qiniu's POST /pfop,
// authenticated like every /v1 call (a signature, or the console's session
// and CSRF token), for the caller's own bucket.
func (s *Server) submitPfop(w http.ResponseWriter, r *http.Request, c *call) error {
	p := s.cfg.Pfop
	if p == nil {
		return errf(http.StatusNotImplemented, "this admin does not take pfop jobs")
	}
	var req api.PfopRequest
	if err := c.decode(r, &req); err != nil {
		return err
	}
	reqid := ""
	if info, ok := r.Context().Value(accessKey{}).(*accessInfo); ok {
		reqid = info.reqid
	}
	id, status, err := p.SubmitFor(r.Context(), c.acct, req, reqid)
	if err != nil {
		return errf(status, "%v", err)
	}
	writeJSON(w, http.StatusOK, api.PfopReply{PersistentID: id})
	return nil
}
