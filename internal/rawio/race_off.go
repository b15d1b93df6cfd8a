//go:build !race

package rawio

const raceEnabled = false

func raceBeforeWrite()      {}
func raceAfterWrite([]byte) {}
func raceAfterRead([]byte)  {}
