package builtin

import (
	"strings"
	"testing"
)

// The key/value arguments after a mode: an odd count or a key given twice
// is refused by every command that reads them, before any work.
func TestKeyValueArguments(t *testing.T) {
	for _, c := range []struct {
		name string
		args []string
		want string // part of the error; "" = accepted
	}{
		{"view ok", []string{"1", "w", "100", "h", "50"}, ""},
		{"view odd", []string{"1", "w", "100", "h"}, "key/value pairs"},
		{"view twice", []string{"1", "w", "100", "w", "50"}, `duplicate "w"`},
		{"view unknown", []string{"1", "x", "1"}, `unknown parameter "x"`},
	} {
		_, err := parseView(c.args)
		checkParamErr(t, c.name, err, c.want)
	}
	for _, c := range []struct {
		name string
		args []string
		want string
	}{
		{"watermark ok", []string{"2", "text", "aGk", "dx", "5"}, ""},
		{"watermark odd", []string{"2", "text"}, "key/value pairs"},
		{"watermark twice", []string{"2", "text", "aGk", "dx", "5", "dx", "6"}, `duplicate "dx"`},
	} {
		_, err := parseWatermark(c.args)
		checkParamErr(t, c.name, err, c.want)
	}
	var got []string
	if err := eachParam([]string{"a", "1", "b", "2"}, func(k, v string) error { got = append(got, k+"="+v); return nil }); err != nil ||
		strings.Join(got, ",") != "a=1,b=2" {
		t.Errorf("eachParam: %q %v, want a=1,b=2 in order", got, err)
	}
}

func checkParamErr(t *testing.T, name string, err error, want string) {
	t.Helper()
	if want == "" {
		if err != nil {
			t.Errorf("%s: %v", name, err)
		}
		return
	}
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("%s: err = %v, want %q", name, err, want)
	}
}
