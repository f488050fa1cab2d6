package session_test

import (
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"

	"hakit.dev/session"
)

func Example() {
	// In production: session.NewRedisStore(redis.NewFailoverClient(…), …)
	// or session.NewPostgresStore(router.Primary, …).
	sessions, err := session.New(session.Config{
		Store:  session.NewMemoryStore(),
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /cart", func(w http.ResponseWriter, r *http.Request) {
		sessions.Put(r.Context(), "cart", sessions.GetInt(r.Context(), "cart")+1)
	})
	mux.HandleFunc("GET /cart", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "%d items", sessions.GetInt(r.Context(), "cart"))
	})
	h := sessions.LoadAndSave(mux)

	var cookie *http.Cookie
	for range 2 {
		req := httptest.NewRequest("POST", "https://shop.example/cart", nil)
		if cookie != nil {
			req.AddCookie(cookie)
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		// The cookie comes with the first response only: the token
		// does not change after that.
		if c := rec.Result().Cookies(); len(c) > 0 {
			cookie = c[0]
		}
	}
	req := httptest.NewRequest("GET", "https://shop.example/cart", nil)
	req.AddCookie(cookie)
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	fmt.Println(cookie.Name, cookie.Secure, cookie.HttpOnly)
	fmt.Println(rec.Body.String())
	// Output:
	// __Host-session true true
	// 2 items
}
