package fop

// Canonical returns the pipeline of a fop text without its saveas, as
// persistent processing indexes its results for `?p/1/<fop>`; ok is false
// for text that does not parse as a pipeline (or is itself p/1/ or signed).
func Canonical(text string) (string, bool) {
	r, err := Parse(text)
	if err != nil || r.Persisted != "" || r.Token != "" {
		return "", false
	}
	return r.Pipeline(), true
}
