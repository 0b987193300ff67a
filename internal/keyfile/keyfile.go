// Package keyfile keeps a secret key in a file: read it, or create it (mode 0600, from crypto/rand) when it does not exist.
package keyfile

import (
	"crypto/rand"
	"errors"
	"fmt"
	"os"
)

// LoadOrCreate reads the size-byte key in path, creating it when it does not exist,
// so that what it seals survives a restart (and is shared by the processes that
// share the file). A file of another size is an error, never replaced.
func LoadOrCreate(path string, size int) ([]byte, error) {
	key, err := os.ReadFile(path)
	if err == nil {
		if len(key) != size {
			return nil, fmt.Errorf("%s: %d bytes, want %d", path, len(key), size)
		}
		return key, nil
	}
	if !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	key = make([]byte, size)
	if _, err := rand.Read(key); err != nil {
		return nil, err
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		if errors.Is(err, os.ErrExist) {
			return LoadOrCreate(path, size) // created meanwhile
		}
		return nil, err
	}
	if _, err := f.Write(key); err != nil {
		f.Close()
		os.Remove(path)
		return nil, err
	}
	return key, f.Close()
}
