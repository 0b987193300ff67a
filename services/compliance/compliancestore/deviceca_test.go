package compliancestore_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"

	"github.com/condaccess/condaccess/internal/pgtest"
	"github.com/condaccess/condaccess/services/compliance/compliancestore"
)

// TestSharedDeviceCAOneForAllReplicas: replicas starting together, each with its
// own candidate CA, all get the same one (the first committed); later replicas get it
// without generating; a candidate that fails stores nothing.
func TestSharedDeviceCAOneForAllReplicas(t *testing.T) {
	ctx := context.Background()
	url := pgtest.URL(t)
	if _, _, err := compliancestore.SharedDeviceCA(ctx, url, func() ([]byte, []byte, error) { return nil, nil, errors.New("no entropy") }); err == nil {
		t.Fatal("a failing candidate was accepted")
	}
	const replicas = 6
	got := make([]string, replicas)
	errs := make([]error, replicas)
	var wg sync.WaitGroup
	for i := range replicas {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, k, err := compliancestore.SharedDeviceCA(ctx, url, func() ([]byte, []byte, error) {
				return []byte(fmt.Sprint("cert-", i)), []byte(fmt.Sprint("key-", i)), nil
			})
			got[i], errs[i] = string(c)+"|"+string(k), err
		}()
	}
	wg.Wait()
	for i := range replicas {
		if errs[i] != nil {
			t.Fatalf("replica %d: %v", i, errs[i])
		}
		if got[i] != got[0] {
			t.Fatalf("replica %d got %q, replica 0 %q: not one CA", i, got[i], got[0])
		}
	}
	var n int
	if _, err := fmt.Sscanf(got[0], "cert-%d|key-", &n); err != nil || got[0] != fmt.Sprintf("cert-%d|key-%d", n, n) {
		t.Fatalf("shared CA %q is not one replica's certificate with its own key", got[0])
	}
	c, k, err := compliancestore.SharedDeviceCA(ctx, url, func() ([]byte, []byte, error) { return nil, nil, errors.New("must not generate") })
	if err != nil || string(c)+"|"+string(k) != got[0] {
		t.Fatalf("a later replica got %q|%q, %v; want %q", c, k, err, got[0])
	}
}
