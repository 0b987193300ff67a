// Package risktest starts a real risk service (production interceptor chain, temporary SQLite store) on bufconn for other packages' tests.
package risktest

import (
	"context"
	"net"
	"path/filepath"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/test/bufconn"

	riskv1 "github.com/condaccess/condaccess/gen/go/condaccess/risk/v1"
	"github.com/condaccess/condaccess/internal/auth"
	"github.com/condaccess/condaccess/internal/server"
	"github.com/condaccess/condaccess/services/risk"
	"github.com/condaccess/condaccess/services/risk/riskgrpc"
	"github.com/condaccess/condaccess/services/risk/riskstore"
)

// Options tunes StartWith; the zero value is what Start uses.
type Options struct {
	// Retention, ProgressInterval and SubscriberBuffer are riskstore.Options'.
	Retention        int64
	ProgressInterval time.Duration
	SubscriberBuffer int
	// Now is the service clock (default time.Now).
	Now func() time.Time
	// Listener, when set, is served instead of a bufconn listener (e.g. 127.0.0.1:0).
	Listener net.Listener
}

// Harness is a running risk service.
type Harness struct {
	Client riskv1.RiskServiceClient
	Conn   *grpc.ClientConn
	Store  *riskstore.Store
	Server *server.Server
	// Addr is the listener's address (bufconn's is "bufconn").
	Addr string
}

// Start runs the risk service (insecure development mode: every caller is "dev" with
// every role) on bufconn with a temporary store, stopped at the end of the test, and
// returns a client and its connection.
func Start(t testing.TB) (riskv1.RiskServiceClient, *grpc.ClientConn) {
	h := StartWith(t, Options{})
	return h.Client, h.Conn
}

// StartWith is Start with options.
func StartWith(t testing.TB, o Options) *Harness {
	t.Helper()
	ctx := context.Background()
	st, err := riskstore.Open(ctx, riskstore.Options{
		Path:      filepath.Join(t.TempDir(), "risk.db"),
		Retention: o.Retention, ProgressInterval: o.ProgressInterval, SubscriberBuffer: o.SubscriberBuffer,
	})
	if err != nil {
		t.Fatal(err)
	}
	srv, err := server.New(server.Config{Name: "risktest", Auth: auth.Config{Insecure: true}, GracefulStopTimeout: time.Second})
	if err != nil {
		st.Close()
		t.Fatal(err)
	}
	svc := risk.New(risk.Config{Store: st, Encode: riskgrpc.EncodeEvent, Now: o.Now})
	riskgrpc.Register(srv.Registrar(), riskgrpc.New(riskgrpc.Config{Service: svc}))

	lis := o.Listener
	var dial []grpc.DialOption
	target := ""
	if lis == nil {
		bl := bufconn.Listen(1 << 20)
		lis = bl
		target = "passthrough:///bufconn"
		dial = append(dial, grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return bl.DialContext(ctx) }))
	} else {
		target = lis.Addr().String()
	}
	go func() { _ = srv.Serve(lis) }()
	conn, err := grpc.NewClient(target, append(dial, grpc.WithTransportCredentials(insecure.NewCredentials()))...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		conn.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Stop(ctx)
		st.Close()
	})
	return &Harness{Client: riskv1.NewRiskServiceClient(conn), Conn: conn, Store: st, Server: srv, Addr: lis.Addr().String()}
}
