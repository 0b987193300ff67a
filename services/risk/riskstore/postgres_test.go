package riskstore_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	_ "github.com/jackc/pgx/v5/stdlib" // the "pgx" driver for the probe connection

	"github.com/condaccess/condaccess/internal/eventlog"

	"github.com/condaccess/condaccess/internal/pgtest"
	"github.com/condaccess/condaccess/services/risk"
	"github.com/condaccess/condaccess/services/risk/riskgrpc"
	"github.com/condaccess/condaccess/services/risk/riskstore"
	"github.com/condaccess/condaccess/services/risk/riskstore/storetest"
)

func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }

func openPG(t *testing.T, url string) *riskstore.PGStore {
	t.Helper()
	s, err := riskstore.OpenPG(context.Background(), riskstore.PGOptions{URL: url})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func TestPostgresStore(t *testing.T) {
	storetest.Run(t, func(t *testing.T) risk.Store { return openPG(t, pgtest.URL(t)) })
}

// TestPostgresReplicas: two risk services on one schema report and resolve alerts
// of one device concurrently; every level change follows the one before it (no
// lost update between replicas), the final level is the one the active alerts
// imply, and a watcher on either replica sees the same gap-free events.
func TestPostgresReplicas(t *testing.T) {
	url := pgtest.URL(t)
	ctx := context.Background()
	stores := []*riskstore.PGStore{openPG(t, url), openPG(t, url)}
	svcs := []*risk.Service{
		risk.New(risk.Config{Store: stores[0], Encode: riskgrpc.EncodeEvent}),
		risk.New(risk.Config{Store: stores[1], Encode: riskgrpc.EncodeEvent}),
	}
	sevs := []risk.Severity{risk.SeverityLow, risk.SeverityMedium, risk.SeverityHigh}
	const workers, per = 6, 8
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			svc := svcs[w%2]
			for i := range per {
				id := fmt.Sprintf("a-%d-%d", w, i)
				if _, err := svc.ReportAlert(ctx, risk.Alert{ID: id, DeviceID: "dev", Severity: sevs[(w+i)%3], Title: id}); err != nil {
					t.Errorf("ReportAlert(%s): %v", id, err)
					return
				}
				if i%2 == 1 {
					if _, _, err := svcs[(w+1)%2].ResolveAlert(ctx, risk.Resolution{AlertID: id, Classification: 1}); err != nil {
						t.Errorf("ResolveAlert(%s): %v", id, err)
						return
					}
				}
			}
		}()
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	got, err := stores[1].DeviceRisk(ctx, "dev")
	if err != nil {
		t.Fatal(err)
	}
	if want := risk.LevelOf(got.Active); got.Level != want || len(got.Active) != workers*per/2 {
		t.Fatalf("level %v with %d active alerts, want %v with %d", got.Level, len(got.Active), want, workers*per/2)
	}
	hist, _, err := stores[0].RiskHistory(ctx, "dev", 1000, "")
	if err != nil || len(hist) == 0 {
		t.Fatalf("RiskHistory: %d, %v", len(hist), err)
	}
	for i := 0; i+1 < len(hist); i++ { // newest first
		if hist[i].PreviousLevel != hist[i+1].Level || hist[i].Level == hist[i].PreviousLevel {
			t.Fatalf("level change at revision %d (%v -> %v) does not follow the one at %d (-> %v)",
				hist[i].Revision, hist[i].PreviousLevel, hist[i].Level, hist[i+1].Revision, hist[i+1].Level)
		}
	}
	// The database's head (a listing reads it), not replica 0's own view, which may not
	// yet have seen replica 1's last commit.
	_, _, head, err := stores[0].ListDeviceRisks(ctx, risk.DeviceRiskQuery{PageSize: 1})
	if err != nil {
		t.Fatal(err)
	}
	for i, s := range stores {
		var revs []int64
		wctx, cancel := context.WithCancel(ctx)
		err := s.Watch(wctx, 0, func(e risk.StoredEvent) error { revs = append(revs, e.Revision); return nil },
			func(rev int64) error {
				if rev >= head {
					cancel()
				}
				return nil
			})
		cancel()
		if !errors.Is(err, context.Canceled) || int64(len(revs)) != head {
			t.Fatalf("replica %d: Watch = %v after %d events, want %d", i, err, len(revs), head)
		}
		for j, r := range revs {
			if r != int64(j+1) {
				t.Fatalf("replica %d: event %d has revision %d", i, j, r)
			}
		}
	}
}

// TestPostgresUpdatesSerializedAcrossReplicas: an Update that has read a device's
// level holds off another replica's Update of it until it commits, so the second
// reads the first's change instead of overwriting it from a stale read (a lost
// level change).
func TestPostgresUpdatesSerializedAcrossReplicas(t *testing.T) {
	url := pgtest.URL(t)
	ctx := context.Background()
	a, b := openPG(t, url), openPG(t, url)
	put := func(tx risk.Tx, level risk.Level) error {
		cur, _, err := tx.DeviceLevel(ctx, "dev")
		if err != nil {
			return err
		}
		rev, err := tx.Append(ctx, risk.StoredEvent{Type: risk.EventDeviceRiskChanged, Key: "dev"})
		if err != nil {
			return err
		}
		return tx.PutDeviceRisk(ctx, risk.DeviceRisk{DeviceID: "dev", Revision: rev, Level: level, PreviousLevel: cur.Level, UpdateTime: time.Now()})
	}
	read, commit := make(chan struct{}), make(chan struct{})
	aDone := make(chan error, 1)
	go func() {
		aDone <- a.Update(ctx, func(tx risk.Tx) error {
			if _, _, err := tx.DeviceLevel(ctx, "dev"); err != nil {
				return err
			}
			close(read)
			<-commit
			return put(tx, risk.LevelHigh)
		})
	}()
	<-read
	bDone := make(chan error, 1)
	go func() { bDone <- b.Update(ctx, func(tx risk.Tx) error { return put(tx, risk.LevelLow) }) }()
	// b waits on a lock (the event log's counter row) while a is open.
	probe, err := sql.Open("pgx", url)
	if err != nil {
		t.Fatal(err)
	}
	defer probe.Close()
	end := time.Now().Add(20 * time.Second)
	for {
		var n int
		if err := probe.QueryRowContext(ctx, `SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		if n == 1 {
			break
		}
		if time.Now().After(end) {
			t.Fatal("timeout waiting for the second replica's Update to wait for the first")
		}
		time.Sleep(5 * time.Millisecond)
	}
	select {
	case err := <-bDone:
		t.Fatalf("second replica's Update finished (%v) while the first was open", err)
	default:
	}
	close(commit)
	if err := <-aDone; err != nil {
		t.Fatal(err)
	}
	if err := <-bDone; err != nil {
		t.Fatal(err)
	}
	hist, _, err := a.RiskHistory(ctx, "dev", 10, "")
	if err != nil || len(hist) != 2 {
		t.Fatalf("RiskHistory = %d versions, %v; want 2", len(hist), err)
	}
	if hist[0].Level != risk.LevelLow || hist[0].PreviousLevel != risk.LevelHigh {
		t.Fatalf("second change %v -> %v, want HIGH -> LOW (it must read the first's level)", hist[0].PreviousLevel, hist[0].Level)
	}
}

// BenchmarkReportAlertPostgres is BenchmarkReportAlert on the PostgreSQL store (the
// test cluster runs with fsync off: compare with care).
func BenchmarkReportAlertPostgres(b *testing.B) {
	st, err := riskstore.OpenPG(context.Background(), riskstore.PGOptions{URL: pgtest.URL(b)})
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	benchReportAlert(b, st)
}

// TestPostgresListSeesOtherReplicasWrites: a listing on a replica that has not heard
// of another replica's commit (no NOTIFY, polling once an hour) still includes it:
// its revision is the database's head.
func TestPostgresListSeesOtherReplicasWrites(t *testing.T) {
	url := pgtest.URL(t)
	ctx := context.Background()
	a := openPG(t, url)
	b, err := riskstore.OpenPG(ctx, riskstore.PGOptions{URL: url, NoNotify: true, PollInterval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	svc := risk.New(risk.Config{Store: a, Encode: riskgrpc.EncodeEvent})
	if _, err := svc.ReportAlert(ctx, risk.Alert{ID: "a-1", DeviceID: "dev-1", Severity: risk.SeverityHigh, Title: "t"}); err != nil {
		t.Fatal(err)
	}
	got, _, rev, err := b.ListDeviceRisks(ctx, risk.DeviceRiskQuery{PageSize: 10})
	if err != nil {
		t.Fatal(err)
	}
	if rev != a.Revision() || len(got) != 1 || got[0].DeviceID != "dev-1" || got[0].Level != risk.LevelHigh || len(got[0].Active) != 1 {
		t.Fatalf("listing on the other replica = %+v at revision %d; want dev-1 HIGH with a-1 at %d", got, rev, a.Revision())
	}
}

// collectEvents watches s from start until it is caught up and returns what it got.
func collectEvents(t *testing.T, s risk.Store, start int64) ([]risk.StoredEvent, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var evs []risk.StoredEvent
	err := s.Watch(ctx, start, func(e risk.StoredEvent) error { evs = append(evs, e); return nil },
		func(int64) error { cancel(); return nil })
	if errors.Is(err, context.Canceled) {
		err = nil
	}
	return evs, err
}

// TestCopyToPG: an embedded store with compacted history copies into an empty
// PostgreSQL schema with the same revisions, alerts, levels and history; a watcher
// resuming at a retained revision gets the same events, one at a compacted revision
// OUT_OF_RANGE on both; the next report takes the next revision; a second copy into
// the now non-empty schema is refused and changes nothing.
func TestCopyToPG(t *testing.T) {
	ctx := context.Background()
	src, err := riskstore.Open(ctx, riskstore.Options{Path: filepath.Join(t.TempDir(), "risk.db"), Synchronous: "NORMAL", Retention: 6, CompactInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	svc := risk.New(risk.Config{Store: src, Encode: riskgrpc.EncodeEvent})
	for i, sev := range []risk.Severity{risk.SeverityHigh, risk.SeverityLow, risk.SeverityMedium, risk.SeverityInformational, risk.SeverityHigh} {
		if _, err := svc.ReportAlert(ctx, risk.Alert{ID: fmt.Sprint("a-", i), DeviceID: fmt.Sprint("dev-", i%2), Severity: sev, Title: "t"}); err != nil {
			t.Fatal(err)
		}
	}
	if _, _, err := svc.ResolveAlert(ctx, risk.Resolution{AlertID: "a-0", Classification: 1}); err != nil {
		t.Fatal(err)
	}
	if err := src.Compact(ctx); err != nil {
		t.Fatal(err)
	}
	head := src.Revision()
	from := head - 6 // the oldest retained start
	dst := openPG(t, pgtest.URL(t))
	counts, err := riskstore.CopyToPG(ctx, src, dst)
	if err != nil {
		t.Fatal(err)
	}
	if counts.Revision != head || counts.CompactedBefore != from || counts.Alerts != 5 || counts.Events != 6 || dst.Revision() != head {
		t.Fatalf("copied %+v, target revision %d; want revision %d, compacted before %d, 5 alerts, 6 events", counts, dst.Revision(), head, from)
	}

	type view struct {
		Alerts  []risk.Alert
		Devices []risk.DeviceRisk
		Rev     int64
		History []risk.DeviceRisk
		Dev0    risk.DeviceRisk
		Events  []risk.StoredEvent
	}
	read := func(s risk.Store) view {
		t.Helper()
		var v view
		var err error
		if v.Alerts, _, err = s.ListAlerts(ctx, risk.AlertQuery{PageSize: 100}); err != nil {
			t.Fatal(err)
		}
		if v.Devices, _, v.Rev, err = s.ListDeviceRisks(ctx, risk.DeviceRiskQuery{PageSize: 100}); err != nil {
			t.Fatal(err)
		}
		if v.History, _, err = s.RiskHistory(ctx, "dev-0", 100, ""); err != nil {
			t.Fatal(err)
		}
		if v.Dev0, err = s.DeviceRisk(ctx, "dev-0"); err != nil {
			t.Fatal(err)
		}
		if v.Events, err = collectEvents(t, s, from); err != nil {
			t.Fatal(err)
		}
		for i := range v.Events {
			v.Events[i].Time = v.Events[i].Time.UTC()
		}
		return v
	}
	want, got := read(src), read(dst)
	if diff := cmp.Diff(want, got); diff != "" || len(got.Events) != 6 {
		t.Fatalf("PostgreSQL differs from SQLite after the copy (-sqlite +postgres):\n%s", diff)
	}
	for _, s := range []risk.Store{src, dst} {
		if _, err := collectEvents(t, s, from-1); !errors.Is(err, eventlog.ErrCompacted) {
			t.Fatalf("watch from a compacted revision = %v, want ErrCompacted", err)
		}
	}

	// Attack row: a second copy into the non-empty schema.
	if _, err := riskstore.CopyToPG(ctx, src, dst); !errors.Is(err, riskstore.ErrTargetNotEmpty) {
		t.Fatalf("second copy = %v, want ErrTargetNotEmpty", err)
	}
	if again := read(dst); cmp.Diff(got, again) != "" {
		t.Fatal("a refused copy changed the target")
	}
	// The flow continues on PostgreSQL with the next revision.
	r, err := risk.New(risk.Config{Store: dst, Encode: riskgrpc.EncodeEvent}).ReportAlert(ctx, risk.Alert{ID: "a-new", DeviceID: "dev-0", Severity: risk.SeverityLow, Title: "t"})
	if err != nil || !r.Created {
		t.Fatalf("report after the copy: %+v, %v", r, err)
	}
	if evs, err := collectEvents(t, dst, head); err != nil || len(evs) == 0 || evs[0].Revision != head+1 {
		t.Fatalf("events after the copy: %+v, %v; want revision %d first", evs, err, head+1)
	}
}
