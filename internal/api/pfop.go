package api

import "fmt"

// Persistent processing paths (Qiniu's pfop; docs/api.md), served at the admin API's
// root like Qiniu's api host.
const (
	PathPfop      = "/pfop"
	PathPfopSlash = "/pfop/"
	PathPrefop    = "/status/get/prefop"
	PathUpload    = "/"
)

// Pfop job and item codes (Qiniu's; docs/api.md).
const (
	PfopSuccess      = 0
	PfopWaiting      = 1
	PfopProcessing   = 2
	PfopFailed       = 3
	PfopNotifyFailed = 4
)

// PfopUnknownID is the HTTP status of a prefop for an unknown id.
const PfopUnknownID = 612

// DefaultPipeline is the queue of a job that names none.
const DefaultPipeline = "0.default"

// PfopDesc returns the Qiniu description of a pfop code.
func PfopDesc(code int) string {
	switch code {
	case PfopSuccess:
		return "The fop was completed successfully"
	case PfopWaiting:
		return "The fop is waiting for processing"
	case PfopProcessing:
		return "The fop is processing now"
	case PfopFailed:
		return "The fop is failed"
	case PfopNotifyFailed:
		return "Callback failed"
	}
	return fmt.Sprintf("code %d", code)
}

// PfopFinal reports whether a job code is an end state.
func PfopFinal(code int) bool {
	return code == PfopSuccess || code == PfopFailed || code == PfopNotifyFailed
}

// PfopReply is the reply of POST /pfop.
type PfopReply struct {
	PersistentID string `json:"persistentId"`
}

// PfopItem is one pipeline of a job and its outcome, as prefop shows it.
type PfopItem struct {
	Cmd        string `json:"cmd"`
	Code       int    `json:"code"`
	Desc       string `json:"desc"`
	Error      string `json:"error"`
	Hash       string `json:"hash"`
	Key        string `json:"key"`
	ReturnOld  int    `json:"returnOld"`
	ErrorIndex *int   `json:"errorIndex,omitempty"` // the failing step (0-based), only on a failed item
}

// PfopStatus is the prefop answer (and the notification body).
type PfopStatus struct {
	ID           string     `json:"id"`
	Code         int        `json:"code"`
	Desc         string     `json:"desc"`
	InputKey     string     `json:"inputKey"`
	InputBucket  string     `json:"inputBucket"`
	Pipeline     string     `json:"pipeline"`
	Reqid        string     `json:"reqid"`
	Type         int        `json:"type"`
	CreationDate string     `json:"creationDate"` // RFC 3339, UTC, seconds
	Items        []PfopItem `json:"items"`
}

// PfopRequest is a pfop submission as JSON: the body of the admin API's
// POST /v1/pfop (the web console's form, authenticated like every /v1
// call). Qiniu's POST /pfop takes the same fields as a signed form.
type PfopRequest struct {
	Bucket    string `json:"bucket"`
	Key       string `json:"key"`
	Fops      string `json:"fops"`
	Pipeline  string `json:"pipeline,omitempty"`
	NotifyURL string `json:"notifyURL,omitempty"`
	Force     bool   `json:"force,omitempty"`
	Type      int    `json:"type,omitempty"`
}
