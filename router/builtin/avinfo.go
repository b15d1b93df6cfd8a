package builtin

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os/exec"
	"strconv"
	"strings"

	"github.com/doraproject/dora/internal/ctxio"
	"github.com/doraproject/dora/router/fop"
)

// MaxAvinfoBytes bounds ffprobe's JSON answer.
const MaxAvinfoBytes = 1 << 20

// avinfo runs ffprobe on the input, streamed into its stdin (never held
// in memory), and answers Qiniu's shape: {"streams":[...],"format":{...}},
// the fields as ffprobe names them.
func avinfo(ctx context.Context, step fop.Step, in Input) (Result, error) {
	if len(step.Args) != 0 {
		return Result{}, errorf(http.StatusBadRequest, "avinfo: takes no arguments")
	}
	bin := in.Env.ffprobe()
	var out, errb bytes.Buffer
	lout := &limitedBuffer{max: MaxAvinfoBytes, b: &out}
	cmd := exec.CommandContext(ctx, bin, "-v", "error", "-print_format", "json", "-show_format", "-show_streams", "-i", "pipe:0")
	cmd.Stdin = ctxio.Reader(ctx, in.Body)
	cmd.Stdout = lout
	cmd.Stderr = &limitedBuffer{max: 2 << 10, b: &errb}
	err := cmd.Run()
	if ctx.Err() != nil {
		return Result{}, ctx.Err()
	}
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		return Result{}, errorf(http.StatusInternalServerError, "avinfo: ffprobe (Debian ffmpeg) not runnable: %v", err)
	}
	if err != nil {
		msg := strings.TrimSpace(errb.String())
		if i := strings.IndexByte(msg, '\n'); i >= 0 {
			msg = msg[:i]
		}
		return Result{}, errorf(http.StatusBadRequest, "avinfo: not a media file ffprobe reads: %s", msg)
	}
	if lout.cut {
		return Result{}, errorf(http.StatusInternalServerError, "avinfo: ffprobe said more than %d bytes", MaxAvinfoBytes)
	}
	var probe struct {
		Streams []map[string]any `json:"streams"`
		Format  map[string]any   `json:"format"`
	}
	if err := json.Unmarshal(out.Bytes(), &probe); err != nil {
		return Result{}, fmt.Errorf("avinfo: ffprobe output: %w", err)
	}
	if probe.Format == nil || len(probe.Streams) == 0 {
		return Result{}, errorf(http.StatusBadRequest, "avinfo: no media streams found")
	}
	// ffprobe read a pipe: its file name means nothing here, and it knows
	// the size only when the input's length is known.
	delete(probe.Format, "filename")
	if _, ok := probe.Format["size"]; !ok && in.Size >= 0 {
		probe.Format["size"] = strconv.FormatInt(in.Size, 10)
	}
	if probe.Streams == nil {
		probe.Streams = []map[string]any{}
	}
	b, err := json.Marshal(probe)
	if err != nil {
		return Result{}, fmt.Errorf("avinfo: %w", err)
	}
	return bytesResult(b, "application/json"), nil
}
