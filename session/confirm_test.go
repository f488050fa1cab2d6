package session_test

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"hakit.dev/hatest"
	"hakit.dev/session"
)

// With its replica paused, a login's WAIT times out: by default the login
// stands unconfirmed (200, a warning logged); with RequireConfirm it is
// refused (503) and the user is not logged in.
func TestRequireConfirmRefusesAnUnconfirmedLogin(t *testing.T) {
	t.Parallel()
	rd := hatest.NewRedis(t, hatest.RedisOptions{Replicas: 1})
	master := redis.NewClient(&redis.Options{Addr: rd.Nodes[0].Addr()})
	defer master.Close()
	logs := &logBuffer{}
	// WaitTimeout: long enough for a running replica on a busy machine;
	// a paused one makes each durable change wait it out.
	opts := session.RedisOptions{Logger: slog.New(slog.NewTextHandler(logs, nil)), WaitTimeout: 2 * time.Second}
	lenient := newManager(t, session.NewRedisStore(master, opts), nil)
	opts.RequireConfirm = true
	strict := newManager(t, session.NewRedisStore(master, opts), nil)
	lax, in := helperApp(t, lenient, nil), helperApp(t, strict, nil)

	// The replica confirms: both log in.
	for _, app := range []*instance{lax, in} {
		u := newUser(t)
		u.must("POST", app, "/put?k=cart&v=teapot")
		if body := u.must("POST", app, "/login?user=ann"); !strings.HasPrefix(body, "token=") {
			t.Fatalf("login with the replica up: %q", body)
		}
	}

	if err := rd.Nodes[1].Pause(); err != nil {
		t.Fatal(err)
	}
	resumed := false
	resume := func() {
		if !resumed {
			resumed = true
			if err := rd.Nodes[1].Resume(); err != nil {
				t.Error(err)
			}
		}
	}
	defer resume()

	// Default: the login stands, unconfirmed, with a warning.
	u := newUser(t)
	u.must("POST", lax, "/put?k=cart&v=teapot")
	if body := u.must("POST", lax, "/login?user=ann"); !strings.HasPrefix(body, "token=") {
		t.Fatalf("lenient login with the replica paused: %q", body)
	}
	if got := u.must("GET", lax, "/"); got != "user=ann flashes=" {
		t.Fatalf("lenient: after login %q", got)
	}
	if !strings.Contains(logs.String(), "not confirmed by the Redis replicas in time") {
		t.Fatalf("no warning for the unconfirmed login:\n%s", logs)
	}

	// RequireConfirm: 503, not logged in.
	u = newUser(t)
	u.must("POST", in, "/put?k=cart&v=teapot")
	code, body, _ := u.do("POST", in, "/login?user=ann")
	if code != 503 || !strings.Contains(body, "replicas did not confirm") {
		t.Fatalf("strict login with the replica paused: %d %q", code, body)
	}
	if got := u.must("GET", in, "/"); got != "user= flashes=" {
		t.Fatalf("strict: logged in after a refused login: %q", got)
	}
	// The error is the store's, and says why.
	ctx := context.Background()
	err := session.NewRedisStore(master, opts).Delete(ctx, "some-token", true)
	if !errors.Is(err, session.ErrNotConfirmed) {
		t.Fatalf("Delete with the replica paused: %v", err)
	}

	// The replica back: the login goes through.
	resume()
	if body := u.must("POST", in, "/login?user=ann"); !strings.HasPrefix(body, "token=") {
		t.Fatalf("strict login with the replica back: %q", body)
	}
	if got := u.must("GET", in, "/"); got != "user=ann flashes=" {
		t.Fatalf("strict: after login %q", got)
	}
}

// A browser whose first request is its login (no session before it) gets
// a new session whose token was renewed on a session the store never
// saw: that change is durable too. With the replica paused and
// RequireConfirm the login is refused; before, it skipped WAIT and
// stood on the master alone, and a failover then lost it.
func TestFirstRequestLoginIsDurable(t *testing.T) {
	t.Parallel()
	rd := hatest.NewRedis(t, hatest.RedisOptions{Replicas: 1})
	master := redis.NewClient(&redis.Options{Addr: rd.Nodes[0].Addr()})
	defer master.Close()
	m := newManager(t, session.NewRedisStore(master, session.RedisOptions{Logger: quiet(),
		WaitTimeout: 2 * time.Second, RequireConfirm: true}), nil)
	in := newInstance(t, m, m.LoadAndSave)
	if got := newUser(t).must("POST", in, "/login?user=ann"); got == "" {
		t.Fatal("login with the replica up: empty answer")
	}
	if err := rd.Nodes[1].Pause(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := rd.Nodes[1].Resume(); err != nil {
			t.Error(err)
		}
	}()
	u := newUser(t)
	if code, body, _ := u.do("POST", in, "/login?user=bob"); code != 503 {
		t.Fatalf("a first-request login with the replica paused: %d %q; want 503 (not confirmed)", code, body)
	}
	if got := u.must("GET", in, "/get?k=user"); got != "" {
		t.Fatalf("logged in as %q after a refused login", got)
	}
}
