package ssf

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/condaccess/condaccess/internal/audit"
	"github.com/condaccess/condaccess/internal/lease"
)

// Options are serve's Shared Signals flags.
type Options struct {
	// Issuer is the transmitter's issuer URL; empty: http://<http-addr>.
	Issuer          string
	ReceiverIssuers stringList
	ReceiverJWKS    stringList
	// ReceiverAudience is the aud the receiver requires; empty: the transmitter's issuer.
	ReceiverAudience string
	ReceiverMaxAge   time.Duration
	// PushAllow are the special-purpose address prefixes push delivery may reach
	// anyway (--ssf-push-allow-cidr).
	PushAllow stringList
	// MaxPending bounds each stream's unacknowledged SETs (--ssf-max-pending; 0:
	// DefaultMaxPending).
	MaxPending int
	// InactivityTimeout pauses idle streams (--ssf-inactivity-timeout; 0: never).
	InactivityTimeout time.Duration
}

type stringList []string

func (l *stringList) String() string     { return strings.Join(*l, ",") }
func (l *stringList) Set(v string) error { *l = append(*l, v); return nil }

// RegisterFlags registers the flags on fs.
func (o *Options) RegisterFlags(fs *flag.FlagSet) {
	fs.StringVar(&o.Issuer, "ssf-issuer", "", "Shared Signals transmitter issuer URL (the base of its endpoints); empty: http(s)://<--http-addr>, https with --tls-cert")
	fs.Var(&o.ReceiverIssuers, "ssf-receiver-issuer", "issuer URL of a Shared Signals transmitter whose pushed SETs (POST /ssf/receiver) become alerts on the risk service (repeatable)")
	fs.Var(&o.ReceiverJWKS, "ssf-receiver-jwks-url", "JWKS URL of the --ssf-receiver-issuer in the same position (repeatable); missing: discovered from the issuer's /.well-known/ssf-configuration")
	fs.StringVar(&o.ReceiverAudience, "ssf-receiver-audience", "", "aud the receiver requires in pushed SETs; empty: the transmitter's issuer URL")
	fs.DurationVar(&o.ReceiverMaxAge, "ssf-receiver-max-age", time.Hour, "oldest iat the receiver accepts")
	fs.IntVar(&o.MaxPending, "ssf-max-pending", DefaultMaxPending, "unacknowledged SETs one Shared Signals stream may hold; a stream at the bound is paused (reason outbox_full in its status) and takes no more until its receiver acknowledges and enables it again")
	fs.DurationVar(&o.InactivityTimeout, "ssf-inactivity-timeout", 0, "pause a Shared Signals stream whose receiver made no call about it (management, or polling) for this long, with a Stream Updated SET (inactivity_timeout; 0: never)")
	fs.Var(&o.PushAllow, "ssf-push-allow-cidr", "address prefix (CIDR or one address) that push delivery may reach although it is loopback, link-local, private or otherwise special-purpose, e.g. 127.0.0.0/8 for a receiver on this host (repeatable; default none)")
}

// Env is what serve gives the Shared Signals service.
type Env struct {
	DataDir  string
	HTTPAddr string
	// Insecure is development mode: push endpoints may then use http, and no client
	// certificate (so no admin) exists.
	Insecure bool
	Logger   *slog.Logger
	Mux      *http.ServeMux
	Feeds    Feeds
	// Sink is the risk service (nil: no receiver).
	Sink AlertSink
	// DatabaseURL, when set, keeps the store and the signing keys in PostgreSQL schema
	// "ssf" shared by every replica (DataDir is then unused): each serves the HTTP
	// endpoints, and only the holder of the "ssf" lease follows the feeds and pushes.
	DatabaseURL string
	// LeaseDuration is the "ssf" lease's duration (0: lease.DefaultDuration).
	LeaseDuration time.Duration
}

// Service is the transmitter (and, with issuers configured, the receiver) inside serve.
type Service struct {
	Transmitter *Transmitter
	Receiver    *Receiver
	store       *Store
	runs        []interface{ Run(context.Context) error }
	lease       *lease.PG // with DatabaseURL: who runs the feeds and push delivery
}

// StorePath is the store's file in the data directory.
func StorePath(dataDir string) string { return filepath.Join(dataDir, "ssf.db") }

// New opens the store and key in env.DataDir and mounts the endpoints on env.Mux.
func New(ctx context.Context, o Options, env Env) (*Service, error) {
	allow, err := ParsePrefixes(o.PushAllow)
	if err != nil {
		return nil, err
	}
	if o.MaxPending < 0 {
		return nil, fmt.Errorf("--ssf-max-pending %d: must be at least 1 (0: the default, %d)", o.MaxPending, DefaultMaxPending)
	}
	if o.InactivityTimeout < 0 || (o.InactivityTimeout > 0 && o.InactivityTimeout < time.Second) {
		return nil, fmt.Errorf("--ssf-inactivity-timeout %s: 0 (never) or at least 1s", o.InactivityTimeout)
	}
	var st *Store
	var signer Keys
	if env.DatabaseURL != "" {
		if st, err = OpenPGStore(ctx, env.DatabaseURL, env.Logger); err != nil {
			return nil, fmt.Errorf("ssf store: %w", err)
		}
		if signer, err = OpenPGKeyRing(ctx, st); err != nil {
			st.Close()
			return nil, err
		}
	} else {
		if err := os.MkdirAll(env.DataDir, 0o700); err != nil {
			return nil, err
		}
		if signer, err = OpenKeyRing(env.DataDir); err != nil {
			return nil, err
		}
		if st, err = OpenStore(ctx, StorePath(env.DataDir), env.Logger); err != nil {
			return nil, fmt.Errorf("ssf store: %w", err)
		}
	}
	iss := o.Issuer
	if iss == "" {
		iss = "http://" + env.HTTPAddr
	}
	t := NewTransmitter(Config{Issuer: iss, Store: st, Signer: signer, Logger: env.Logger,
		Push: PushGuard{AllowHTTP: env.Insecure, Allow: allow}, MaxPending: o.MaxPending, InactivityTimeout: o.InactivityTimeout,
		// Admin client certificates manage streams only where there are certificates:
		// the development identity is never an admin here.
		AdminCertificates: !env.Insecure})
	t.Register(env.Mux)
	s := &Service{Transmitter: t, store: st, runs: t.Consumers(env.Feeds),
		lease: st.Lease(lease.PGOptions{Duration: env.LeaseDuration, Logger: env.Logger})}
	if len(o.ReceiverIssuers) > 0 {
		if env.Sink == nil {
			st.Close()
			return nil, errors.New("--ssf-receiver-issuer needs the risk service")
		}
		if len(o.ReceiverJWKS) > len(o.ReceiverIssuers) {
			st.Close()
			return nil, errors.New("more --ssf-receiver-jwks-url than --ssf-receiver-issuer")
		}
		var trusted []TrustedIssuer
		for i, u := range o.ReceiverIssuers {
			ti := TrustedIssuer{Issuer: u}
			if i < len(o.ReceiverJWKS) {
				ti.JWKSURL = o.ReceiverJWKS[i]
			}
			trusted = append(trusted, ti)
		}
		aud := o.ReceiverAudience
		if aud == "" {
			aud = t.cfg.Issuer
		}
		s.Receiver = NewReceiver(ReceiverConfig{Issuers: trusted, Audience: aud, Store: st, Sink: env.Sink, MaxAge: o.ReceiverMaxAge, Logger: env.Logger})
		s.Receiver.Register(env.Mux)
	}
	return s, nil
}

// SharedPollInterval is how often a replica on PostgreSQL looks again for what other
// replicas stored (long polls waiting for SETs, the leader's push workers).
var SharedPollInterval = time.Second

// Run follows the upstream feeds and pushes SETs until ctx ends. On PostgreSQL only
// the holder of the "ssf" lease does, with its fencing token checked in every write
// it makes (WithFence): a replica that lost the lease advances no cursor and marks no
// SET delivered; the others wait to lead.
func (s *Service) Run(ctx context.Context) error {
	if s.lease == nil {
		return s.lead(ctx)
	}
	// Other replicas' writes (a SET the leader stored, a stream created elsewhere)
	// wake this replica's long polls and push workers within SharedPollInterval.
	tickDone := make(chan struct{})
	defer func() { <-tickDone }()
	go func() {
		defer close(tickDone)
		tk := time.NewTicker(SharedPollInterval)
		defer tk.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tk.C:
				s.Transmitter.notify()
			}
		}
	}()
	err := s.lease.Run(ctx, func(ctx context.Context, token int64) error {
		return s.lead(WithFence(ctx, s.lease, token))
	})
	if ctx.Err() != nil {
		return nil
	}
	return err
}

// lead follows the feeds and pushes until ctx ends.
func (s *Service) lead(ctx context.Context) error {
	var wg sync.WaitGroup
	errc := make(chan error, len(s.runs)+1)
	for _, r := range s.runs {
		wg.Add(1)
		go func() { defer wg.Done(); errc <- r.Run(ctx) }()
	}
	wg.Add(1)
	go func() { defer wg.Done(); errc <- s.Transmitter.RunPush(ctx) }()
	wg.Wait()
	close(errc)
	if ctx.Err() != nil {
		return nil
	}
	var errs []error
	for err := range errc {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// Close closes the store.
func (s *Service) Close() error { return s.store.Close() }

// Audit is the audit log of admin changes to streams (suite.Audited).
func (s *Service) Audit() *audit.Log { return s.store.Audit() }
