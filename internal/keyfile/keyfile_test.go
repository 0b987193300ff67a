package keyfile

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
)

func TestLoadOrCreate(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "k")
	k1, err := LoadOrCreate(p, 32)
	if err != nil || len(k1) != 32 {
		t.Fatalf("create: %d bytes, %v", len(k1), err)
	}
	if fi, err := os.Stat(p); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file mode: %v %v, want 0600", fi.Mode(), err)
	}
	k2, err := LoadOrCreate(p, 32)
	if err != nil || !bytes.Equal(k1, k2) {
		t.Fatalf("load: the key changed (%v)", err)
	}
	short := filepath.Join(dir, "short")
	if err := os.WriteFile(short, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadOrCreate(short, 32); err == nil {
		t.Error("a 1-byte key file was accepted")
	}
	if b, _ := os.ReadFile(short); string(b) != "x" {
		t.Error("a key file of the wrong size was replaced")
	}
}
