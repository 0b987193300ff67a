package riskapp_test

import (
	"context"
	"flag"
	"log/slog"
	"os"
	"path/filepath"
	"testing"

	"github.com/condaccess/condaccess/internal/suite"
	"github.com/condaccess/condaccess/services/risk/riskapp"
)

func TestFactory(t *testing.T) {
	tests := []struct {
		name    string
		args    []string
		wantErr bool
	}{
		{"defaults", nil, false},
		{"flags", []string{"--risk-retention=5", "--risk-progress-interval=50ms", "--risk-watch-buffer=8", "--risk-sqlite-synchronous=NORMAL"}, false},
		{"negative retention", []string{"--risk-retention=-1"}, true},
		{"bad synchronous", []string{"--risk-sqlite-synchronous=OFF"}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := &riskapp.Factory{}
			fs := flag.NewFlagSet("serve", flag.ContinueOnError)
			f.RegisterFlags(fs)
			if err := fs.Parse(tt.args); err != nil {
				t.Fatal(err)
			}
			dir := t.TempDir()
			svc, err := f.New(context.Background(), suite.Env{Logger: slog.New(slog.DiscardHandler), DataDir: dir})
			if tt.wantErr {
				if err == nil {
					svc.Close()
					t.Fatal("New succeeded, want an error")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if _, err := os.Stat(filepath.Join(dir, "risk.db")); err != nil {
				t.Errorf("store file: %v", err)
			}
			if err := svc.Close(); err != nil {
				t.Errorf("Close: %v", err)
			}
		})
	}
}
