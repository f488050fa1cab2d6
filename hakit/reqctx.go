package hakit

import (
	"context"
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
