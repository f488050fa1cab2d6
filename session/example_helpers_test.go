package session_test

import (
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"

	"hakit.dev/session"
)

// A login form posts, the session is renewed and holds the user, and the
// next page shows a flash message once (Post/Redirect/Get).
func ExampleManager_Login() {
	sessions, err := session.New(session.Config{
		Store:  session.NewMemoryStore(), // in production: NewRedisStore or NewPostgresStore
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /login", func(w http.ResponseWriter, r *http.Request) {
		// … check the password, then:
		if err := sessions.Login(r.Context(), "user-42"); err != nil {
			http.Error(w, "try again in a moment", http.StatusServiceUnavailable) // or hakit.Error(w, r, err)
			return
		}
		sessions.Flash(r.Context(), "info", "Welcome back.")
		http.Redirect(w, r, "/", http.StatusSeeOther)
	})
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "user %q", sessions.UserID(r.Context()))
		for _, f := range sessions.Flashes(r.Context()) {
			fmt.Fprintf(w, ", %s: %s", f.Kind, f.Text)
		}
	})
	h := sessions.LoadAndSave(mux)

	var cookie *http.Cookie
	get := func(method, path string) string {
		req := httptest.NewRequest(method, "https://notes.example"+path, nil)
		if cookie != nil {
			req.AddCookie(cookie)
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if c := rec.Result().Cookies(); len(c) > 0 {
			cookie = c[0] // a new token: the session was renewed
		}
		return rec.Body.String()
	}
	fmt.Println(get("GET", "/"))
	get("POST", "/login")
	fmt.Println(get("GET", "/")) // after the redirect
	fmt.Println(get("GET", "/")) // a reload: the flash is gone
	// Output:
	// user ""
	// user "user-42", info: Welcome back.
	// user "user-42"
}
