package riskstore

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/condaccess/condaccess/services/risk"
)

// An alert row's data column is the alert document, in one of two encodings told
// apart by its first byte:
//
//   - '{': JSON (encoding/json of risk.Alert), written by binaries before the binary
//     encoding; still read.
//   - alertBinaryV1: the binary encoding: every field in a fixed order, strings as
//     uvarint length then bytes, integers as varints, times as a presence byte then
//     Unix seconds (varint) and nanoseconds (uvarint); written before reporters were
//     recorded, still read (reporter unspecified).
//   - alertBinaryV2 (written now by encodeAlert): version 1's fields, then the
//     reporter's kind (varint) and id (string).
//
// Never change an encoding in place: add a version byte.
const (
	alertBinaryV1 = 0x01
	alertBinaryV2 = 0x02
)

// encodeAlert returns a's binary encoding.
func encodeAlert(a *risk.Alert) []byte {
	n := 64 + len(a.ID) + len(a.DeviceID) + len(a.Category) + len(a.Title) + len(a.Description) + len(a.DetectionSource) +
		len(a.ResolvedBy) + len(a.ResolutionNote) + len(a.AssignedTo) + len(a.InvestigationID) + len(a.Reporter.ID)
	for _, e := range a.Evidence {
		n += 16
		if f := e.File; f != nil {
			n += len(f.Path) + len(f.SHA256)
		}
		if p := e.Process; p != nil {
			n += len(p.Name) + len(p.CommandLine) + len(p.ImageSHA256)
		}
	}
	for _, c := range a.Comments {
		n += 24 + len(c.Author) + len(c.Text)
	}
	b := make([]byte, 0, n)
	str := func(s string) { b = append(binary.AppendUvarint(b, uint64(len(s))), s...) }
	num := func(v int64) { b = binary.AppendVarint(b, v) }
	tm := func(t time.Time) {
		if t.IsZero() {
			b = append(b, 0)
			return
		}
		b = append(b, 1)
		b = binary.AppendVarint(b, t.Unix())
		b = binary.AppendUvarint(b, uint64(t.Nanosecond()))
	}
	b = append(b, alertBinaryV2)
	str(a.ID)
	str(a.DeviceID)
	num(int64(a.Severity))
	num(int64(a.Status))
	str(a.Category)
	str(a.Title)
	str(a.Description)
	str(a.DetectionSource)
	tm(a.DetectTime)
	b = binary.AppendUvarint(b, uint64(len(a.Evidence)))
	for _, e := range a.Evidence {
		var kind byte
		if e.File != nil {
			kind |= 1
		}
		if e.Process != nil {
			kind |= 2
		}
		b = append(b, kind)
		if f := e.File; f != nil {
			str(f.Path)
			str(f.SHA256)
			num(f.SizeBytes)
		}
		if p := e.Process; p != nil {
			num(p.PID)
			str(p.Name)
			str(p.CommandLine)
			str(p.ImageSHA256)
		}
	}
	b = binary.AppendUvarint(b, uint64(len(a.Comments)))
	for _, c := range a.Comments {
		str(c.Author)
		str(c.Text)
		tm(c.CreateTime)
	}
	num(int64(a.Classification))
	num(int64(a.Determination))
	str(a.ResolvedBy)
	tm(a.ResolveTime)
	str(a.ResolutionNote)
	str(a.AssignedTo)
	tm(a.CreateTime)
	tm(a.UpdateTime)
	num(a.Version)
	str(a.InvestigationID)
	num(int64(a.Reporter.Kind))
	str(a.Reporter.ID)
	return b
}

var errCorrupt = errors.New("truncated or corrupt")

// decodeAlert decodes an alert document in either encoding.
func decodeAlert(data []byte) (risk.Alert, error) {
	var a risk.Alert
	if len(data) == 0 {
		return a, fmt.Errorf("riskstore: decode alert: empty")
	}
	switch data[0] {
	case '{':
		if err := json.Unmarshal(data, &a); err != nil {
			return risk.Alert{}, fmt.Errorf("riskstore: decode alert: %w", err)
		}
		return a, nil
	case alertBinaryV1, alertBinaryV2:
	default:
		return a, fmt.Errorf("riskstore: decode alert: unknown encoding %#x", data[0])
	}
	d := decoder{s: string(data[1:])}
	a.ID = d.str()
	a.DeviceID = d.str()
	a.Severity = risk.Severity(d.num())
	a.Status = risk.Status(d.num())
	a.Category = d.str()
	a.Title = d.str()
	a.Description = d.str()
	a.DetectionSource = d.str()
	a.DetectTime = d.time()
	if n := d.count(); n > 0 {
		a.Evidence = make([]risk.Evidence, n)
		for i := range a.Evidence {
			kind := d.byte()
			if kind&1 != 0 {
				a.Evidence[i].File = &risk.FileEvidence{Path: d.str(), SHA256: d.str(), SizeBytes: d.num()}
			}
			if kind&2 != 0 {
				a.Evidence[i].Process = &risk.ProcessEvidence{PID: d.num(), Name: d.str(), CommandLine: d.str(), ImageSHA256: d.str()}
			}
		}
	}
	if n := d.count(); n > 0 {
		a.Comments = make([]risk.Comment, n)
		for i := range a.Comments {
			a.Comments[i] = risk.Comment{Author: d.str(), Text: d.str(), CreateTime: d.time()}
		}
	}
	a.Classification = risk.Classification(d.num())
	a.Determination = risk.Determination(d.num())
	a.ResolvedBy = d.str()
	a.ResolveTime = d.time()
	a.ResolutionNote = d.str()
	a.AssignedTo = d.str()
	a.CreateTime = d.time()
	a.UpdateTime = d.time()
	a.Version = d.num()
	a.InvestigationID = d.str()
	if data[0] == alertBinaryV2 {
		a.Reporter.Kind = risk.ReporterKind(d.num())
		a.Reporter.ID = d.str()
	}
	if d.err || len(d.s) != 0 {
		return risk.Alert{}, fmt.Errorf("riskstore: decode alert: %w", errCorrupt)
	}
	return a, nil
}

// decoder reads encodeAlert's fields from one string (the strings it returns share
// it: one allocation per document rather than one per field); a read past the end or
// a malformed varint sets err and yields zero values from then on.
type decoder struct {
	s   string
	err bool
}

func (d *decoder) fail() { d.err, d.s = true, "" }

func (d *decoder) uvarint() uint64 {
	var v uint64
	for i := 0; i < len(d.s) && i < binary.MaxVarintLen64; i++ {
		c := d.s[i]
		if i == binary.MaxVarintLen64-1 && c > 1 {
			break // overflows 64 bits
		}
		v |= uint64(c&0x7f) << (7 * i)
		if c < 0x80 {
			d.s = d.s[i+1:]
			return v
		}
	}
	d.fail()
	return 0
}

func (d *decoder) num() int64 {
	u := d.uvarint()
	return int64(u>>1) ^ -int64(u&1) // zigzag, as binary.AppendVarint
}

func (d *decoder) byte() byte {
	if len(d.s) == 0 {
		d.fail()
		return 0
	}
	c := d.s[0]
	d.s = d.s[1:]
	return c
}

func (d *decoder) str() string {
	n := d.uvarint()
	if n > uint64(len(d.s)) {
		d.fail()
		return ""
	}
	s := d.s[:n]
	d.s = d.s[n:]
	return s
}

// count reads a slice length, bounded by the bytes left (each item takes at least one).
func (d *decoder) count() int {
	n := d.uvarint()
	if n > uint64(len(d.s)) {
		d.fail()
		return 0
	}
	return int(n)
}

func (d *decoder) time() time.Time {
	switch d.byte() {
	case 0:
		return time.Time{}
	case 1:
		s := d.num()
		ns := d.uvarint()
		if ns >= 1e9 {
			d.fail()
			return time.Time{}
		}
		return time.Unix(s, int64(ns)).UTC()
	}
	d.fail()
	return time.Time{}
}
