package hatest

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// EnvSkipServices is the environment variable that, set to 1, makes the
// testing constructors (NewPostgres, NewRedis, …) skip the test instead of
// starting a service. Without it a missing service fails the test with a
// message saying how to install it: a test that silently skips proves
// nothing.
const EnvSkipServices = "HAKIT_SKIP_SERVICES"

// EnvPostgresBin names an environment variable that, when set, is the
// directory holding the PostgreSQL server binaries (initdb, postgres,
// pg_basebackup, pg_rewind). Defaults to /usr/lib/postgresql/15/bin.
const EnvPostgresBin = "HATEST_PG_BIN"

// defaultTo sets *p to v when *p is its type's zero value.
func defaultTo[T comparable](p *T, v T) {
	var zero T
	if *p == zero {
		*p = v
	}
}

// binary locates a program by name: in dirs (in order), then on PATH. The
// error names the Debian package that provides it.
func binary(name, pkg string, dirs ...string) (string, error) {
	for _, d := range dirs {
		if d == "" {
			continue
		}
		p := filepath.Join(d, name)
		if fi, err := os.Stat(p); err == nil && !fi.IsDir() && fi.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	if p, err := exec.LookPath(name); err == nil {
		return p, nil
	}
	// Debian installs some daemons in sbin, which is not on every PATH.
	for _, d := range []string{"/usr/sbin", "/usr/local/sbin", "/sbin"} {
		p := filepath.Join(d, name)
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	return "", &MissingBinaryError{Name: name, Package: pkg}
}

// MissingBinaryError reports a program the harness needs that is not
// installed, and how to install it.
type MissingBinaryError struct {
	Name    string // the program, e.g. "redis-server"
	Package string // what provides it, e.g. "redis-server" (a Debian package) or a go install path
}

func (e *MissingBinaryError) Error() string {
	if strings.Contains(e.Package, "/") { // a Go module path, with or without its version
		pkg := e.Package
		if !strings.Contains(pkg, "@") {
			pkg += "@latest"
		}
		return fmt.Sprintf("hatest: %s not found on PATH or in $(go env GOPATH)/bin; install it with: go install %s (or run make deps)", e.Name, pkg)
	}
	return fmt.Sprintf("hatest: %s not found; install the Debian package %s: apt-get install -y %s (or run make deps)", e.Name, e.Package, e.Package)
}

// pgBinDir returns the directory of the PostgreSQL server binaries.
func pgBinDir() string {
	if d := os.Getenv(EnvPostgresBin); d != "" {
		return d
	}
	return "/usr/lib/postgresql/15/bin"
}

func pgBinary(name string) (string, error) {
	return binary(name, "postgresql-15", pgBinDir())
}

// postgresPrereqs checks that the PostgreSQL server programs are installed
// and returns the credential to run them with (see serviceUser).
func postgresPrereqs() (*syscall.Credential, error) {
	for _, name := range []string{"initdb", "postgres", "pg_basebackup", "pg_rewind"} {
		if _, err := pgBinary(name); err != nil {
			return nil, err
		}
	}
	return serviceUser()
}

// goBinDirs lists where `go install` puts programs.
func goBinDirs() []string {
	var dirs []string
	if d := os.Getenv("GOBIN"); d != "" {
		dirs = append(dirs, d)
	}
	if gp := os.Getenv("GOPATH"); gp != "" {
		for _, p := range filepath.SplitList(gp) {
			dirs = append(dirs, filepath.Join(p, "bin"))
		}
	}
	if home, err := os.UserHomeDir(); err == nil {
		dirs = append(dirs, filepath.Join(home, "go", "bin"))
	}
	return dirs
}

// serviceUser returns the credential PostgreSQL (and Patroni) must run
// with: the postgres user when the harness runs as root (PostgreSQL refuses
// to run as root), nil (the current user) otherwise.
func serviceUser() (*syscall.Credential, error) {
	if os.Geteuid() != 0 {
		return nil, nil
	}
	u, err := user.Lookup("postgres")
	if err != nil {
		return nil, fmt.Errorf("hatest: running as root, PostgreSQL must run as the postgres user, which does not exist (install the Debian package postgresql-15, or run make deps): %w", err)
	}
	uid, err1 := strconv.ParseUint(u.Uid, 10, 32)
	gid, err2 := strconv.ParseUint(u.Gid, 10, 32)
	if err := errors.Join(err1, err2); err != nil {
		return nil, fmt.Errorf("hatest: postgres user: %w", err)
	}
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), NoSetGroups: true}, nil
}

// runDir makes a fresh directory for a set of services under the system
// temp dir. It is world-readable (mode 0755) so a service running as another
// user (postgres) can reach its own subdirectories; the socket paths inside
// it stay short, well under the 107-byte limit of a Unix socket path.
func runDir(kind string) (string, error) {
	// What a crashed earlier run left behind goes first.
	_ = SweepOrphans()
	dir, err := os.MkdirTemp("", "hatest-"+kind+"-")
	if err != nil {
		return "", fmt.Errorf("hatest: make run dir: %w", err)
	}
	if err := errors.Join(os.Chmod(dir, 0o755), writeOwner(dir)); err != nil {
		os.RemoveAll(dir)
		return "", fmt.Errorf("hatest: make run dir: %w", err)
	}
	return dir, nil
}

// mkdirFor creates dir (mode 0700) owned by cred's user (or the current
// user when cred is nil).
func mkdirFor(dir string, cred *syscall.Credential) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("hatest: %w", err)
	}
	if cred != nil {
		if err := os.Chown(dir, int(cred.Uid), int(cred.Gid)); err != nil {
			return fmt.Errorf("hatest: %w", err)
		}
	}
	return nil
}

// freePort returns a TCP port on 127.0.0.1 that was free a moment ago.
// Services that fail to bind it are started again on another port.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("hatest: find a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// addrInUse reports whether a service's log says its port was taken
// between freePort and its start.
func addrInUse(log string) bool {
	l := strings.ToLower(log)
	return strings.Contains(l, "address already in use") || strings.Contains(l, "could not bind") || strings.Contains(l, "cannot bind")
}

func hostPort(port int) string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(port)) }
