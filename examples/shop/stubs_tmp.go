package main

import (
	"context"
	"net/http"

	"hakit.dev/jobs"
)

func (s *shop) home(w http.ResponseWriter, r *http.Request) {
	s.render(w, r, http.StatusOK, "home.html", nil)
}
func (s *shop) category(w http.ResponseWriter, r *http.Request)    { fail(w, r, 404, "soon") }
func (s *shop) search(w http.ResponseWriter, r *http.Request)      { fail(w, r, 404, "soon") }
func (s *shop) product(w http.ResponseWriter, r *http.Request)     { fail(w, r, 404, "soon") }
func (s *shop) cart(w http.ResponseWriter, r *http.Request)        { fail(w, r, 404, "soon") }
func (s *shop) cartAdd(w http.ResponseWriter, r *http.Request)     { fail(w, r, 404, "soon") }
func (s *shop) cartUpdate(w http.ResponseWriter, r *http.Request)  { fail(w, r, 404, "soon") }
func (s *shop) checkout(w http.ResponseWriter, r *http.Request)    { fail(w, r, 404, "soon") }
func (s *shop) addressForm(w http.ResponseWriter, r *http.Request) { fail(w, r, 404, "soon") }
func (s *shop) addressSave(w http.ResponseWriter, r *http.Request) { fail(w, r, 404, "soon") }
func (s *shop) paymentForm(w http.ResponseWriter, r *http.Request) { fail(w, r, 404, "soon") }
func (s *shop) paymentSave(w http.ResponseWriter, r *http.Request) { fail(w, r, 404, "soon") }
func (s *shop) review(w http.ResponseWriter, r *http.Request)      { fail(w, r, 404, "soon") }
func (s *shop) place(w http.ResponseWriter, r *http.Request)       { fail(w, r, 404, "soon") }
func (s *shop) myOrders(w http.ResponseWriter, r *http.Request)    { fail(w, r, 404, "soon") }
func (s *shop) order(w http.ResponseWriter, r *http.Request)       { fail(w, r, 404, "soon") }
func (s *shop) loginForm(w http.ResponseWriter, r *http.Request)   { fail(w, r, 404, "soon") }
func (s *shop) login(w http.ResponseWriter, r *http.Request)       { fail(w, r, 404, "soon") }
func (s *shop) registerForm(w http.ResponseWriter, r *http.Request) {
	fail(w, r, 404, "soon")
}
func (s *shop) register(w http.ResponseWriter, r *http.Request)    { fail(w, r, 404, "soon") }
func (s *shop) logout(w http.ResponseWriter, r *http.Request)      { fail(w, r, 404, "soon") }
func (s *shop) ssoStart(w http.ResponseWriter, r *http.Request)    { fail(w, r, 404, "soon") }
func (s *shop) ssoCallback(w http.ResponseWriter, r *http.Request) { fail(w, r, 404, "soon") }

type user struct {
	ID      int64
	Name    string
	IsAdmin bool
}

func (s *shop) currentUser(ctx context.Context) *user { return nil }
func (s *shop) cartCount(ctx context.Context) int     { return 0 }
func (s *shop) ensureAdmin(ctx context.Context) error { return nil }
func (s *shop) seed(ctx context.Context) error        { return s.seedImages(ctx) }
func (s *shop) registerJobs(w *jobs.Worker)           {}
func (s *shop) schedule(sc *jobs.Scheduler) error     { return nil }
