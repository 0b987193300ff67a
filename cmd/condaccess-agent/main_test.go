package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestRunRejectsBadFlags(t *testing.T) {
	dir := t.TempDir()
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"missing device id", []string{"--watch", dir, "--quarantine-dir", dir}, "--device-id"},
		{"missing watch", []string{"--device-id", "d", "--quarantine-dir", dir}, "--watch"},
		{"insecure off loopback", []string{"--device-id", "d", "--watch", dir, "--quarantine-dir", dir, "--server", "10.1.2.3:7400", "--insecure"}, "loopback"},
		{"bad blocklist", []string{"--device-id", "d", "--watch", dir, "--quarantine-dir", dir, "--blocklist", filepath.Join(dir, "missing")}, "missing"},
		{"arguments", []string{"--device-id", "d", "extra"}, "unexpected"},
		{"watched folder missing", []string{"--device-id", "d", "--watch", filepath.Join(dir, "nope"), "--quarantine-dir", dir}, "not a folder"},
		{"malformed replica list", []string{"--device-id", "d", "--watch", dir, "--quarantine-dir", dir, "--risk-addr", "127.0.0.1:7401,,127.0.0.1:7411"}, "--risk-addr (or --server): peer address"},
		{"bad server address", []string{"--device-id", "d", "--watch", dir, "--quarantine-dir", dir, "--server", "localhost"}, "--risk-addr (or --server)"},
		{"insecure with a remote replica in the list", []string{"--device-id", "d", "--watch", dir, "--quarantine-dir", dir, "--remediation-addr", "127.0.0.1:7404,10.1.2.3:7404", "--insecure"}, "loopback"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out bytes.Buffer
			err := run(context.Background(), tt.args, &out)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("run = %v, want an error mentioning %q", err, tt.want)
			}
		})
	}
}

func TestEnrollAndStateDirFlags(t *testing.T) {
	dir := t.TempDir()
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"enroll without token", []string{"enroll", "--state-dir", dir}, "--token"},
		{"enroll without state dir", []string{"enroll", "--token", "t"}, "--state-dir"},
		{"enroll off loopback without CA", []string{"enroll", "--token", "t", "--state-dir", dir, "--server", "10.1.2.3:7400"}, "--ca"},
		{"enroll with a remote replica in the list without CA", []string{"enroll", "--token", "t", "--state-dir", dir, "--server", "127.0.0.1:7402,10.1.2.3:7402"}, "--ca"},
		{"enroll with a malformed server", []string{"enroll", "--token", "t", "--state-dir", dir, "--server", "dns:///x"}, "--server: peer address"},
		{"state dir not enrolled", []string{"--state-dir", dir, "--watch", dir, "--quarantine-dir", dir}, "enroll first"},
		{"state dir with a certificate flag", []string{"--state-dir", dir, "--cert", "c.pem", "--watch", dir, "--quarantine-dir", dir}, "--state-dir holds"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out bytes.Buffer
			err := run(context.Background(), tt.args, &out)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("run = %v, want an error mentioning %q", err, tt.want)
			}
		})
	}
}

// TestKeyPermissions: the agent refuses a device key that others may read.
func TestKeyPermissions(t *testing.T) {
	dir := t.TempDir()
	key := filepath.Join(dir, "device-key.pem")
	if err := os.WriteFile(key, []byte("k"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := checkKeyPermissions(key); err == nil || !strings.Contains(err.Error(), "chmod 600") {
		t.Errorf("0644 key: %v, want a refusal", err)
	}
	if err := os.Chmod(key, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := checkKeyPermissions(key); err != nil {
		t.Errorf("0600 key: %v", err)
	}
}
