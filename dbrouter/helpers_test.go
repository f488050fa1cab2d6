package dbrouter_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"

	"hakit.dev/dbrouter"
	"hakit.dev/hatest"
)

// newRouter makes a router for the test and closes it when the test ends.
func newRouter(t *testing.T, cfg dbrouter.Config) *dbrouter.Router {
	t.Helper()
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelInfo}))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	r, err := dbrouter.New(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.Close)
	return r
}

// testWriter sends log lines to the test log while the test runs.
type testWriter struct{ t *testing.T }

func (w testWriter) Write(b []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(b)))
	return len(b), nil
}

// port returns the port of the server q is connected to.
func port(ctx context.Context, q dbrouter.Querier) (int, error) {
	var p int
	err := q.QueryRow(ctx, "SELECT inet_server_port()").Scan(&p)
	return p, err
}

func count(t *testing.T, ctx context.Context, n *hatest.PostgresNode, sql string, args ...any) int {
	t.Helper()
	c, err := queryInt(ctx, n, sql, args...)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// eventually polls cond every 20ms for up to timeout; for goroutines that
// must not fail the test themselves.
func eventually(timeout time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(20 * time.Millisecond)
	}
	return true
}

// countOn counts rows on a node, -1 on error; for goroutines.
func countOn(ctx context.Context, n *hatest.PostgresNode, sql string) int {
	c, err := queryInt(ctx, n, sql)
	if err != nil {
		return -1
	}
	return c
}

// queryInt runs a query that returns one integer on its own connection
// to n.
func queryInt(ctx context.Context, n *hatest.PostgresNode, sql string, args ...any) (int, error) {
	conn, err := pgx.Connect(ctx, n.DSN())
	if err != nil {
		return 0, err
	}
	defer conn.Close(context.Background())
	var c int
	err = conn.QueryRow(ctx, sql, args...).Scan(&c)
	return c, err
}

// metricValue returns the value of a counter or gauge the router exports,
// for the metric whose labels include labels.
func metricValue(t *testing.T, r *dbrouter.Router, name string, labels map[string]string) float64 {
	t.Helper()
	reg := prometheus.NewRegistry()
	if err := reg.Register(r); err != nil {
		t.Fatal(err)
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	metrics:
		for _, m := range mf.GetMetric() {
			got := map[string]string{}
			for _, l := range m.GetLabel() {
				got[l.GetName()] = l.GetValue()
			}
			for k, v := range labels {
				if got[k] != v {
					continue metrics
				}
			}
			if m.GetCounter() != nil {
				return m.GetCounter().GetValue()
			}
			return m.GetGauge().GetValue()
		}
	}
	return 0
}

func roleOf(r *dbrouter.Router, name string) dbrouter.Role {
	for _, s := range r.Status() {
		if s.Name == name {
			return s.Role
		}
	}
	return ""
}

// commitProxy is a TCP proxy in front of a PostgreSQL server that can
// break a connection right after the client sent COMMIT, so the client
// never learns whether it committed. It reads the frontend protocol:
// a startup message (no SSL: sslmode=disable), then typed messages.
type commitProxy struct {
	ln       net.Listener
	upstream string

	mu       sync.Mutex
	onCommit func(client, server net.Conn) // set to arm; runs once
	down     bool                          // refuse connections (see setDown)
	conns    map[net.Conn]struct{}         // open client connections

	// trips: for each COMMIT that reached the server, how many round
	// trips (Sync or simple Query messages) its connection sent since
	// its previous COMMIT, the COMMIT included.
	trips []int
}

// roundTrips returns the round trips of the transactions committed so far.
func (p *commitProxy) roundTrips() []int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]int(nil), p.trips...)
}

func newCommitProxy(t *testing.T, upstream string) *commitProxy {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &commitProxy{ln: ln, upstream: upstream, conns: map[net.Conn]struct{}{}}
	t.Cleanup(func() { ln.Close() })
	go p.serve()
	return p
}

func (p *commitProxy) Addr() string { return p.ln.Addr().String() }

// arm makes the next COMMIT (on any connection) call fn instead of
// reaching the server normally; fn decides what happens to both ends.
func (p *commitProxy) arm(fn func(client, server net.Conn)) {
	p.mu.Lock()
	p.onCommit = fn
	p.mu.Unlock()
}

func (p *commitProxy) serve() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		go p.handle(c)
	}
}

// setDown makes the proxy look like a dead server (true: open connections
// cut, new ones closed at once) or a live one again (false).
func (p *commitProxy) setDown(down bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.down = down
	if down {
		for c := range p.conns {
			c.Close()
		}
	}
}

func (p *commitProxy) handle(client net.Conn) {
	defer client.Close()
	p.mu.Lock()
	if p.down {
		p.mu.Unlock()
		return
	}
	p.conns[client] = struct{}{}
	p.mu.Unlock()
	defer func() {
		p.mu.Lock()
		delete(p.conns, client)
		p.mu.Unlock()
	}()
	server, err := net.Dial("tcp", p.upstream)
	if err != nil {
		return
	}
	defer server.Close()
	// Once a COMMIT is intercepted, nothing more reaches the client, and
	// the client's connection stays open until the hook returns, whatever
	// happens to the server.
	var cut atomic.Bool
	go func() {
		defer func() {
			if !cut.Load() {
				client.Close()
			}
		}()
		buf := make([]byte, 32<<10)
		for {
			n, err := server.Read(buf)
			if err != nil {
				return
			}
			if cut.Load() {
				continue // dropped; the client is closed when the hook returns
			}
			if _, err := client.Write(buf[:n]); err != nil {
				return
			}
		}
	}()
	// Startup message: int32 length, then the rest.
	var hdr [4]byte
	if _, err := io.ReadFull(client, hdr[:]); err != nil {
		return
	}
	body := make([]byte, binary.BigEndian.Uint32(hdr[:])-4)
	if _, err := io.ReadFull(client, body); err != nil {
		return
	}
	if _, err := server.Write(append(hdr[:], body...)); err != nil {
		return
	}
	trips := 0
	for {
		var h [5]byte
		if _, err := io.ReadFull(client, h[:]); err != nil {
			return
		}
		if h[0] == 'S' || h[0] == 'Q' {
			trips++
		}
		body := make([]byte, binary.BigEndian.Uint32(h[1:])-4)
		if _, err := io.ReadFull(client, body); err != nil {
			return
		}
		msg := append(h[:], body...)
		if h[0] == 'Q' && bytes.HasPrefix(bytes.ToUpper(body), []byte("COMMIT")) {
			p.mu.Lock()
			fn := p.onCommit
			p.onCommit = nil
			p.mu.Unlock()
			if fn != nil {
				cut.Store(true)
				fn(client, &msgConn{Conn: server, pending: msg})
				return
			}
			p.mu.Lock()
			p.trips = append(p.trips, trips)
			p.mu.Unlock()
			trips = 0
		}
		if _, err := server.Write(msg); err != nil {
			return
		}
	}
}

// msgConn carries the COMMIT message not yet forwarded: Forward sends it.
type msgConn struct {
	net.Conn
	pending []byte
}

// forward sends the held COMMIT to the server.
func forward(server net.Conn) {
	m := server.(*msgConn)
	_, _ = m.Conn.Write(m.pending)
}

// execModes are pgx's default mode (cached prepared statements) and the
// simple protocol that PgBouncer in transaction mode needs: batches, and
// so a Write's first round trip, differ between them.
func execModes() []pgx.QueryExecMode {
	return []pgx.QueryExecMode{pgx.QueryExecModeCacheStatement, pgx.QueryExecModeSimpleProtocol}
}

// inExecMode is a Config.ConfigurePool that sets the pools' query exec mode.
func inExecMode(mode pgx.QueryExecMode) func(string, *pgxpool.Config) {
	return func(_ string, pc *pgxpool.Config) { pc.ConnConfig.DefaultQueryExecMode = mode }
}
