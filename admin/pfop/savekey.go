package pfop

import (
	"crypto/rand"
	"errors"
	"fmt"
	"path"
	"strconv"
	"strings"
	"time"

	dora "github.com/doraproject/dora"
)

// saveKey is a parsed put-policy saveKey: literal text and magic
// variables, $(name) or ${name} as Qiniu writes them. The variables Qiniu
// allows in a saveKey: $(bucket) $(etag) $(fname) $(fprefix) $(ext)
// $(fsize) $(mimeType) $(endUser) $(uuid) $(year) $(mon) $(day) $(hour)
// $(min) $(sec) and $(x:<name>) (the upload's custom variables).
type saveKey []saveKeyPart

// saveKeyPart is literal text (name "") or a variable.
type saveKeyPart struct {
	lit, name string
}

// saveKeyVars are the known variables of one upload.
var saveKeyVars = map[string]bool{
	"bucket": true, "etag": true, "fname": true, "fprefix": true, "ext": true, "fsize": true,
	"mimeType": true, "endUser": true, "uuid": true,
	"year": true, "mon": true, "day": true, "hour": true, "min": true, "sec": true,
}

// parseSaveKey reads a saveKey template: an unknown variable (Qiniu's
// $(key), $(persistentId), $(exif...), $(imageInfo...) among them: they
// cannot name the object), an empty $(x:) or an unclosed $( is an error.
// A "$" that opens no variable is literal.
func parseSaveKey(s string) (saveKey, error) {
	if s == "" {
		return nil, errors.New("empty")
	}
	var t saveKey
	lit := 0 // start of the pending literal
	for i := 0; i < len(s); {
		if s[i] != '$' || i+1 >= len(s) || (s[i+1] != '(' && s[i+1] != '{') {
			i++
			continue
		}
		closer := byte(')')
		if s[i+1] == '{' {
			closer = '}'
		}
		end := strings.IndexByte(s[i+2:], closer)
		if end < 0 {
			return nil, fmt.Errorf("unclosed %q at byte %d", s[i:i+2], i)
		}
		name := s[i+2 : i+2+end]
		switch {
		case strings.HasPrefix(name, "x:"):
			if len(name) == 2 {
				return nil, fmt.Errorf("%s: a custom variable needs a name", s[i:i+3+end])
			}
		case !saveKeyVars[name]:
			return nil, fmt.Errorf("unknown variable %s (saveKey takes bucket, etag, fname, fprefix, ext, fsize, mimeType, endUser, uuid, year, mon, day, hour, min, sec, x:<name>)", s[i:i+3+end])
		}
		if lit < i {
			t = append(t, saveKeyPart{lit: s[lit:i]})
		}
		t = append(t, saveKeyPart{name: name})
		i += 3 + end
		lit = i
	}
	if lit < len(s) {
		t = append(t, saveKeyPart{lit: s[lit:]})
	}
	return t, nil
}

// static is the template's text when it has no variable.
func (t saveKey) static() (string, bool) {
	var b strings.Builder
	for _, p := range t {
		if p.name != "" {
			return "", false
		}
		b.WriteString(p.lit)
	}
	return b.String(), true
}

// saveKeyValues is what one upload's magic variables expand to, in a
// saveKey and in a returnBody alike (value).
type saveKeyValues struct {
	bucket, etag, fname, mimeType, endUser string
	fsize                                  int64
	now                                    time.Time         // upload time; the date variables are UTC
	vars                                   map[string]string // x:<name>
	uuid                                   string            // $(uuid): made on first use, the same after
}

// expand is the key t names for the upload v. It stops once the key is
// past dora.MaxKeyBytes (the key is then refused, however long).
func (t saveKey) expand(v saveKeyValues) string { return t.expandValues(&v) }

// expandValues is expand, keeping the $(uuid) it made in v.
func (t saveKey) expandValues(v *saveKeyValues) string {
	var b strings.Builder
	for _, p := range t {
		if b.Len() > dora.MaxKeyBytes {
			break
		}
		if p.name == "" {
			b.WriteString(p.lit)
			continue
		}
		b.WriteString(v.value(p.name))
	}
	return b.String()
}

// value is the magic variable name (one of saveKeyVars, or x:<name>,
// empty when the upload has none) of the upload v.
func (v *saveKeyValues) value(name string) string {
	now := v.now.UTC()
	switch name {
	case "bucket":
		return v.bucket
	case "etag":
		return v.etag
	case "fname":
		return v.fname
	case "fprefix":
		return strings.TrimSuffix(v.fname, path.Ext(v.fname))
	case "ext":
		return fileExt(v.fname, v.mimeType)
	case "fsize":
		return strconv.FormatInt(v.fsize, 10)
	case "mimeType":
		return v.mimeType
	case "endUser":
		return v.endUser
	case "uuid":
		if v.uuid == "" { // one per upload
			v.uuid = newUUID()
		}
		return v.uuid
	case "year":
		return fmt.Sprintf("%04d", now.Year())
	case "mon":
		return fmt.Sprintf("%02d", int(now.Month()))
	case "day":
		return fmt.Sprintf("%02d", now.Day())
	case "hour":
		return fmt.Sprintf("%02d", now.Hour())
	case "min":
		return fmt.Sprintf("%02d", now.Minute())
	case "sec":
		return fmt.Sprintf("%02d", now.Second())
	}
	return v.vars[name] // x:<name>; an absent one is empty
}

// newUUID is a random (version 4) UUID.
func newUUID() string {
	var u [16]byte
	_, _ = rand.Read(u[:])
	u[6] = u[6]&0x0f | 0x40
	u[8] = u[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", u[0:4], u[4:6], u[6:8], u[8:10], u[10:])
}

// fileExt is $(ext): the file name's extension with its dot, else the
// one of its MIME type (extByType), else "".
func fileExt(fname, mimeType string) string {
	if e := path.Ext(fname); e != "" && e != "." {
		return e
	}
	return extByType[strings.ToLower(mediaType(mimeType))]
}

// extByType is $(ext) of a file without one in its name. A fixed table,
// not mime.ExtensionsByType: that answers what the host's mime.types
// lists, in an order that would make the key depend on the machine.
var extByType = map[string]string{
	"image/jpeg": ".jpg", "image/png": ".png", "image/gif": ".gif", "image/webp": ".webp",
	"image/bmp": ".bmp", "image/svg+xml": ".svg", "image/tiff": ".tiff", "image/x-icon": ".ico",
	"image/vnd.microsoft.icon": ".ico", "image/avif": ".avif", "image/heic": ".heic",
	"text/plain": ".txt", "text/html": ".html", "text/css": ".css", "text/csv": ".csv",
	"text/xml": ".xml", "text/javascript": ".js", "text/markdown": ".md",
	"application/json": ".json", "application/xml": ".xml", "application/javascript": ".js",
	"application/pdf": ".pdf", "application/zip": ".zip", "application/gzip": ".gz",
	"application/x-gzip": ".gz", "application/x-tar": ".tar", "application/wasm": ".wasm",
	"application/msword": ".doc", "application/vnd.ms-excel": ".xls",
	"application/vnd.openxmlformats-officedocument.wordprocessingml.document":   ".docx",
	"application/vnd.openxmlformats-officedocument.spreadsheetml.sheet":         ".xlsx",
	"application/vnd.openxmlformats-officedocument.presentationml.presentation": ".pptx",
	"audio/mpeg": ".mp3", "audio/wav": ".wav", "audio/wave": ".wav", "audio/x-wav": ".wav",
	"audio/ogg": ".ogg", "audio/aac": ".aac", "audio/flac": ".flac", "audio/mp4": ".m4a",
	"video/mp4": ".mp4", "video/webm": ".webm", "video/quicktime": ".mov", "video/x-msvideo": ".avi",
	"video/x-flv": ".flv", "video/mpeg": ".mpeg", "video/x-matroska": ".mkv",
	"font/woff": ".woff", "font/woff2": ".woff2", "font/ttf": ".ttf", "font/otf": ".otf",
}
