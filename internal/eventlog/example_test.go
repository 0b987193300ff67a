package eventlog_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	"github.com/condaccess/condaccess/internal/eventlog"
	"github.com/condaccess/condaccess/internal/sqlitedb"
)

// A service adds the log's migrations to its own, changes state and appends
// the event in one Write, and serves Watch with ToStatus mapping the errors.
func Example() {
	dir, _ := os.MkdirTemp("", "eventlog-example")
	defer os.RemoveAll(dir)
	ctx := context.Background()

	db, err := sqlitedb.Open(ctx, sqlitedb.Options{
		Path: filepath.Join(dir, "risk.db"),
		Migrations: append([]string{
			`CREATE TABLE device_risk (device_id TEXT PRIMARY KEY, level INTEGER NOT NULL)`,
		}, eventlog.Migrations("events")...),
	})
	if err != nil {
		panic(err)
	}
	defer db.Close()
	log, err := eventlog.New(ctx, db, eventlog.Options{Retention: 100000})
	if err != nil {
		panic(err)
	}
	defer log.Close()

	var rev int64
	err = db.Write(ctx, func(tx *sqlitedb.Tx) error {
		if _, err := tx.ExecContext(ctx, `INSERT INTO device_risk (device_id, level) VALUES (?, ?)
			ON CONFLICT (device_id) DO UPDATE SET level = excluded.level`, "dev-1", 3); err != nil {
			return err
		}
		rev, err = log.Append(tx, eventlog.Event{Type: "device_risk_changed", Key: "dev-1", Payload: []byte("…proto…")})
		return err
	})
	fmt.Println(rev, err)

	// In a Watch handler: return eventlog.ToStatus(err) (then the service's own mapping).
	wctx, cancel := context.WithCancel(ctx)
	err = log.Watch(wctx, 0,
		func(e eventlog.Event) error { fmt.Println("event", e.Revision, e.Type, e.Key); return nil },
		func(rev int64) error { fmt.Println("progress", rev); cancel(); return nil })
	fmt.Println(eventlog.ToStatus(err))
	// Output:
	// 1 <nil>
	// event 1 device_risk_changed dev-1
	// progress 1
	// context canceled
}
