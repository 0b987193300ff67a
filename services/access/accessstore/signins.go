package accessstore

import (
	"context"
	"database/sql"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"strconv"
	"sync"
	"time"

	"github.com/condaccess/condaccess/internal/dbtx"
	"github.com/condaccess/condaccess/services/access"
)

// The sign-in log.
//
// A sign-in's key is its time in Unix nanoseconds, made strictly increasing across the
// log (it is also its id, "si-" + base 36). The recorder writes a batch of sign-ins per
// store write (every decision, ~20 ms of them); the batch is stored as ONE row of
// signin_batches: the first and last keys, the count, a Bloom filter of the batch's
// user, device and application ids, and the sign-ins encoded back to back in key order
// (uvarint key delta, uvarint decision, then length-prefixed user, device, application,
// trace id and detail). Writing a sign-in is then an append to a compact blob: no B-tree
// insert per sign-in, no index page dirtied at random (the previous layout, one row per
// sign-in plus (user, key) and (device, key) indexes, cost three B-tree inserts and
// about two random index pages per sign-in).
//
// ListSignIns scans the batches newest first (by key, the table's order), skips those
// whose Bloom filter rules out the user, device or application filter, decodes the
// others and applies every filter (user, device, application, decision, time) exactly.
// One call looks at no more than maxHeadScan batches: past that it returns what it found
// (possibly nothing) with a page token that resumes the scan.
// DeleteSignInsBefore deletes whole batches and rewrites the one that straddles the
// cut, so retention is exact.
const signInBatchesMigration = `
CREATE TABLE signin_batches (
	first_key INTEGER PRIMARY KEY,
	last_key INTEGER NOT NULL,
	n INTEGER NOT NULL,
	filter BLOB NOT NULL,
	body BLOB NOT NULL
);
DROP INDEX signins_user;
DROP INDEX signins_device;
`

func signInID(key int64) string { return access.SignInID(key) }

// Bloom filter of a batch: about 10 bits per id, 4 probes (~1-2% false positives).
const (
	bloomBitsPerID = 10
	bloomProbes    = 4
)

// Id kinds in the filter.
const (
	kindUser   = 'u'
	kindDevice = 'd'
	kindApp    = 'a'
)

// idHash is FNV-1a over the kind and the id (stable across processes: it is stored).
func idHash(kind byte, id string) uint64 {
	h := uint64(14695981039346656037)
	h ^= uint64(kind)
	h *= 1099511628211
	for i := 0; i < len(id); i++ {
		h ^= uint64(id[i])
		h *= 1099511628211
	}
	return h
}

func bloomAdd(f []byte, h uint64) {
	m := uint64(len(f)) * 8
	h1, h2 := h, h>>33|1
	for i := range uint64(bloomProbes) {
		b := (h1 + i*h2) % m
		f[b>>3] |= 1 << (b & 7)
	}
}

func bloomHas(f []byte, h uint64) bool {
	m := uint64(len(f)) * 8
	if m == 0 {
		return true
	}
	h1, h2 := h, h>>33|1
	for i := range uint64(bloomProbes) {
		b := (h1 + i*h2) % m
		if f[b>>3]&(1<<(b&7)) == 0 {
			return false
		}
	}
	return true
}

// batchBuf is the reusable encoding buffer of a batch.
type batchBuf struct {
	body, filter []byte
}

var batchBufs = sync.Pool{New: func() any { return new(batchBuf) }}

// encodeBatch encodes sign-ins (keys already assigned, increasing) into b.
func (b *batchBuf) encode(signIns []*access.SignIn, keys []int64) {
	nb := (len(signIns)*3*bloomBitsPerID + 63) / 64 * 8
	if cap(b.filter) < nb {
		b.filter = make([]byte, nb)
	}
	b.filter = b.filter[:nb]
	clear(b.filter)
	b.body = b.body[:0]
	prev := keys[0]
	for i, si := range signIns {
		b.body = binary.AppendUvarint(b.body, uint64(keys[i]-prev))
		prev = keys[i]
		// The decision's varint also carries the proofs (bits 8-15 user, 16-23
		// device; 0 in batches written before proofs were recorded).
		b.body = binary.AppendUvarint(b.body, uint64(si.Decision)|uint64(si.UserProof)<<8|uint64(si.DeviceProof)<<16)
		b.body = appendStr(b.body, si.UserID)
		b.body = appendStr(b.body, si.DeviceID)
		b.body = appendStr(b.body, si.AppID)
		b.body = appendStr(b.body, si.TraceID)
		b.body = binary.AppendUvarint(b.body, uint64(len(si.Detail)))
		b.body = append(b.body, si.Detail...)
		bloomAdd(b.filter, idHash(kindUser, si.UserID))
		bloomAdd(b.filter, idHash(kindDevice, si.DeviceID))
		bloomAdd(b.filter, idHash(kindApp, si.AppID))
	}
}

func appendStr(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

// entry is a decoded sign-in; its byte fields alias the batch body.
type entry struct {
	key                              int64
	decision                         access.Decision
	userProof, deviceProof           access.Proof
	user, device, app, trace, detail []byte
}

var errCorrupt = errors.New("accessstore: corrupt sign-in batch")

// decodeBatch appends the batch's entries, in key order, to dst.
func decodeBatch(dst []entry, first int64, body []byte) ([]entry, error) {
	key := first
	uv := func() (uint64, bool) {
		v, n := binary.Uvarint(body)
		if n <= 0 {
			return 0, false
		}
		body = body[n:]
		return v, true
	}
	bytes := func() ([]byte, bool) {
		n, ok := uv()
		if !ok || n > uint64(len(body)) {
			return nil, false
		}
		b := body[:n:n]
		body = body[n:]
		return b, true
	}
	for len(body) > 0 {
		var e entry
		d, ok1 := uv()
		dec, ok2 := uv()
		if !ok1 || !ok2 {
			return dst, errCorrupt
		}
		key += int64(d)
		e.key, e.decision = key, access.Decision(dec&0xff)
		e.userProof, e.deviceProof = access.Proof(dec>>8), access.Proof(dec>>16)
		var ok [5]bool
		e.user, ok[0] = bytes()
		e.device, ok[1] = bytes()
		e.app, ok[2] = bytes()
		e.trace, ok[3] = bytes()
		e.detail, ok[4] = bytes()
		if ok != [5]bool{true, true, true, true, true} {
			return dst, errCorrupt
		}
		dst = append(dst, e)
	}
	return dst, nil
}

func (e *entry) signIn() *access.SignIn {
	return &access.SignIn{ID: signInID(e.key), Time: time.Unix(0, e.key).UTC(), UserID: string(e.user), DeviceID: string(e.device),
		AppID: string(e.app), Decision: e.decision, TraceID: string(e.trace), Detail: e.detail, UserProof: e.userProof, DeviceProof: e.deviceProof}
}

// lastSignInKey is the newest sign-in's key (0 when none).
func lastSignInKey(ctx context.Context, tx dbtx.Tx) (int64, error) {
	var last int64
	err := tx.QueryRowContext(ctx, `SELECT last_key FROM signin_batches ORDER BY first_key DESC LIMIT 1`).Scan(&last)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, nil
	}
	return last, err
}

// writeSignIns stores signIns as one batch, setting their IDs and times.
func writeSignIns(ctx context.Context, tx dbtx.Tx, signIns []*access.SignIn) error {
	if len(signIns) == 0 {
		return nil
	}
	last, err := lastSignInKey(ctx, tx)
	if err != nil {
		return err
	}
	keys := make([]int64, len(signIns))
	for i, si := range signIns {
		k := max(last+1, si.Time.UnixNano())
		if si.Key > last {
			k = si.Key // assigned by the Recorder (its ID is already known)
		}
		last, keys[i] = k, k
	}
	return insertBatch(ctx, tx, signIns, keys, func() {
		for i, si := range signIns {
			si.ID, si.Time = signInID(keys[i]), time.Unix(0, keys[i]).UTC()
		}
	})
}

// insertBatch inserts one batch row; set runs when the insert succeeded.
func insertBatch(ctx context.Context, tx dbtx.Tx, signIns []*access.SignIn, keys []int64, set func()) error {
	b := batchBufs.Get().(*batchBuf)
	defer batchBufs.Put(b)
	b.encode(signIns, keys)
	if _, err := tx.ExecContext(ctx, `INSERT INTO signin_batches (first_key, last_key, n, filter, body) VALUES (?,?,?,?,?)`,
		keys[0], keys[len(keys)-1], len(keys), b.filter, b.body); err != nil {
		return err
	}
	if set != nil {
		set()
	}
	return nil
}

// batchHead is a batch row without its body.
type batchHead struct {
	first int64
	n     int64
}

// ListSignIns implements access.Store: newest first.
func (s *Store) ListSignIns(ctx context.Context, f access.SignInFilter, token string, limit int) ([]*access.SignIn, string, error) {
	p, err := decToken(token, 1)
	if err != nil {
		return nil, "", err
	}
	ub, lb := int64(math.MaxInt64), int64(math.MinInt64) // keys in [lb, ub)
	if p != nil {
		key, err := strconv.ParseInt(p[0], 10, 64)
		if err != nil {
			return nil, "", fmt.Errorf("%w: malformed page_token", access.ErrInvalid)
		}
		ub = key
	}
	if !f.Before.IsZero() {
		ub = min(ub, f.Before.UnixNano())
	}
	if !f.After.IsZero() {
		lb = f.After.UnixNano()
	}
	var probes []uint64
	if f.UserID != "" {
		probes = append(probes, idHash(kindUser, f.UserID))
	}
	if f.DeviceID != "" {
		probes = append(probes, idHash(kindDevice, f.DeviceID))
	}
	if f.AppID != "" {
		probes = append(probes, idHash(kindApp, f.AppID))
	}
	match := func(e *entry) bool {
		return e.key < ub && e.key >= lb &&
			(f.UserID == "" || string(e.user) == f.UserID) &&
			(f.DeviceID == "" || string(e.device) == f.DeviceID) &&
			(f.AppID == "" || string(e.app) == f.AppID) &&
			(f.Decision == 0 || e.decision == f.Decision) &&
			(f.UserProof == 0 || e.userProof == f.UserProof) &&
			(f.DeviceProof == 0 || e.deviceProof == f.DeviceProof)
	}

	// One read transaction: one snapshot for the headers and the bodies.
	tx, done, err := s.readTx(ctx)
	if err != nil {
		return nil, "", err
	}
	defer done()
	var out []*access.SignIn
	var entries []entry
	var heads []batchHead
	cursor := ub // batches with first_key < cursor are left to scan
	const headChunk = 64
	scannedTotal := 0
	for {
		heads = heads[:0]
		rows, err := tx.QueryContext(ctx, `SELECT first_key, n, filter FROM signin_batches WHERE first_key < ? AND last_key >= ? ORDER BY first_key DESC LIMIT ?`,
			cursor, lb, headChunk)
		if err != nil {
			return nil, "", err
		}
		var filter []byte
		scanned := 0
		for rows.Next() {
			scanned++
			var h batchHead
			if err := rows.Scan(&h.first, &h.n, &filter); err != nil {
				rows.Close()
				return nil, "", err
			}
			cursor = h.first
			ok := true
			for _, pr := range probes {
				if !bloomHas(filter, pr) {
					ok = false
					break
				}
			}
			if ok {
				heads = append(heads, h)
			}
		}
		if err := rows.Close(); err != nil {
			return nil, "", err
		}
		more := scanned == headChunk
		scannedTotal += scanned
		for _, h := range heads {
			var body []byte
			if err := tx.QueryRowContext(ctx, `SELECT body FROM signin_batches WHERE first_key = ?`, h.first).Scan(&body); err != nil {
				return nil, "", err
			}
			if entries, err = decodeBatch(entries[:0], h.first, body); err != nil {
				return nil, "", fmt.Errorf("%w (batch %d)", err, h.first)
			}
			for i := len(entries) - 1; i >= 0; i-- {
				e := &entries[i]
				if !match(e) {
					continue
				}
				if len(out) == limit {
					return out, encToken(strconv.FormatInt(keyOf(out[limit-1]), 10)), nil
				}
				out = append(out, e.signIn())
			}
		}
		if !more {
			return out, "", nil
		}
		if scannedTotal >= maxHeadScan {
			// Bounded work per call: a filter that matches rarely does not scan the whole
			// log in one call. The page may be short (even empty); the token resumes below
			// the last batch scanned (AIP-158).
			return out, encToken(strconv.FormatInt(cursor, 10)), nil
		}
	}
}

// maxHeadScan bounds the batches one ListSignIns call looks at (a variable for tests).
var maxHeadScan = 2048

func keyOf(si *access.SignIn) int64 { return si.Time.UnixNano() }

// DeleteSignInsBefore implements access.Store. It deletes at most 64 batches per write
// so that the single writer is never held for long (decisions' sign-ins and the
// compliance feed keep flowing); the batch that straddles t is rewritten without its
// older sign-ins.
func (s *Store) DeleteSignInsBefore(ctx context.Context, t time.Time) (int64, error) {
	cut := t.UnixNano()
	var total int64
	for {
		var n int64
		done := false
		err := s.write(ctx, func(tx dbtx.Tx) error {
			n, done = 0, false
			rows, err := tx.QueryContext(ctx, `SELECT first_key, last_key, n FROM signin_batches WHERE first_key < ? ORDER BY first_key LIMIT 64`, cut)
			if err != nil {
				return err
			}
			var whole []batchHead
			straddle := int64(-1)
			for rows.Next() {
				var h batchHead
				var last int64
				if err := rows.Scan(&h.first, &last, &h.n); err != nil {
					rows.Close()
					return err
				}
				if last < cut {
					whole = append(whole, h)
					continue
				}
				straddle = h.first // keys are ordered: every later batch is newer
				break
			}
			if err := rows.Close(); err != nil {
				return err
			}
			if len(whole) > 0 {
				if _, err := tx.ExecContext(ctx, `DELETE FROM signin_batches WHERE first_key <= ?`, whole[len(whole)-1].first); err != nil {
					return err
				}
				for _, h := range whole {
					n += h.n
				}
				if len(whole) == 64 {
					return nil
				}
			}
			done = true
			if straddle < 0 {
				return nil
			}
			k, err := s.trimBatch(ctx, tx, straddle, cut)
			n += k
			return err
		})
		total += n
		if err != nil || done {
			return total, err
		}
	}
}

// trimBatch rewrites batch first without its sign-ins older than cut; it returns how
// many it removed.
func (s *Store) trimBatch(ctx context.Context, tx dbtx.Tx, first, cut int64) (int64, error) {
	var body []byte
	if err := tx.QueryRowContext(ctx, `SELECT body FROM signin_batches WHERE first_key = ?`, first).Scan(&body); err != nil {
		return 0, err
	}
	entries, err := decodeBatch(nil, first, body)
	if err != nil {
		return 0, fmt.Errorf("%w (batch %d)", err, first)
	}
	var keep []*access.SignIn
	var keys []int64
	for i := range entries {
		if e := &entries[i]; e.key >= cut {
			keep = append(keep, e.signIn())
			keys = append(keys, e.key)
		}
	}
	if _, err := tx.ExecContext(ctx, `DELETE FROM signin_batches WHERE first_key = ?`, first); err != nil {
		return 0, err
	}
	if len(keep) > 0 {
		if err := insertBatch(ctx, tx, keep, keys, nil); err != nil {
			return 0, err
		}
	}
	return int64(len(entries) - len(keep)), nil
}

// convertLegacySignIns moves the sign-ins of the previous layout (one row per sign-in
// in signins) into batches, 4096 per write, keeping their keys.
func (s *Store) convertLegacySignIns(ctx context.Context) error {
	for {
		moved := 0
		err := s.write(ctx, func(tx dbtx.Tx) error {
			moved = 0
			rows, err := tx.QueryContext(ctx, `SELECT key, user_id, device_id, app_id, decision, trace_id, detail FROM signins ORDER BY key LIMIT 4096`)
			if err != nil {
				return err
			}
			var signIns []*access.SignIn
			var keys []int64
			for rows.Next() {
				var si access.SignIn
				var k int64
				if err := rows.Scan(&k, &si.UserID, &si.DeviceID, &si.AppID, &si.Decision, &si.TraceID, &si.Detail); err != nil {
					rows.Close()
					return err
				}
				signIns, keys = append(signIns, &si), append(keys, k)
			}
			if err := rows.Close(); err != nil {
				return err
			}
			if len(signIns) == 0 {
				return nil
			}
			moved = len(signIns)
			if err := insertBatch(ctx, tx, signIns, keys, nil); err != nil {
				return err
			}
			_, err = tx.ExecContext(ctx, `DELETE FROM signins WHERE key <= ?`, keys[len(keys)-1])
			return err
		})
		if err != nil {
			return fmt.Errorf("accessstore: converting sign-ins: %w", err)
		}
		if moved == 0 {
			return nil
		}
	}
}
