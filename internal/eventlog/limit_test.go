package eventlog_test

import (
	"context"
	"errors"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/condaccess/condaccess/internal/eventlog"
	"github.com/condaccess/condaccess/internal/sqlitedb"
)

// TestMaxPayloadBytes: an event over the cap is refused, its transaction (state row
// included) rolls back, and the revision is not used up.
func TestMaxPayloadBytes(t *testing.T) {
	ctx := context.Background()
	db, l := setup(t, eventlog.Options{MaxPayloadBytes: 16})
	tests := []struct {
		name    string
		payload string
		wantErr error
		wantRev int64
	}{
		{"at the cap", "0123456789abcdef", nil, 1},
		{"over the cap", "0123456789abcdefX", eventlog.ErrEventTooLarge, 0},
		{"the next fits and takes the next revision", "small", nil, 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var rev int64
			err := db.Write(ctx, func(tx *sqlitedb.Tx) error {
				if _, err := tx.ExecContext(ctx, `INSERT INTO state (k, v) VALUES (?, 1)`, tt.name); err != nil {
					return err
				}
				var err error
				rev, err = l.Append(tx, eventlog.Event{Type: "t", Key: tt.name, Payload: []byte(tt.payload)})
				return err
			})
			if !errors.Is(err, tt.wantErr) || rev != tt.wantRev {
				t.Fatalf("Append = %d, %v; want %d, %v", rev, err, tt.wantRev, tt.wantErr)
			}
			var n int
			if err := db.Read().QueryRowContext(ctx, `SELECT COUNT(*) FROM state WHERE k = ?`, tt.name).Scan(&n); err != nil {
				t.Fatal(err)
			}
			if stored := n == 1; stored != (tt.wantErr == nil) {
				t.Errorf("state row stored = %v", stored)
			}
			if tt.wantErr != nil {
				if st := status.Convert(eventlog.ToStatus(err)); st.Code() != codes.ResourceExhausted {
					t.Errorf("ToStatus = %v, want RESOURCE_EXHAUSTED", st)
				}
			}
		})
	}
}
