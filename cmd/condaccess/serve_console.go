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
)

// consoleLogin mounts the console's OIDC sign-in on mux when --console-oidc-client-id
// is set and returns the handler that gives console sessions their identity.
func consoleLogin(ctx context.Context, o serveOptions, tlsOn bool, base string, mux *http.ServeMux, logger *slog.Logger) (http.Handler, error) {
	if o.consoleClientID == "" {
		return mux, nil
	}
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
	// are kept in files, so sessions and sign-outs survive a restart.
	if err := os.MkdirAll(o.dataDir, 0o700); err != nil {
		return nil, err
	}
	keyFile := o.consoleSessionKeyFile
	if keyFile == "" {
		keyFile = filepath.Join(o.dataDir, "console-session.key")
	}
	key, err := keyfile.LoadOrCreate(keyFile, 32)
	if err != nil {
		return nil, fmt.Errorf("--console-session-key-file: %w", err)
	}
	login, err := httpface.NewLogin(ctx, httpface.LoginConfig{Issuer: issuer, ClientID: o.consoleClientID, ClientSecret: o.consoleClientSecret,
		RedirectURL: base + httpface.CallbackPath, GroupsClaim: groups, RoleMap: roles, Logger: logger,
		SessionKey: key, SignOutsPath: filepath.Join(o.dataDir, "console-signouts")})
	if err != nil {
		return nil, err
	}
	login.Mount(mux)
	return login.Wrap(mux), nil
}
