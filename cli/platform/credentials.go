package platform

import (
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// RootCredentials are the platform operator's keys.
type RootCredentials struct {
	AccessKey string `json:"ak"`
	SecretKey string `json:"sk"`
	// Generated is true when this call created them (print them once).
	Generated bool `json:"-"`
}

// CredentialsFile is the name of the root keys file in the data directory.
const CredentialsFile = "root.credentials"

// LoadOrCreateRootCredentials returns the root keys: ak/sk when both are
// given (DORA_ROOT_AK/DORA_ROOT_SK), else those in <dataDir>/root.credentials,
// else new random keys written there with mode 0600.
func LoadOrCreateRootCredentials(dataDir, ak, sk string) (RootCredentials, error) {
	if (ak == "") != (sk == "") {
		return RootCredentials{}, errors.New("root keys: set both DORA_ROOT_AK and DORA_ROOT_SK, or neither")
	}
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		return RootCredentials{}, fmt.Errorf("data dir: %w", err)
	}
	if ak != "" {
		return RootCredentials{AccessKey: ak, SecretKey: sk}, nil
	}
	path := filepath.Join(dataDir, CredentialsFile)
	b, err := os.ReadFile(path)
	switch {
	case err == nil:
		var c RootCredentials
		if err := json.Unmarshal(b, &c); err != nil || c.AccessKey == "" || c.SecretKey == "" {
			return RootCredentials{}, fmt.Errorf("root keys file %s is damaged: remove it or set DORA_ROOT_AK/DORA_ROOT_SK", path)
		}
		return c, nil
	case !errors.Is(err, fs.ErrNotExist):
		return RootCredentials{}, fmt.Errorf("read %s: %w", path, err)
	}
	c := RootCredentials{AccessKey: randomKey(24), SecretKey: randomKey(40), Generated: true}
	b, _ = json.MarshalIndent(c, "", "  ")
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, append(b, '\n'), 0o600); err != nil {
		return RootCredentials{}, fmt.Errorf("write %s: %w", tmp, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return RootCredentials{}, fmt.Errorf("write %s: %w", path, err)
	}
	return c, nil
}

const keyAlphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"

func randomKey(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b) // crypto/rand.Read never fails on Linux (Go 1.24+ panics instead)
	for i := range b {
		b[i] = keyAlphabet[int(b[i])%len(keyAlphabet)]
	}
	return string(b)
}
