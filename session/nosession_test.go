package session_test

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"hakit.dev/session"
)

// Code outside LoadAndSave (an error page answering a request that never
// reached it) sees no session: getters return zero values, changes are
// dropped (logged) or return ErrNoSession; nothing panics.
func TestOutsideLoadAndSaveNothingPanics(t *testing.T) {
	t.Parallel()
	logs := &logBuffer{}
	m, err := session.New(session.Config{Store: session.NewMemoryStore(), Insecure: true,
		Logger: slog.New(slog.NewTextHandler(logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	other, err := session.New(session.Config{Store: session.NewMemoryStore(), Insecure: true, Logger: quiet()})
	if err != nil {
		t.Fatal(err)
	}
	check := func(name string, ctx context.Context) {
		t.Helper()
		defer func() {
			if v := recover(); v != nil {
				t.Fatalf("%s: panicked: %v", name, v)
			}
		}()
		if m.Get(ctx, "k") != nil || m.GetString(ctx, "k") != "" || m.GetInt(ctx, "k") != 0 || m.GetBool(ctx, "k") ||
			m.GetBytes(ctx, "k") != nil || !m.GetTime(ctx, "k").IsZero() || m.Exists(ctx, "k") || len(m.Keys(ctx)) != 0 ||
			m.Token(ctx) != "" || !m.Deadline(ctx).IsZero() || m.UserID(ctx) != "" || m.Flashes(ctx) != nil ||
			m.Pop(ctx, "k") != nil || m.PopString(ctx, "k") != "" {
			t.Errorf("%s: a getter returned a value", name)
		}
		m.Put(ctx, "k", "v")
		m.Remove(ctx, "k")
		m.Flash(ctx, "info", "hello")
		m.Durable(ctx)
		ran := false
		m.BeforeSave(ctx, func() { ran = true })
		if m.GetString(ctx, "k") != "" || m.Flashes(ctx) != nil || ran {
			t.Errorf("%s: a change outside LoadAndSave was kept", name)
		}
		for op, err := range map[string]error{"Clear": m.Clear(ctx), "RenewToken": m.RenewToken(ctx),
			"Destroy": m.Destroy(ctx), "Login": m.Login(ctx, "u1"), "Logout": m.Logout(ctx)} {
			if !errors.Is(err, session.ErrNoSession) {
				t.Errorf("%s: %s: %v, want ErrNoSession", name, op, err)
			}
		}
		// RequireLogin sends a request with no session to otherwise.
		rec := httptest.NewRecorder()
		m.RequireLogin(nil)(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			t.Errorf("%s: RequireLogin let a request with no session through", name)
		})).ServeHTTP(rec, httptest.NewRequestWithContext(ctx, "GET", "/", nil))
		if rec.Code != http.StatusUnauthorized {
			t.Errorf("%s: RequireLogin answered %d", name, rec.Code)
		}
	}
	check("no LoadAndSave", context.Background())

	// Behind another Manager's LoadAndSave: that session is not m's.
	done := false
	other.LoadAndSave(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		other.Put(r.Context(), "k", "other's")
		check("another Manager's LoadAndSave", r.Context())
		if other.GetString(r.Context(), "k") != "other's" {
			t.Error("the other Manager's session changed")
		}
		done = true
	})).ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("GET", "/", nil))
	if !done {
		t.Fatal("the handler did not run")
	}

	// The dropped changes are logged.
	if l := logs.String(); !strings.Contains(l, `Put of \"k\" outside LoadAndSave`) || !strings.Contains(l, "BeforeSave outside LoadAndSave") {
		t.Errorf("the dropped changes are not logged:\n%s", l)
	}

	// Behind its own LoadAndSave everything works as before.
	rec := httptest.NewRecorder()
	m.LoadAndSave(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		m.Put(r.Context(), "k", "v")
		if err := m.Login(r.Context(), "u1"); err != nil {
			t.Error(err)
		}
		if m.GetString(r.Context(), "k") != "v" || m.UserID(r.Context()) != "u1" || m.Token(r.Context()) == "" ||
			m.Deadline(r.Context()).Before(time.Now()) {
			t.Error("the session does not work behind LoadAndSave")
		}
	})).ServeHTTP(rec, httptest.NewRequest("GET", "/", nil))
	if rec.Header().Get("Set-Cookie") == "" {
		t.Error("no session cookie")
	}
}
