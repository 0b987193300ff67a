package agent

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"strings"
)

// eicar returns the EICAR anti-malware test string. It is assembled at run time so
// that no file of this repository contains it (it would be quarantined by scanners).
func eicar() []byte {
	return []byte(`X5O!P%@AP[4\PZX54(P^)7CC)7}$` + `EICAR-STANDARD-ANTIVIRUS` + `-TEST-FILE!$H+H*`)
}

// EICAR returns the EICAR test string (for tests and demos; built at run time).
func EICAR() []byte { return eicar() }

// maxContentScan is the largest file whose content is searched for the EICAR string;
// larger files are only hashed (for the blocklist).
const maxContentScan = 1 << 20

// Detection is a threat found in a file.
type Detection struct {
	Path   string
	SHA256 string
	Size   int64
	Reason string // "EICAR test file" or "SHA-256 on the blocklist"
	EICAR  bool
}

// hashFile returns the lowercase hex SHA-256 and size of a file, and its content when
// it is at most maxContentScan bytes.
func hashFile(path string) (sum string, size int64, content []byte, err error) {
	f, err := os.Open(path)
	if err != nil {
		return "", 0, nil, err
	}
	defer f.Close()
	h := sha256.New()
	var buf bytes.Buffer
	r := bufio.NewReader(f)
	n, err := io.Copy(io.MultiWriter(h, &limitedBuffer{b: &buf, max: maxContentScan}), r)
	if err != nil {
		return "", 0, nil, err
	}
	if n <= maxContentScan {
		content = buf.Bytes()
	}
	return hex.EncodeToString(h.Sum(nil)), n, content, nil
}

type limitedBuffer struct {
	b   *bytes.Buffer
	max int
}

func (l *limitedBuffer) Write(p []byte) (int, error) {
	if room := l.max + 1 - l.b.Len(); room > 0 {
		l.b.Write(p[:min(len(p), room)])
	}
	return len(p), nil
}

// scanFile checks one regular file; it returns nil when the file is clean.
func scanFile(path string, blocklist map[string]bool) (*Detection, error) {
	fi, err := os.Lstat(path)
	if err != nil {
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		return nil, nil
	}
	sum, size, content, err := hashFile(path)
	if err != nil {
		return nil, err
	}
	switch {
	case content != nil && bytes.Contains(content, eicar()):
		return &Detection{Path: path, SHA256: sum, Size: size, Reason: "EICAR test file", EICAR: true}, nil
	case blocklist[sum]:
		return &Detection{Path: path, SHA256: sum, Size: size, Reason: "SHA-256 on the blocklist"}, nil
	}
	return nil, nil
}

// LoadBlocklist reads a file of SHA-256 hex digests, one a line; blank lines and
// lines starting with # are ignored.
func LoadBlocklist(path string) (map[string]bool, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	out := map[string]bool{}
	sc := bufio.NewScanner(f)
	for line := 1; sc.Scan(); line++ {
		s := strings.ToLower(strings.TrimSpace(sc.Text()))
		if s == "" || strings.HasPrefix(s, "#") {
			continue
		}
		if f := strings.Fields(s); len(f) > 0 {
			s = f[0] // "sha256  name" lines as sha256sum prints them
		}
		if b, err := hex.DecodeString(s); err != nil || len(b) != sha256.Size {
			return nil, fmt.Errorf("%s:%d: not a SHA-256 hex digest: %q", path, line, s)
		}
		out[s] = true
	}
	return out, sc.Err()
}
