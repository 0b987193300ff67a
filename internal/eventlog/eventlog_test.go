package eventlog_test

import (
	"context"
	"errors"
	"path/filepath"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/condaccess/condaccess/internal/eventlog"
	"github.com/condaccess/condaccess/internal/sqlitedb"
)

const deadline = 20 * time.Second

func openDB(t *testing.T, path string) *sqlitedb.DB {
	t.Helper()
	db, err := sqlitedb.Open(context.Background(), sqlitedb.Options{
		Path:       path,
		Migrations: append([]string{`CREATE TABLE state (k TEXT PRIMARY KEY, v INTEGER NOT NULL)`}, eventlog.Migrations("")...),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

func newLog(t *testing.T, db *sqlitedb.DB, opts eventlog.Options) *eventlog.Log {
	t.Helper()
	l, err := eventlog.New(context.Background(), db, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

func setup(t *testing.T, opts eventlog.Options) (*sqlitedb.DB, *eventlog.Log) {
	db := openDB(t, filepath.Join(t.TempDir(), "db.sqlite"))
	return db, newLog(t, db, opts)
}

// appendEvent writes a state row and its event in one transaction.
func appendEvent(ctx context.Context, db *sqlitedb.DB, l *eventlog.Log, key string) (int64, error) {
	var rev int64
	err := db.Write(ctx, func(tx *sqlitedb.Tx) error {
		if _, err := tx.ExecContext(ctx, `INSERT INTO state (k, v) VALUES (?, 1) ON CONFLICT (k) DO UPDATE SET v = v + 1`, key); err != nil {
			return err
		}
		var err error
		rev, err = l.Append(tx, eventlog.Event{Type: "t", Key: key, Payload: []byte(key)})
		return err
	})
	return rev, err
}

// watcher runs Watch in a goroutine and forwards what it sees.
type watcher struct {
	events   chan eventlog.Event
	progress chan int64
	done     chan error
	cancel   context.CancelFunc
}

func watch(t *testing.T, l *eventlog.Log, start int64) *watcher {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	w := &watcher{events: make(chan eventlog.Event, 100000), progress: make(chan int64, 100000), done: make(chan error, 1), cancel: cancel}
	go func() {
		w.done <- l.Watch(ctx, start,
			func(e eventlog.Event) error { w.events <- e; return nil },
			func(rev int64) error { w.progress <- rev; return nil })
	}()
	t.Cleanup(cancel)
	return w
}

// collect waits for n events and checks they are exactly after+1..after+n.
func (w *watcher) collect(t *testing.T, after int64, n int) []eventlog.Event {
	t.Helper()
	timer := time.NewTimer(deadline)
	defer timer.Stop()
	var got []eventlog.Event
	for len(got) < n {
		select {
		case e := <-w.events:
			if want := after + int64(len(got)) + 1; e.Revision != want {
				t.Fatalf("event %d: revision %d, want %d", len(got), e.Revision, want)
			}
			got = append(got, e)
		case err := <-w.done:
			t.Fatalf("Watch ended after %d/%d events: %v", len(got), n, err)
		case <-timer.C:
			t.Fatalf("timeout: %d/%d events", len(got), n)
		}
	}
	return got
}

func (w *watcher) waitProgress(t *testing.T, want int64) {
	t.Helper()
	timer := time.NewTimer(deadline)
	defer timer.Stop()
	for {
		select {
		case rev := <-w.progress:
			if rev == want {
				return
			}
		case err := <-w.done:
			t.Fatalf("Watch ended: %v", err)
		case <-timer.C:
			t.Fatalf("timeout waiting for progress %d", want)
		}
	}
}

func (w *watcher) wait(t *testing.T) error {
	t.Helper()
	select {
	case err := <-w.done:
		return err
	case <-time.After(deadline):
		t.Fatal("timeout waiting for Watch to return")
		return nil
	}
}

func TestSlowWatcherCutOffWithoutSlowingWriters(t *testing.T) {
	db, l := setup(t, eventlog.Options{SubscriberBuffer: 8})
	ctx := context.Background()
	release := make(chan struct{})
	entered := make(chan struct{}, 1)
	ready := make(chan struct{}, 1)
	done := make(chan error, 1)
	go func() {
		done <- l.Watch(ctx, 0,
			func(e eventlog.Event) error {
				select {
				case entered <- struct{}{}:
				default:
				}
				<-release // a stuck client
				return nil
			},
			func(int64) error {
				select {
				case ready <- struct{}{}:
				default:
				}
				return nil
			})
	}()
	select {
	case <-ready:
	case <-time.After(deadline):
		t.Fatal("watcher never went live")
	}
	writersDone := make(chan struct{})
	go func() {
		defer close(writersDone)
		for range 100 {
			if _, err := appendEvent(ctx, db, l, "k"); err != nil {
				t.Error(err)
				return
			}
		}
	}()
	select {
	case <-writersDone: // writers finished while the watcher is stuck
	case <-time.After(deadline):
		t.Fatal("writers were slowed down by a stuck watcher")
	}
	<-entered
	close(release)
	var err error
	select {
	case err = <-done:
	case <-time.After(deadline):
		t.Fatal("slow watcher not cut off")
	}
	var se *eventlog.SlowWatcherError
	// Events already buffered may still be delivered after the release.
	if !errors.Is(err, eventlog.ErrSlowWatcher) || !errors.As(err, &se) || se.LastRevision < 1 || se.LastRevision > 9 {
		t.Fatalf("Watch = %v, want SlowWatcherError after revision 1..9", err)
	}
	if c := status.Code(eventlog.ToStatus(err)); c != codes.ResourceExhausted {
		t.Fatalf("code = %v, want ResourceExhausted", c)
	}
	// The client resumes from the last revision it received and gets the rest.
	w := watch(t, l, se.LastRevision)
	w.collect(t, se.LastRevision, int(100-se.LastRevision))
}
