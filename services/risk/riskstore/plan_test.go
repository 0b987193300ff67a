package riskstore

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/condaccess/condaccess/internal/sqlitedb"
	"github.com/condaccess/condaccess/services/risk"
	"github.com/condaccess/condaccess/services/risk/riskgrpc"
)

// TestActiveQueriesUseCoveringIndex: the queries of active alerts read
// alerts_by_device alone (no table lookup per alert).
func TestActiveQueriesUseCoveringIndex(t *testing.T) {
	ctx := context.Background()
	s, err := Open(ctx, Options{Path: filepath.Join(t.TempDir(), "risk.db"), Synchronous: "NORMAL"})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for _, tt := range []struct {
		name  string
		query string
		args  []any
	}{
		{"activeNow", qActiveNow, []any{"d"}},
		{"DeviceRisk", qDeviceRisk, []any{"d"}},
		{"DeviceLevel", qLevelAndActive, []any{"d"}},
		{"ListDeviceRisks", qActiveAsOf([]string{"?2", "?3"}), []any{int64(5), "d1", "d2"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			rows, err := s.db.Read().QueryContext(ctx, "EXPLAIN QUERY PLAN "+tt.query, tt.args...)
			if err != nil {
				t.Fatal(err)
			}
			defer rows.Close()
			var plan []string
			for rows.Next() {
				var id, parent, notused int
				var detail string
				if err := rows.Scan(&id, &parent, &notused, &detail); err != nil {
					t.Fatal(err)
				}
				plan = append(plan, detail)
			}
			if err := rows.Err(); err != nil {
				t.Fatal(err)
			}
			found := false
			for _, d := range plan {
				if strings.HasPrefix(d, "SEARCH alerts ") || strings.HasPrefix(d, "SEARCH a ") || strings.HasPrefix(d, "SCAN alerts") || strings.HasPrefix(d, "SCAN a ") {
					if !strings.Contains(d, "COVERING INDEX alerts_by_device") {
						t.Errorf("alerts read with %q, want the covering index alerts_by_device", d)
					}
					found = true
				}
			}
			if !found {
				t.Errorf("plan %q does not read alerts", plan)
			}
		})
	}
}

// newReporter returns a function that reports k new alerts in one ReportAlerts
// call: random-looking ids, spread over benchDevices devices.
func newReporter(ctx context.Context, b *testing.B, st *Store) func(k int) {
	svc := risk.New(risk.Config{Store: st, Encode: riskgrpc.EncodeEvent})
	n := 0
	return func(k int) {
		as := make([]risk.Alert, k)
		for i := range as {
			n++
			as[i] = risk.Alert{ID: fmt.Sprint("a-", n*7919%1000003), DeviceID: fmt.Sprint("dev-", n*31%10000),
				Severity: risk.Severity(2 + n%3), Title: "t", Evidence: []risk.Evidence{{File: &risk.FileEvidence{Path: "/x"}}}}
		}
		if _, err := svc.ReportAlerts(ctx, as); err != nil {
			b.Fatal(err)
		}
	}
}

// preload reports the 20,000 alerts the write benchmarks start from.
func preload(report func(k int)) {
	for range 1000 {
		report(20)
	}
}

// BenchmarkWALFrames reports the WAL frames (pages) a durable commit of a group of
// new alerts writes, per alert (a figure the machine's load does not move): each
// frame is a page written, checksummed and later checkpointed. One op is one group
// (ReportAlerts of group alerts) on a store already holding 20,000 alerts over
// benchDevices devices; alert ids are random, as sensors' are.
func BenchmarkWALFrames(b *testing.B) {
	for _, group := range []int{1, 10, 50} {
		b.Run(fmt.Sprintf("group=%d", group), func(b *testing.B) {
			ctx := context.Background()
			path := filepath.Join(b.TempDir(), "risk.db")
			st, err := Open(ctx, Options{Path: path})
			if err != nil {
				b.Fatal(err)
			}
			defer st.Close()
			// No checkpoints, so the WAL only grows.
			if err := st.db.Write(ctx, func(tx *sqlitedb.Tx) error {
				_, err := tx.ExecContext(ctx, "PRAGMA wal_autocheckpoint = 0")
				return err
			}); err != nil {
				b.Fatal(err)
			}
			report := newReporter(ctx, b, st)
			walSize := func() int64 {
				fi, err := os.Stat(path + "-wal")
				if err != nil {
					b.Fatal(err)
				}
				return fi.Size()
			}
			preload(report)
			before := walSize()
			b.ResetTimer()
			for range b.N {
				report(group)
			}
			b.StopTimer()
			const frame = 4096 + 24 // page and frame header
			b.ReportMetric(float64(walSize()-before)/frame/float64(b.N*group), "frames/alert")
		})
	}
}

// writtenBytes is this process's bytes written through write syscalls (Linux).
func writtenBytes(b *testing.B) int64 {
	data, err := os.ReadFile("/proc/self/io")
	if err != nil {
		b.Skipf("no /proc/self/io: %v", err)
	}
	for _, l := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(l, "wchar: "); ok {
			n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
			if err != nil {
				b.Fatal(err)
			}
			return n
		}
	}
	b.Skip("no wchar in /proc/self/io")
	return 0
}

// BenchmarkBytesWritten reports the bytes written per durable alert with the store's
// own settings (checkpoints included): WAL frames and the pages checkpoints copy into
// the database. One op is one group (ReportAlerts of group alerts), after 20,000
// alerts over benchDevices devices; random alert ids. Use a fixed count large enough
// to span several checkpoints, e.g. -benchtime 2000x.
func BenchmarkBytesWritten(b *testing.B) {
	for _, group := range []int{10, 50} {
		b.Run(fmt.Sprintf("group=%d", group), func(b *testing.B) {
			ctx := context.Background()
			st, err := Open(ctx, Options{Path: filepath.Join(b.TempDir(), "risk.db")})
			if err != nil {
				b.Fatal(err)
			}
			defer st.Close()
			report := newReporter(ctx, b, st)
			preload(report)
			w0 := writtenBytes(b)
			b.ResetTimer()
			for range b.N {
				report(group)
			}
			b.StopTimer()
			b.ReportMetric(float64(writtenBytes(b)-w0)/1024/float64(b.N*group), "KiB/alert")
		})
	}
}
