// Package pgtest gives tests a throw-away PostgreSQL: one cluster per test binary, started on first use, and a fresh database per test.
//
// Use it from TestMain and in each test:
//
//	func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }
//
//	func TestX(t *testing.T) { url := pgtest.URL(t) ... }
//
// When CONDACCESS_TEST_DATABASE_URL is set, the tests use that server instead (its
// user must be allowed to CREATE DATABASE). Otherwise the first URL call runs initdb
// (as the "postgres" user via runuser when the test runs as root) in a temporary
// folder and starts the cluster on 127.0.0.1 at a free port with fsync off; Main
// stops it and removes the folder after the tests. When no PostgreSQL binaries are
// found (/usr/lib/postgresql/*/bin, or pg_config on PATH) or the cluster cannot
// start, URL skips the test saying why, so `go test ./...` stays green on a machine
// without PostgreSQL (unless CONDACCESS_TEST_REQUIRE_POSTGRES=1, as in CI: then it fails).
package pgtest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// EnvURL names the variable that points the tests at an existing server.
const EnvURL = "CONDACCESS_TEST_DATABASE_URL"

// EnvRequire names the variable that, set to 1, fails the PostgreSQL tests instead of
// skipping them when no server is available (CI sets it, so that they really run).
const EnvRequire = "CONDACCESS_TEST_REQUIRE_POSTGRES"

var (
	once    sync.Once
	baseURL string // a URL of the server's maintenance database ("postgres")
	skipWhy string // set when no server is available
	stop    func()
	nextDB  atomic.Int64
)

// Main runs the tests and then stops the cluster if one was started. Call it from
// TestMain: os.Exit(pgtest.Main(m)).
func Main(m *testing.M) int {
	code := m.Run()
	Stop()
	return code
}

// Stop stops the cluster if one was started (for a TestMain that runs m itself).
func Stop() {
	if stop != nil {
		stop()
		stop = nil
	}
}

// URL returns the URL of a new, empty database for t, dropped when t ends. It skips
// t when no PostgreSQL is available.
func URL(t testing.TB) string {
	t.Helper()
	once.Do(setup)
	if skipWhy != "" {
		if os.Getenv(EnvRequire) == "1" {
			t.Fatalf("PostgreSQL required (%s=1) but unavailable: %s", EnvRequire, skipWhy)
		}
		t.Skip("PostgreSQL suite skipped: " + skipWhy)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	name := fmt.Sprintf("t%d_%d", os.Getpid(), nextDB.Add(1))
	admin, err := pgx.Connect(ctx, baseURL)
	if err != nil {
		t.Fatalf("pgtest: connect: %v", err)
	}
	defer admin.Close(ctx)
	if _, err := admin.Exec(ctx, "CREATE DATABASE "+name); err != nil {
		t.Fatalf("pgtest: create database: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		c, err := pgx.Connect(ctx, baseURL)
		if err != nil {
			t.Errorf("pgtest: connect to drop %s: %v", name, err)
			return
		}
		defer c.Close(ctx)
		if _, err := c.Exec(ctx, "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)"); err != nil {
			t.Errorf("pgtest: drop %s: %v", name, err)
		}
	})
	u, err := url.Parse(baseURL)
	if err != nil {
		t.Fatalf("pgtest: %v", err)
	}
	u.Path = "/" + name
	return u.String()
}

func setup() {
	if u := os.Getenv(EnvURL); u != "" {
		baseURL = u
		return
	}
	bin, err := findBin()
	if err != nil {
		skipWhy = err.Error()
		return
	}
	u, s, err := start(bin)
	if err != nil {
		skipWhy = fmt.Sprintf("could not start a throw-away cluster from %s: %v", bin, err)
		return
	}
	baseURL, stop = u, s
}

// binGlob is where Debian and Ubuntu install the server binaries.
var binGlob = "/usr/lib/postgresql/*/bin/initdb"

// findBin returns the newest /usr/lib/postgresql/*/bin holding initdb, or pg_config's bindir.
func findBin() (string, error) {
	dirs, _ := filepath.Glob(binGlob)
	sort.Slice(dirs, func(i, j int) bool { return version(dirs[i]) > version(dirs[j]) })
	if len(dirs) > 0 {
		return filepath.Dir(dirs[0]), nil
	}
	if out, err := exec.Command("pg_config", "--bindir").Output(); err == nil {
		dir := strings.TrimSpace(string(out))
		if _, err := os.Stat(filepath.Join(dir, "initdb")); err == nil {
			return dir, nil
		}
	}
	return "", errors.New("no PostgreSQL binaries (no /usr/lib/postgresql/*/bin/initdb, no pg_config on PATH); install postgresql or set " + EnvURL)
}

func version(initdb string) int {
	v, _ := strconv.Atoi(filepath.Base(filepath.Dir(filepath.Dir(initdb))))
	return v
}

// start runs initdb and pg_ctl start in a new temporary folder and returns the
// maintenance database's URL and the function that stops the cluster.
func start(bin string) (string, func(), error) {
	base := tmpBase()
	reapStale(bin, base)
	dir, err := os.MkdirTemp(base, dirPrefix)
	if err != nil {
		return "", nil, err
	}
	fail := func(err error) (string, func(), error) {
		os.RemoveAll(dir)
		return "", nil, err
	}
	// The owner file lets a later run stop this cluster if this process dies
	// without stopping it (a test binary killed on timeout).
	if err := os.WriteFile(filepath.Join(dir, ownerFile), []byte(strconv.Itoa(os.Getpid())), 0o644); err != nil {
		return fail(err)
	}
	// PostgreSQL refuses to run as root: as root, run it as the postgres user.
	var asUser []string
	if os.Geteuid() == 0 {
		pu, err := user.Lookup("postgres")
		if err != nil {
			return fail(fmt.Errorf("running as root and no postgres user to run the server as: %w", err))
		}
		uid, _ := strconv.Atoi(pu.Uid)
		gid, _ := strconv.Atoi(pu.Gid)
		if err := os.Chown(dir, uid, gid); err != nil {
			return fail(err)
		}
		runuser, err := exec.LookPath("runuser")
		if err != nil {
			return fail(fmt.Errorf("running as root and no runuser: %w", err))
		}
		asUser = []string{runuser, "-u", "postgres", "--"}
	}
	run := func(args ...string) error {
		full := append(append([]string(nil), asUser...), args...)
		cmd := exec.Command(full[0], full[1:]...)
		cmd.Dir = dir
		out, err := cmd.CombinedOutput()
		if err != nil {
			return fmt.Errorf("%s: %w\n%s", filepath.Base(args[0]), err, out)
		}
		return nil
	}
	data := filepath.Join(dir, "data")
	if err := run(filepath.Join(bin, "initdb"), "-D", data, "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync", "--locale=C"); err != nil {
		return fail(err)
	}
	// The port was free a moment ago; another process listening on port 0 may be
	// given it before the server binds it (the packages are tested in parallel, with
	// servers of their own), so a start that fails is tried on another port.
	var port int
	for try := 1; ; try++ {
		if port, err = freePort(); err != nil {
			return fail(err)
		}
		opts := fmt.Sprintf("-c listen_addresses=127.0.0.1 -p %d -c unix_socket_directories=%s -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200 -c shared_buffers=16MB", port, dir)
		err = run(filepath.Join(bin, "pg_ctl"), "-D", data, "-o", opts, "-l", filepath.Join(dir, "log"), "-w", "-t", "60", "start")
		if err == nil {
			break
		}
		if try == 3 {
			return fail(err)
		}
	}
	stopFn := func() {
		_ = run(filepath.Join(bin, "pg_ctl"), "-D", data, "-m", "immediate", "-w", "stop")
		os.RemoveAll(dir)
	}
	return fmt.Sprintf("postgres://postgres@127.0.0.1:%d/postgres?sslmode=disable", port), stopFn, nil
}

const (
	dirPrefix = "condaccess-pgtest-"
	ownerFile = "owner.pid"
)

// tmpBase is where clusters live: as root the server runs as postgres, which must
// reach the folder, so /tmp rather than a TMPDIR that may sit in root's home.
func tmpBase() string {
	if os.Geteuid() == 0 {
		return "/tmp"
	}
	return os.TempDir()
}

// reapStale stops and removes the clusters of test processes that died without
// stopping them (their owner pid no longer runs).
func reapStale(bin, base string) {
	dirs, _ := filepath.Glob(filepath.Join(base, dirPrefix+"*"))
	for _, dir := range dirs {
		b, err := os.ReadFile(filepath.Join(dir, ownerFile))
		if err != nil {
			continue // starting, or not ours
		}
		pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
		if err != nil || pid <= 0 || processAlive(pid) {
			continue
		}
		args := []string{filepath.Join(bin, "pg_ctl"), "-D", filepath.Join(dir, "data"), "-m", "immediate", "-w", "stop"}
		if os.Geteuid() == 0 {
			args = append([]string{"runuser", "-u", "postgres", "--"}, args...)
		}
		_ = exec.Command(args[0], args[1:]...).Run()
		os.RemoveAll(dir)
	}
}

func processAlive(pid int) bool {
	err := syscall.Kill(pid, 0)
	return err == nil || errors.Is(err, syscall.EPERM)
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}
