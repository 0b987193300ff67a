package risk

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strings"
)

// The content hash identifies the reported content of an alert (the fields a sensor
// sets, the id excepted) for ReportAlert's idempotency check: the same id with the
// same hash is a repeat, with another hash a conflict. Stored hashes outlive the
// binary that wrote them, so the format is versioned:
//
//   - version 2 (written now): "2:" + hex(SHA-256(canonical binary encoding)), see
//     appendContent;
//   - version 1 (written before): hex(SHA-256(JSON of the content)), no prefix, see
//     contentHashV1. A stored version 1 hash is compared by recomputing version 1.
//
// Never change an encoding in place: add a version.
const hashV2Prefix = "2:"

// contentHash returns the current (version 2) content hash.
func contentHash(a *Alert) string {
	var arr [512]byte
	sum := sha256.Sum256(appendContent(arr[:0], a))
	var out [len(hashV2Prefix) + 2*sha256.Size]byte
	copy(out[:], hashV2Prefix)
	hex.Encode(out[len(hashV2Prefix):], sum[:])
	return string(out[:])
}

// appendContent appends the canonical encoding of a's reported content: each string
// as uvarint length then bytes, each integer as varint, in a fixed field order,
// evidence as a count then per item a kind byte (0 neither, 1 file, 2 process) and
// that kind's fields. It is injective, so equal encodings mean equal content.
func appendContent(b []byte, a *Alert) []byte {
	str := func(b []byte, s string) []byte {
		return append(binary.AppendUvarint(b, uint64(len(s))), s...)
	}
	b = str(b, a.DeviceID)
	b = str(b, a.Title)
	b = str(b, a.Category)
	b = str(b, a.Description)
	b = str(b, a.DetectionSource)
	b = str(b, a.AssignedTo)
	b = binary.AppendVarint(b, int64(a.Severity))
	var detect int64
	if !a.DetectTime.IsZero() {
		detect = a.DetectTime.UnixNano()
	}
	b = binary.AppendVarint(b, detect)
	b = binary.AppendUvarint(b, uint64(len(a.Evidence)))
	for _, e := range a.Evidence {
		var kind byte
		switch {
		case e.File != nil && e.Process != nil:
			kind = 3 // refused by validateAlert; encoded anyway, unambiguously
		case e.File != nil:
			kind = 1
		case e.Process != nil:
			kind = 2
		}
		b = append(b, kind)
		if f := e.File; f != nil {
			b = str(b, f.Path)
			b = str(b, f.SHA256)
			b = binary.AppendVarint(b, f.SizeBytes)
		}
		if p := e.Process; p != nil {
			b = binary.AppendVarint(b, p.PID)
			b = str(b, p.Name)
			b = str(b, p.CommandLine)
			b = str(b, p.ImageSHA256)
		}
	}
	return b
}

// contentHashV1 is the version 1 hash, as binaries before version 2 stored it.
func contentHashV1(a *Alert) (string, error) {
	var detect int64
	if !a.DetectTime.IsZero() {
		detect = a.DetectTime.UnixNano()
	}
	b, err := json.Marshal(struct {
		D, T, C, De, S, As string
		Sev                Severity
		At                 int64
		E                  []Evidence
	}{a.DeviceID, a.Title, a.Category, a.Description, a.DetectionSource, a.AssignedTo, a.Severity, detect, a.Evidence})
	if err != nil {
		return "", fmt.Errorf("risk: content hash: %w", err)
	}
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:]), nil
}

// sameContent reports whether stored, the hash kept with an alert, is the hash of
// content (whose current hash is hash), whatever version stored is.
func sameContent(stored string, content *Alert, hash string) (bool, error) {
	switch {
	case stored == hash:
		return true, nil
	case strings.HasPrefix(stored, hashV2Prefix):
		return false, nil
	}
	v1, err := contentHashV1(content)
	if err != nil {
		return false, err
	}
	return stored == v1, nil
}
