//go:build !linux

package local

// dirWatch watches nothing here: every warm Open revalidates its object
// with a stat (see notify_linux.go).
type dirWatch struct{}

func (dirWatch) add(*bucketDir)    {}
func (dirWatch) remove(*bucketDir) {}
func (dirWatch) close()            {}
func (dirWatch) active() bool      { return false }
func (dirWatch) pending() bool     { return false }
func (dirWatch) drain(*warm)       {}
