package main

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"

	"github.com/condaccess/condaccess/internal/httpface"
	"github.com/condaccess/condaccess/internal/keyfile"
	"github.com/condaccess/condaccess/services/access/accessapp"
	"github.com/condaccess/condaccess/services/access/accessstore"
)

// consoleLogin mounts the console's OIDC sign-in on mux when --console-oidc-client-id
// is set and returns the handler that gives console sessions their identity.
// With --database-url the sealing key (unless --console-session-key-file names one)
// and the sign-outs are kept in the access schema, shared by every replica; closeFn
// closes that connection pool.
func consoleLogin(ctx context.Context, o serveOptions, tlsOn bool, base string, mux *http.ServeMux, logger *slog.Logger) (_ http.Handler, closeFn func() error, err error) {
	closeFn = func() error { return nil }
	if o.consoleClientID == "" {
		return mux, closeFn, nil
	}
	h, err := consoleLoginHandler(ctx, o, tlsOn, base, mux, logger, &closeFn)
	if err != nil {
		_ = closeFn()
		return nil, nil, err
	}
	return h, closeFn, nil
}

func consoleLoginHandler(ctx context.Context, o serveOptions, tlsOn bool, base string, mux *http.ServeMux, logger *slog.Logger, closeFn *func() error) (http.Handler, error) {
	if !tlsOn {
		return nil, fmt.Errorf("%w: --console-oidc-client-id needs TLS (development mode has no sign-in)", errUsage)
	}
	var issuer, groups string
	for _, f := range o.factories {
		if a, ok := f.(*accessapp.Factory); ok {
			is, g := a.OIDC()
			if len(is) > 0 {
				issuer = is[0]
			}
			groups = g
		}
	}
	if issuer == "" || groups == "" {
		return nil, fmt.Errorf("%w: --console-oidc-client-id needs --oidc-issuer and --oidc-groups-claim", errUsage)
	}
	roles, err := httpface.ParseRoleMap(o.consoleRoleMap)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", errUsage, err)
	}
	// Sessions are sealed cookies: the key (shared by the replicas) and the sign-outs
	// are kept in files (or the database), so sessions and sign-outs survive a restart.
	if err := os.MkdirAll(o.dataDir, 0o700); err != nil {
		return nil, err
	}
	cfg := httpface.LoginConfig{Issuer: issuer, ClientID: o.consoleClientID, ClientSecret: o.consoleClientSecret,
		RedirectURL: base + httpface.CallbackPath, GroupsClaim: groups, RoleMap: roles, Logger: logger,
		SignOutsPath: filepath.Join(o.dataDir, "console-signouts")}
	if o.databaseURL != "" {
		// Replicas: the key and the sign-outs live in the database, so a cookie made
		// on one replica works on every other and a sign-out is refused by all at once.
		cs, err := accessstore.OpenConsoleSessions(ctx, o.databaseURL, logger)
		if err != nil {
			return nil, err
		}
		*closeFn = cs.Close
		cfg.SignOuts, cfg.SignOutsPath = cs, ""
		if o.consoleSessionKeyFile == "" {
			if cfg.SessionKey, err = cs.Key(ctx); err != nil {
				return nil, fmt.Errorf("console session key: %w", err)
			}
		}
	}
	if cfg.SessionKey == nil {
		keyFile := o.consoleSessionKeyFile
		if keyFile == "" {
			keyFile = filepath.Join(o.dataDir, "console-session.key")
		}
		key, err := keyfile.LoadOrCreate(keyFile, 32)
		if err != nil {
			return nil, fmt.Errorf("--console-session-key-file: %w", err)
		}
		cfg.SessionKey = key
	}
	login, err := httpface.NewLogin(ctx, cfg)
	if err != nil {
		return nil, err
	}
	login.Mount(mux)
	return login.Wrap(mux), nil
}
