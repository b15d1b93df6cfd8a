package builtin

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"

	"github.com/doraproject/dora/router/fop"
)

// imageAve answers the image's average colour as Qiniu does:
// {"RGB":"0xrrggbb"} (transparent pixels count as composited on black).
func imageAve(ctx context.Context, step fop.Step, in Input, lim limits) (Result, error) {
	if len(step.Args) != 0 {
		return Result{}, errorf(http.StatusBadRequest, "imageAve: takes no arguments")
	}
	src, err := decodeImage(ctx, "imageAve", in, lim)
	if err != nil {
		return Result{}, err
	}
	px := toRGBA(src.img)
	var r, g, b uint64
	n := uint64(0)
	w, h := px.Bounds().Dx(), px.Bounds().Dy()
	for y := 0; y < h; y++ {
		if y%256 == 0 && ctx.Err() != nil {
			return Result{}, ctx.Err()
		}
		row := px.Pix[y*px.Stride : y*px.Stride+w*4]
		for i := 0; i < len(row); i += 4 {
			r += uint64(row[i])
			g += uint64(row[i+1])
			b += uint64(row[i+2])
		}
		n += uint64(w)
	}
	avg := func(s uint64) uint64 { return (s + n/2) / n }
	out, err := json.Marshal(struct {
		RGB string `json:"RGB"`
	}{fmt.Sprintf("0x%02x%02x%02x", avg(r), avg(g), avg(b))})
	if err != nil {
		return Result{}, fmt.Errorf("imageAve: %w", err)
	}
	return bytesResult(out, "application/json"), nil
}
