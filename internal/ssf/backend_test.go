package ssf

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/condaccess/condaccess/internal/pgtest"
)

func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }

// onPostgres, set by TestStoreTestsOnPostgres, makes openTestStore open PostgreSQL
// stores: the same tests then run on both backends.
var (
	onPostgres bool
	pgMu       sync.Mutex
	pgURLs     = map[string]string{} // a test's store "directory" → its database
)

// openTestStore opens the test's store in dir: SQLite there, or (onPostgres) the
// database that stands for dir, so that reopening dir reopens the same store.
func openTestStore(t *testing.T, dir string) *Store {
	t.Helper()
	var st *Store
	var err error
	if onPostgres {
		pgMu.Lock()
		url, ok := pgURLs[dir]
		if !ok {
			url = pgtest.URL(t)
			pgURLs[dir] = url
		}
		pgMu.Unlock()
		st, err = OpenPGStore(context.Background(), url, slog.New(slog.DiscardHandler))
	} else {
		st, err = OpenStore(context.Background(), filepath.Join(dir, "ssf.db"), slog.New(slog.DiscardHandler))
	}
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// TestStoreTestsOnPostgres runs the store's tests (streams, poll, push, outbox bound,
// inactivity, subjects, receiver, resume) again on the PostgreSQL store.
func TestStoreTestsOnPostgres(t *testing.T) {
	pgtest.URL(t) // skips (or fails, when required) without PostgreSQL
	onPostgres = true
	t.Cleanup(func() { onPostgres = false })
	for name, fn := range map[string]func(*testing.T){
		"TestStreamManagementAuth":                     TestStreamManagementAuth,
		"TestStreamConfigValidation":                   TestStreamConfigValidation,
		"TestPoll":                                     TestPoll,
		"TestPushRetriesWithSameJTIAndSurvivesRestart": TestPushRetriesWithSameJTIAndSurvivesRestart,
		"TestPushFollowsAnUpdatedEndpoint":             TestPushFollowsAnUpdatedEndpoint,
		"TestLongPollEndsWhenTheTransmitterStops":      TestLongPollEndsWhenTheTransmitterStops,
		"TestResumeAfterCompaction":                    TestResumeAfterCompaction,
		"TestOutboxBound":                              TestOutboxBound,
		"TestStreamManagementByAdminCertificate":       TestStreamManagementByAdminCertificate,
		"TestPushDeliversStreamUpdatedWhilePaused":     TestPushDeliversStreamUpdatedWhilePaused,
		"TestInactivityTimeout":                        TestInactivityTimeout,
		"TestAddSubjectVerified":                       TestAddSubjectVerified,
		"TestReceiver":                                 TestReceiver,
		"TestPushRefusesDNSRebinding":                  TestPushRefusesDNSRebinding,
	} {
		t.Run(name, fn)
	}
}
