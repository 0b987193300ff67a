package riskstore_test

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/condaccess/condaccess/services/risk"
	"github.com/condaccess/condaccess/services/risk/riskstore"
	"github.com/condaccess/condaccess/services/risk/riskstore/storetest"
)

func TestSQLiteStore(t *testing.T) {
	storetest.Run(t, func(t *testing.T) risk.Store {
		s, err := riskstore.Open(context.Background(), riskstore.Options{Path: filepath.Join(t.TempDir(), "risk.db"), Synchronous: "NORMAL"})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		return s
	})
}

// TestReopen proves the schema migrates once and the revision survives a reopen.
func TestReopen(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "risk.db")
	s, err := riskstore.Open(ctx, riskstore.Options{Path: path})
	if err != nil {
		t.Fatal(err)
	}
	err = s.Update(ctx, func(tx risk.Tx) error {
		_, err := tx.Append(ctx, risk.StoredEvent{Type: risk.EventAlertChanged, Key: "k"})
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	s, err = riskstore.Open(ctx, riskstore.Options{Path: path})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if got := s.Revision(); got != 1 {
		t.Errorf("Revision after reopen = %d, want 1", got)
	}
}
