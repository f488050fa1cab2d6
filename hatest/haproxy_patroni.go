package hatest

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// PatroniHAProxyOptions configures the HAProxy started by
// [StartPatroniHAProxy] or [NewPatroniHAProxy].
type PatroniHAProxyOptions struct {
	// Inter is the interval between health checks of each node's Patroni
	// REST API. Defaults to 1s.
	Inter time.Duration
	// Fall and Rise are the failed and passed checks that take a node
	// out of a port and put it back. Default to 2 and 2.
	Fall, Rise int
	// KeepSessions leaves connections to a node open when its check
	// fails. Defaults to false: "on-marked-down shutdown-sessions", as
	// Patroni's HAProxy template has it, so clients of a demoted or dead
	// primary are cut when the check notices.
	KeepSessions bool
	// StartTimeout bounds the start. Defaults to 30s.
	StartTimeout time.Duration
}

// PatroniHAProxy is HAProxy in TCP mode in front of a Patroni cluster, the
// way Patroni's documentation sets it up: one port that leads to the
// leader (its Patroni answers 200 on GET /primary) and one that balances
// over the replicas (200 on GET /replica). PostgreSQL's port carries the
// traffic, Patroni's REST API port the checks.
type PatroniHAProxy struct {
	// WriteAddr leads to the leader; ReadAddr to the replicas (host:port).
	WriteAddr, ReadAddr string

	h *HAProxy
}

// The HAProxy sections of the two ports.
const (
	patroniWriteSection = "primary"
	patroniReadSection  = "replicas"
)

// StartPatroniHAProxy starts HAProxy in front of c's nodes and waits until
// it answers on its runtime API and the write port has the leader UP. The
// caller must Close it; tests use [NewPatroniHAProxy].
func StartPatroniHAProxy(ctx context.Context, c *PatroniCluster, opts PatroniHAProxyOptions) (_ *PatroniHAProxy, err error) {
	if c == nil || len(c.Nodes) == 0 {
		return nil, errors.New("hatest: StartPatroniHAProxy: no Patroni nodes")
	}
	if opts.Inter < 0 || opts.Fall < 0 || opts.Rise < 0 {
		return nil, fmt.Errorf("hatest: PatroniHAProxyOptions: Inter (%s), Fall (%d) and Rise (%d) must be >= 0", opts.Inter, opts.Fall, opts.Rise)
	}
	defaultTo(&opts.Inter, time.Second)
	defaultTo(&opts.Fall, 2)
	defaultTo(&opts.Rise, 2)
	defaultTo(&opts.StartTimeout, 30*time.Second)
	bin, err := binary("haproxy", "haproxy")
	if err != nil {
		return nil, err
	}
	dir, err := runDir("haproxy")
	if err != nil {
		return nil, err
	}
	p := &PatroniHAProxy{h: &HAProxy{dir: dir, socket: filepath.Join(dir, "admin.sock")}}
	defer func() {
		if err != nil {
			p.Close()
		}
	}()
	conf := filepath.Join(dir, "haproxy.cfg")
	p.h.d = &daemon{name: "haproxy", path: bin, args: []string{"-db", "-f", conf}, dir: dir, logPath: filepath.Join(dir, "haproxy.log")}
	ctx, cancel := context.WithTimeout(ctx, opts.StartTimeout)
	defer cancel()
	err = p.h.d.startOnFreePorts(2, func(ports []int) error {
		p.WriteAddr, p.ReadAddr = hostPort(ports[0]), hostPort(ports[1])
		p.h.Addr = p.WriteAddr
		if err := os.WriteFile(conf, []byte(p.config(c, opts, ports[0], ports[1])), 0o644); err != nil {
			return fmt.Errorf("hatest: %w", err)
		}
		return nil
	}, func() error {
		return p.h.d.waitReady(ctx, opts.StartTimeout, func(ctx context.Context) error {
			up, err := p.UpServers(ctx, patroniWriteSection)
			if err != nil {
				return err
			}
			if len(up) != 1 {
				return fmt.Errorf("write port has %d servers up, want the leader", len(up))
			}
			return nil
		})
	})
	if err != nil {
		return nil, err
	}
	return p, nil
}

func (p *PatroniHAProxy) config(c *PatroniCluster, opts PatroniHAProxyOptions, writePort, readPort int) string {
	ms := func(d time.Duration) string { return strconv.FormatInt(d.Milliseconds(), 10) + "ms" }
	var b strings.Builder
	fmt.Fprintf(&b, `global
    stats socket %s mode 600 level admin
    stats timeout 10s
    maxconn 4096
    log stdout format raw local0

defaults
    mode tcp
    log global
    option dontlognull
    retries 2
    timeout connect 2s
    timeout client 30m
    timeout server 30m
    timeout check %s
`, p.h.socket, ms(opts.Inter))
	down := " on-marked-down shutdown-sessions"
	if opts.KeepSessions {
		down = ""
	}
	for _, l := range []struct {
		name, path string
		port       int
	}{{patroniWriteSection, "/primary", writePort}, {patroniReadSection, "/replica", readPort}} {
		fmt.Fprintf(&b, `
listen %s
    bind 127.0.0.1:%d
    balance roundrobin
    option httpchk GET %s
    http-check expect status 200
    default-server inter %s fall %d rise %d%s
`, l.name, l.port, l.path, ms(opts.Inter), opts.Fall, opts.Rise, down)
		for _, n := range c.Nodes {
			fmt.Fprintf(&b, "    server %s %s check port %d\n", n.Name, n.Addr(), n.APIPort)
		}
	}
	return b.String()
}

// WriteDSN returns a connection string for the postgres database through
// the write port.
func (p *PatroniHAProxy) WriteDSN() string { return pgDSNAt(p.WriteAddr) }

// ReadDSN returns a connection string for the postgres database through the
// read port.
func (p *PatroniHAProxy) ReadDSN() string { return pgDSNAt(p.ReadAddr) }

func pgDSNAt(addr string) string {
	return "postgres://postgres@" + addr + "/postgres?sslmode=disable"
}

// UpServers returns the names of the nodes (patroni0, …) that are UP in a
// port's section: "primary" (the write port) or "replicas".
func (p *PatroniHAProxy) UpServers(ctx context.Context, section string) ([]string, error) {
	rows, err := p.h.showStat(ctx)
	if err != nil {
		return nil, err
	}
	var up []string
	for _, row := range rows {
		name := row["svname"]
		if row["pxname"] == section && name != "BACKEND" && name != "FRONTEND" && row["status"] == "UP" {
			up = append(up, name)
		}
	}
	return up, nil
}

// WaitUp waits until exactly the named nodes are UP in a port's section.
func (p *PatroniHAProxy) WaitUp(ctx context.Context, section string, names ...string) error {
	want := strings.Join(names, ",")
	var got []string
	var err error
	for {
		got, err = p.UpServers(ctx, section)
		if err == nil && strings.Join(got, ",") == want {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("hatest: haproxy %s: UP %v (%v), want %v: %w", section, got, err, names, ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// Command sends one command to HAProxy's runtime API.
func (p *PatroniHAProxy) Command(ctx context.Context, cmd string) (string, error) {
	return p.h.Command(ctx, cmd)
}

// LogPath returns the path of HAProxy's log.
func (p *PatroniHAProxy) LogPath() string { return p.h.LogPath() }

// Pid returns HAProxy's process id.
func (p *PatroniHAProxy) Pid() int { return p.h.Pid() }

// Close stops HAProxy and removes its directory. It is safe to call more
// than once.
func (p *PatroniHAProxy) Close() error { return p.h.Close() }

// NewPatroniHAProxy starts HAProxy in front of c for the test (see
// [StartPatroniHAProxy]) and stops it when the test ends, pass or fail.
func NewPatroniHAProxy(t testing.TB, c *PatroniCluster, opts PatroniHAProxyOptions) *PatroniHAProxy {
	t.Helper()
	skipUnlessServices(t)
	p, err := StartPatroniHAProxy(context.Background(), c, opts)
	return register(t, p, err, func() string {
		return "--- haproxy (" + p.LogPath() + "):\n" + p.h.d.logTail(20) + "\n"
	})
}
