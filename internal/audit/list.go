package audit

import (
	"cmp"
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"
)

// Filter selects events; zero fields match everything.
type Filter struct {
	Subject      string
	ResourceType string
	ResourceID   string
	Method       string
	Start, End   time.Time // Start <= Time < End
}

// Position is where a page ended in the merged order (newest first; ties broken by
// source, then id, both descending).
type Position struct {
	TimeNS int64  `json:"t"`
	Source string `json:"s"`
	ID     int64  `json:"i"`
}

func (e Event) position() Position {
	return Position{TimeNS: e.Time.UnixNano(), Source: e.Source, ID: e.ID}
}

// compare orders positions newest first.
func compare(a, b Position) int {
	if c := cmp.Compare(b.TimeNS, a.TimeNS); c != 0 {
		return c
	}
	if c := cmp.Compare(b.Source, a.Source); c != 0 {
		return c
	}
	return cmp.Compare(b.ID, a.ID)
}

// Maximum and default page sizes of List.
const (
	DefaultPageSize = 100
	MaxPageSize     = 1000
)

// List returns up to limit events of logs, merged newest first, after the position
// after (nil: from the newest), and whether more follow.
func List(ctx context.Context, logs []*Log, f Filter, after *Position, limit int) ([]Event, bool, error) {
	if limit <= 0 {
		limit = DefaultPageSize
	}
	limit = min(limit, MaxPageSize)
	var all []Event
	for _, l := range logs {
		evs, err := l.list(ctx, f, after, limit+1)
		if err != nil {
			return nil, false, err
		}
		all = append(all, evs...)
	}
	slices.SortFunc(all, func(a, b Event) int { return compare(a.position(), b.position()) })
	if len(all) > limit {
		return all[:limit], true, nil
	}
	return all, false, nil
}

// list returns up to limit events of l matching f that come after the position after.
func (l *Log) list(ctx context.Context, f Filter, after *Position, limit int) ([]Event, error) {
	var where []string
	var args []any
	// arg adds v to the query's arguments and returns its placeholder.
	arg := func(v any) string {
		args = append(args, v)
		return l.placeholder(len(args))
	}
	if f.Subject != "" {
		where = append(where, "subject = "+arg(f.Subject))
	}
	if f.ResourceType != "" {
		where = append(where, "resource_type = "+arg(f.ResourceType))
	}
	if f.ResourceID != "" {
		where = append(where, "resource_id = "+arg(f.ResourceID))
	}
	if f.Method != "" {
		where = append(where, "method = "+arg(f.Method))
	}
	if !f.Start.IsZero() {
		where = append(where, "time_unix_nano >= "+arg(f.Start.UnixNano()))
	}
	if !f.End.IsZero() {
		where = append(where, "time_unix_nano < "+arg(f.End.UnixNano()))
	}
	if after != nil {
		// Newest first: strictly older, or as old and after in (source, id) descending.
		switch c := cmp.Compare(l.source, after.Source); {
		case c < 0:
			where = append(where, "time_unix_nano <= "+arg(after.TimeNS))
		case c > 0:
			where = append(where, "time_unix_nano < "+arg(after.TimeNS))
		default:
			where = append(where, "(time_unix_nano < "+arg(after.TimeNS)+" OR (time_unix_nano = "+arg(after.TimeNS)+" AND id < "+arg(after.ID)+"))")
		}
	}
	q := `SELECT id, time_unix_nano, subject, roles, method, peer, trace_id, action, resource_type, resource_id, before_json, after_json, etag FROM ` + l.t
	if len(where) > 0 {
		q += " WHERE " + strings.Join(where, " AND ")
	}
	q += " ORDER BY time_unix_nano DESC, id DESC LIMIT " + arg(limit)
	rows, err := l.read.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("audit: list %s: %w", l.source, err)
	}
	defer rows.Close()
	var out []Event
	for rows.Next() {
		e := Event{Source: l.source}
		var ns int64
		var roles string
		var before, afterJSON sql.RawBytes
		if err := rows.Scan(&e.ID, &ns, &e.Actor.Subject, &roles, &e.Actor.Method, &e.Actor.Peer, &e.Actor.TraceID,
			&e.Action, &e.ResourceType, &e.ResourceID, &before, &afterJSON, &e.Etag); err != nil {
			return nil, fmt.Errorf("audit: list %s: %w", l.source, err)
		}
		e.Time = time.Unix(0, ns)
		if roles != "" {
			e.Actor.Roles = strings.Split(roles, ",")
		}
		if before != nil {
			e.Before = append([]byte{}, before...)
		}
		if afterJSON != nil {
			e.After = append([]byte{}, afterJSON...)
		}
		out = append(out, e)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("audit: list %s: %w", l.source, err)
	}
	return out, nil
}

// ErrInvalidPageToken is returned by DecodePageToken for a token that is not one of
// EncodePageToken's, or was made for other filters.
var ErrInvalidPageToken = errors.New("audit: invalid page token")

type token struct {
	Position
	F string `json:"f"` // filter fingerprint
}

func fingerprint(f Filter) string {
	h := sha256.New()
	for _, s := range []string{f.Subject, f.ResourceType, f.ResourceID, f.Method} {
		var n [8]byte
		binary.BigEndian.PutUint64(n[:], uint64(len(s)))
		h.Write(n[:])
		h.Write([]byte(s))
	}
	var ts [16]byte
	if !f.Start.IsZero() {
		binary.BigEndian.PutUint64(ts[:8], uint64(f.Start.UnixNano()))
	}
	if !f.End.IsZero() {
		binary.BigEndian.PutUint64(ts[8:], uint64(f.End.UnixNano()))
	}
	h.Write(ts[:])
	return base64.RawURLEncoding.EncodeToString(h.Sum(nil)[:12])
}

// EncodePageToken returns the opaque token of the page after p for the filters f.
func EncodePageToken(f Filter, p Position) string {
	b, _ := json.Marshal(token{Position: p, F: fingerprint(f)})
	return base64.RawURLEncoding.EncodeToString(b)
}

// DecodePageToken returns the position in tok ("" gives nil); it fails with
// ErrInvalidPageToken for a malformed token or one made for other filters.
func DecodePageToken(f Filter, tok string) (*Position, error) {
	if tok == "" {
		return nil, nil
	}
	b, err := base64.RawURLEncoding.DecodeString(tok)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalidPageToken, err)
	}
	var t token
	if err := json.Unmarshal(b, &t); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalidPageToken, err)
	}
	if t.F != fingerprint(f) {
		return nil, fmt.Errorf("%w: it was made for other filters", ErrInvalidPageToken)
	}
	if t.ID <= 0 || t.Source == "" {
		return nil, fmt.Errorf("%w: no position", ErrInvalidPageToken)
	}
	return &t.Position, nil
}

// NextPageToken returns the token for the page after evs ("" when more is false).
func NextPageToken(f Filter, evs []Event, more bool) string {
	if !more || len(evs) == 0 {
		return ""
	}
	return EncodePageToken(f, evs[len(evs)-1].position())
}
