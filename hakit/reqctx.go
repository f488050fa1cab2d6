package hakit

import (
	"context"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/go-chi/chi/v5"
)

// reqContext is a request's context as the stack makes it: one allocation
// that carries the request info and chi's route context, and the request
// timeout as a deadline that costs nothing until someone waits on it.
//
// context.WithTimeout starts a timer and registers with the parent for
// every request, about as much as the rest of the stack together. Here
// the real deadline context is made only when Done or a late Err is
// called (a database call, a select on ctx.Done()); a handler that never
// waits pays nothing. Once made, Done, Err and the context package's own
// lookups (context.AfterFunc, context.Cause) go to it, so it behaves as a
// context.WithDeadline would.
type reqContext struct {
	parent   context.Context
	info     requestInfo
	rctx     *chi.Context // nil when the parent already has one
	deadline time.Time    // zero: no timeout
	inner    atomic.Pointer[deadlineCtx]
}

// reqState is all the stack allocates per request: the context, the copy
// of the request that carries it, and the response writer's wrapper, in
// one allocation (sync.Pool's Get and Put would cost more than the bytes).
// A handler that keeps the context keeps the request copy alive with it
// (it usually keeps both).
type reqState struct {
	ctx reqContext
	req http.Request
	sw  statusWriter
}

type reqCtxKey struct{}

type deadlineCtx struct {
	context.Context
	cancel context.CancelFunc
}

func (c *reqContext) Deadline() (time.Time, bool) {
	if c.deadline.IsZero() {
		return c.parent.Deadline()
	}
	if d, ok := c.parent.Deadline(); ok && d.Before(c.deadline) {
		return d, true
	}
	return c.deadline, true
}

func (c *reqContext) Done() <-chan struct{} {
	if c.deadline.IsZero() {
		return c.parent.Done()
	}
	return c.materialize().Done()
}

func (c *reqContext) Err() error {
	if c.deadline.IsZero() {
		return c.parent.Err()
	}
	if in := c.inner.Load(); in != nil {
		return in.Err()
	}
	if err := c.parent.Err(); err != nil {
		return err
	}
	if !time.Now().Before(c.deadline) {
		return c.materialize().Err()
	}
	return nil
}

func (c *reqContext) Value(key any) any {
	switch key {
	case infoKey{}:
		return &c.info
	case reqCtxKey{}:
		return c
	case chi.RouteCtxKey:
		if c.rctx != nil {
			return c.rctx
		}
	}
	if in := c.inner.Load(); in != nil {
		return in.Value(key)
	}
	return c.parent.Value(key)
}

func (c *reqContext) String() string { return "hakit.requestContext" }

// materialize makes the deadline context, once.
func (c *reqContext) materialize() context.Context {
	if in := c.inner.Load(); in != nil {
		return in
	}
	ctx, cancel := context.WithDeadline(c.parent, c.deadline)
	in := &deadlineCtx{Context: ctx, cancel: cancel}
	if !c.inner.CompareAndSwap(nil, in) {
		cancel()
		return c.inner.Load()
	}
	return in
}

// release ends the deadline context, if it was made, when the request is
// over.
func (c *reqContext) release() {
	if in := c.inner.Load(); in != nil {
		in.cancel()
	}
}

// Timeout returns middleware that gives the requests it handles their own
// timeout instead of Config.RequestTimeout (StackConfig.RequestTimeout):
// longer, shorter, or none when d <= 0. Like RequestTimeout it is only a
// deadline on the request's context (see Config.RequestTimeout for what
// that does and does not bound). Use it on the routes that need it, so
// other requests pay nothing for it:
//
//	r.With(hakit.Timeout(-1)).Post("/uploads", upload) // bounded by the uploads package's progress checks
//	r.With(hakit.Timeout(2*time.Minute)).Get("/report", report)
//
// The request's context keeps its values and still ends when the client
// goes away or the server closes the connection; the stack's deadline no
// longer applies, also if middleware before Timeout already waited on the
// context. Cancellation that middleware between the stack and Timeout
// added to the context is not carried over: put such middleware after
// Timeout. Outside the stack there is no deadline to replace, and Timeout
// can only shorten the one the context has.
func Timeout(d time.Duration) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			ctx := r.Context()
			if rc, ok := ctx.Value(reqCtxKey{}).(*reqContext); ok && !rc.deadline.IsZero() {
				ctx = &withoutDeadline{Context: ctx, rc: rc}
			}
			var cancel context.CancelFunc
			if d > 0 {
				ctx, cancel = context.WithTimeout(ctx, d)
			} else {
				// A context of its own, so context.Cause and the context
				// package's lookups do not reach the stack's deadline.
				ctx, cancel = context.WithCancel(ctx)
			}
			defer cancel()
			next.ServeHTTP(w, r.WithContext(ctx))
		})
	}
}

// withoutDeadline is a request's context without the stack's deadline: its
// values are those of the context (the stack's and any middleware's); it
// ends when the stack's parent does (the connection's context).
type withoutDeadline struct {
	context.Context // for Value
	rc              *reqContext
}

func (c *withoutDeadline) Deadline() (time.Time, bool) { return c.rc.parent.Deadline() }
func (c *withoutDeadline) Done() <-chan struct{}       { return c.rc.parent.Done() }
func (c *withoutDeadline) Err() error                  { return c.rc.parent.Err() }
func (c *withoutDeadline) String() string              { return "hakit.routeContext" }

// AfterFunc lets contexts made from this one register with the
// connection's context rather than start a goroutine each (the context
// package looks for this method).
func (c *withoutDeadline) AfterFunc(f func()) func() bool { return context.AfterFunc(c.rc.parent, f) }
