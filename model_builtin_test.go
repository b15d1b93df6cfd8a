package dora

import "testing"

// BuiltinFops hands out copies: a caller changing its slice cannot free a
// reserved name for registration.
func TestBuiltinFopsIsACopy(t *testing.T) {
	names := BuiltinFops()
	if len(names) == 0 || !IsBuiltin("imageInfo") {
		t.Fatalf("BuiltinFops() = %v", names)
	}
	for i := range names {
		names[i] = "x"
	}
	if got := BuiltinFops(); got[0] == "x" || !IsBuiltin("imageinfo") || !IsBuiltin("qhash") {
		t.Fatalf("a caller's change reached the table: %v", got)
	}
	if err := ValidateUfopName("saveas"); err == nil {
		t.Fatal("saveas registrable after a caller changed its copy")
	}
}
