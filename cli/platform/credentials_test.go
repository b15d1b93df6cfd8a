package platform

import (
	"os"
	"path/filepath"
	"testing"
)

func TestRootCredentialsGeneratedOnceAndKept(t *testing.T) {
	dir := t.TempDir()
	first, err := LoadOrCreateRootCredentials(dir, "", "")
	if err != nil {
		t.Fatal(err)
	}
	if !first.Generated || len(first.AccessKey) != 24 || len(first.SecretKey) != 40 {
		t.Fatalf("first start: %+v", first)
	}
	info, err := os.Stat(filepath.Join(dir, CredentialsFile))
	if err != nil {
		t.Fatal(err)
	}
	if info.Mode().Perm() != 0o600 {
		t.Fatalf("credentials mode %v, want 0600", info.Mode().Perm())
	}
	second, err := LoadOrCreateRootCredentials(dir, "", "")
	if err != nil {
		t.Fatal(err)
	}
	if second.Generated || second.AccessKey != first.AccessKey || second.SecretKey != first.SecretKey {
		t.Fatalf("restart changed the keys: %+v vs %+v", second, first)
	}
}

func TestRootCredentialsFromEnvironment(t *testing.T) {
	dir := t.TempDir()
	c, err := LoadOrCreateRootCredentials(dir, "AK", "SK")
	if err != nil || c.AccessKey != "AK" || c.SecretKey != "SK" || c.Generated {
		t.Fatalf("got %+v, %v", c, err)
	}
	if _, err := os.Stat(filepath.Join(dir, CredentialsFile)); !os.IsNotExist(err) {
		t.Fatalf("keys from the environment must not be written to disk: %v", err)
	}
	if _, err := LoadOrCreateRootCredentials(dir, "AK", ""); err == nil {
		t.Fatal("half-set keys accepted")
	}
}

func TestRootCredentialsDamagedFile(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, CredentialsFile), []byte("{"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadOrCreateRootCredentials(dir, "", ""); err == nil {
		t.Fatal("damaged file accepted")
	}
}
