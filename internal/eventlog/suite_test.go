package eventlog_test

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"

	"github.com/condaccess/condaccess/internal/eventlog"
	"github.com/condaccess/condaccess/internal/eventlog/eventlogtest"
	"github.com/condaccess/condaccess/internal/pgdb"
	"github.com/condaccess/condaccess/internal/pgtest"
	"github.com/condaccess/condaccess/internal/sqlitedb"
)

// TestSuiteSQLite and TestSuitePostgres run the same suite on both backends.
func TestSuiteSQLite(t *testing.T) {
	eventlogtest.Run(t, func(t *testing.T) eventlogtest.Opener {
		path := filepath.Join(t.TempDir(), "db.sqlite")
		return func(t *testing.T, opts eventlog.Options) eventlogtest.Instance {
			db, err := sqlitedb.Open(context.Background(), sqlitedb.Options{Path: path,
				Migrations: append([]string{`CREATE TABLE state (k TEXT PRIMARY KEY, v INTEGER NOT NULL)`}, eventlog.Migrations("")...)})
			if err != nil {
				t.Fatal(err)
			}
			l, err := eventlog.New(context.Background(), db, opts)
			if err != nil {
				db.Close()
				t.Fatal(err)
			}
			return eventlogtest.Instance{
				Log: l,
				Write: func(ctx context.Context, keys []string, fail error) (revs []int64, err error) {
					err = db.Write(ctx, func(tx *sqlitedb.Tx) error {
						revs = revs[:0]
						for _, k := range keys {
							if _, err := tx.ExecContext(ctx, `INSERT INTO state (k, v) VALUES (?, 1) ON CONFLICT (k) DO UPDATE SET v = v + 1`, k); err != nil {
								return err
							}
							rev, err := l.Append(tx, eventlog.Event{Type: "t", Key: k, Payload: []byte(k)})
							if err != nil {
								return err
							}
							revs = append(revs, rev)
						}
						return fail
					})
					return revs, err
				},
				NextThenAppend: func(ctx context.Context, key string) (next, rev int64, err error) {
					err = db.Write(ctx, func(tx *sqlitedb.Tx) error {
						var err error
						if next, err = l.Next(tx); err != nil {
							return err
						}
						rev, err = l.Append(tx, eventlog.Event{Type: "t", Key: key})
						return err
					})
					return next, rev, err
				},
				Close: func() { l.Close(); db.Close() },
			}
		}
	})
}

func TestSuitePostgres(t *testing.T) {
	eventlogtest.Run(t, func(t *testing.T) eventlogtest.Opener {
		url := pgtest.URL(t)
		return func(t *testing.T, opts eventlog.Options) eventlogtest.Instance {
			db, err := pgdb.Open(context.Background(), pgdb.Options{URL: url, Schema: "svc",
				Migrations: append([]string{`CREATE TABLE state (k TEXT PRIMARY KEY, v INTEGER NOT NULL)`}, eventlog.PGMigrations("")...)})
			if err != nil {
				t.Fatal(err)
			}
			l, err := eventlog.NewPG(context.Background(), db, eventlog.PGOptions{Options: opts})
			if err != nil {
				db.Close()
				t.Fatal(err)
			}
			return eventlogtest.Instance{
				Log: l,
				Write: func(ctx context.Context, keys []string, fail error) (revs []int64, err error) {
					err = db.Write(ctx, func(tx *pgdb.Tx) error {
						revs = revs[:0]
						for _, k := range keys {
							if _, err := tx.ExecContext(ctx, `INSERT INTO state (k, v) VALUES ($1, 1) ON CONFLICT (k) DO UPDATE SET v = state.v + 1`, k); err != nil {
								return err
							}
							rev, err := l.Append(tx, eventlog.Event{Type: "t", Key: k, Payload: []byte(k)})
							if err != nil {
								return fmt.Errorf("append %s: %w", k, err)
							}
							revs = append(revs, rev)
						}
						return fail
					})
					return revs, err
				},
				NextThenAppend: func(ctx context.Context, key string) (next, rev int64, err error) {
					err = db.Write(ctx, func(tx *pgdb.Tx) error {
						var err error
						if next, err = l.Next(tx); err != nil {
							return err
						}
						rev, err = l.Append(tx, eventlog.Event{Type: "t", Key: key})
						return err
					})
					return next, rev, err
				},
				Close: func() { l.Close(); db.Close() },
			}
		}
	})
}
