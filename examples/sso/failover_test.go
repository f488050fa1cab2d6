package main

import (
	"context"
	"fmt"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"hakit.dev/hatest"
)

// TestPostgresFailover loses the PostgreSQL primary (SIGKILL: a machine
// gone) while logins run through HAProxy to two instances, and promotes
// the synchronous standby. Every account whose creation was acknowledged
// before the loss still signs in after it (each commit waited for the
// standby), sign-ups work on the new primary, and the logins running
// through the failover are counted: dbrouter waits for the new primary
// instead of failing them.
func TestPostgresFailover(t *testing.T) {
	t.Parallel()
	services(t)
	ctx := context.Background()
	pg := hatest.NewPostgres(t, hatest.PostgresOptions{Replicas: 1, Synchronous: true})
	c := newClusterOn(t, pg, 2, true)
	a1 := c.rp("client-a1")

	const pw = "correct horse battery"
	var created []string
	for i := range 5 {
		email := fmt.Sprintf("before%d@example.com", i)
		f := newFlow()
		a1.mustExchange(t, f, c.browser().login(a1, f, email, pw, true))
		created = append(created, email)
	}

	// Logins (password, consent remembered) in a loop, through the loss.
	signIn := func(email string) error {
		b := c.browser()
		f := newFlow()
		p := b.authorize(a1, f)
		m := authRequestIDRe.FindStringSubmatch(p.body)
		if m == nil {
			return fmt.Errorf("authorize: %d %.200s", p.status, p.body)
		}
		p = b.post("/login", url.Values{"authRequestID": {m[1]}, "email": {email}, "password": {pw}})
		if p.location == "" {
			return fmt.Errorf("login: %d %s %.200s", p.status, p.url, p.body)
		}
		u, _ := url.Parse(p.location)
		_, err := a1.exchange(t, f, u.Query().Get("code"))
		return err
	}
	var ok, failed atomic.Int32
	var mu sync.Mutex
	var failures []string
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := range 2 {
		wg.Go(func() {
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				if err := signIn(created[(i+w)%len(created)]); err != nil {
					failed.Add(1)
					mu.Lock()
					failures = append(failures, err.Error())
					mu.Unlock()
				} else {
					ok.Add(1)
				}
			}
		})
	}
	hatest.WaitFor(t, 20*time.Second, "logins before the failover", func() bool { return ok.Load() >= 4 })

	if err := pg.Nodes[0].Kill(); err != nil {
		t.Fatal(err)
	}
	lost := time.Now()
	if err := pg.Nodes[1].Promote(ctx); err != nil {
		t.Fatal(err)
	}
	// The promoted node has no standby left to wait for.
	if err := pg.Nodes[1].SetSetting(ctx, "synchronous_standby_names", ""); err != nil {
		t.Fatal(err)
	}
	atFailover := ok.Load()
	hatest.WaitFor(t, 60*time.Second, "logins after the failover", func() bool { return ok.Load() >= atFailover+6 })
	close(stop)
	wg.Wait()
	t.Logf("failover at +%s; %d logins succeeded, %d failed", time.Since(lost).Round(time.Millisecond), ok.Load(), failed.Load())
	if n := failed.Load(); n > 0 {
		t.Errorf("%d logins failed through the failover: %s", n, strings.Join(failures[:min(len(failures), 3)], "; "))
	}

	// Every account acknowledged before the loss signs in; a new one can
	// be created.
	for _, email := range created {
		if err := signIn(email); err != nil {
			t.Errorf("%s after the failover: %v", email, err)
		}
	}
	f := newFlow()
	a1.mustExchange(t, f, c.browser().login(a1, f, "after@example.com", pw, true))
}
