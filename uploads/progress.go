package uploads

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"sync"
	"time"
)

// progress bounds a transfer with a client by its progress, not by a total
// time: within every window of time the server spends waiting on the
// client (blocked reading the request body, or writing the response), at
// least quota bytes must pass. It works through the connection's read or
// write deadline (http.ResponseController), set before each read or write
// and cleared after it, so time the server spends elsewhere — sending parts
// to S3, waiting for a part buffer — does not count against the client.
//
// It also ends a blocked read or write when the request's context ends:
// at its deadline, or when it is cancelled.
type progress struct {
	rc     *http.ResponseController
	set    func(time.Time) error // the connection's read or write deadline
	window time.Duration         // 0: no rate bound, only the context
	quota  int64                 // bytes per window
	grace  time.Duration         // left to the client after a failure
	ctx    context.Context
	hard   time.Time // the context's deadline; zero if none
	write  bool

	mu      sync.Mutex
	over    bool // finished: leave the connection alone
	ctxDone bool // the context ended; its watcher set a past deadline
	unwatch func() bool
	start   time.Time     // of the read or write in progress
	dl      time.Time     // the deadline set for it
	waited  time.Duration // waiting on the client in this window
	moved   int64         // bytes in this window
	total   int64
	err     error // why the transfer was cut
}

// bound returns the progress bound of a transfer on w's connection (its
// reads if write is false, else its writes), or nil if w cannot set
// deadlines.
func (s *Store) bound(ctx context.Context, w http.ResponseWriter, write bool) *progress {
	if w == nil {
		return nil
	}
	rc := http.NewResponseController(w)
	p := &progress{rc: rc, set: rc.SetReadDeadline, ctx: ctx, write: write}
	if write {
		p.set = rc.SetWriteDeadline
	} else {
		p.grace = s.cfg.Window
	}
	if s.cfg.MinRate > 0 {
		p.window = s.cfg.Window
		p.quota = max(1, int64(float64(s.cfg.MinRate)*s.cfg.Window.Seconds()))
	}
	p.hard, _ = ctx.Deadline()
	if err := p.set(p.deadline(time.Now())); err != nil {
		if errors.Is(err, http.ErrNotSupported) {
			s.unbounded.Do(func() {
				s.log.Warn("uploads: the ResponseWriter cannot set connection deadlines (a wrapper without an Unwrap method?): transfers are not bounded by progress or by the request's deadline")
			})
		}
		return nil
	}
	p.unwatch = context.AfterFunc(ctx, func() {
		p.mu.Lock()
		defer p.mu.Unlock()
		if !p.over {
			p.ctxDone = true
			_ = p.set(time.Now()) // wake a blocked read or write
		}
	})
	return p
}

// deadline is the connection deadline for a read or write starting now.
func (p *progress) deadline(now time.Time) time.Time {
	var dl time.Time
	if p.window > 0 {
		dl = now.Add(p.window - p.waited)
	}
	if !p.hard.IsZero() && (dl.IsZero() || p.hard.Before(dl)) {
		dl = p.hard
	}
	return dl
}

// before is called before each read or write.
func (p *progress) before() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.err != nil {
		return p.err
	}
	if p.ctxDone {
		p.err = p.contextErr()
		return p.err
	}
	p.start = time.Now()
	p.dl = p.deadline(p.start)
	_ = p.set(p.dl)
	return nil
}

// after is called after each read or write with its result, and returns
// the error to pass on.
func (p *progress) after(n int, err error) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	now := time.Now()
	p.total += int64(n)
	p.moved += int64(n)
	p.waited += now.Sub(p.start)
	moved, waited := p.moved, p.waited
	if p.moved >= p.quota {
		p.moved, p.waited = 0, 0
	}
	switch {
	case err == nil || err == io.EOF:
		if !p.ctxDone {
			_ = p.set(time.Time{}) // not waiting on the client until the next call
		}
		return err
	case !errors.Is(err, os.ErrDeadlineExceeded):
		return err
	case !p.dl.IsZero() && !now.Before(p.dl) && p.dl.Equal(p.hard):
		p.err = p.contextErr()
	case !p.dl.IsZero() && !now.Before(p.dl):
		what := "sent"
		if p.write {
			what = "took"
		}
		p.err = fmt.Errorf("%w: the client %s %d bytes in %s, fewer than the minimum of %d (%d bytes/s over %s)",
			ErrTooSlow, what, moved, waited.Round(time.Millisecond), p.quota, int64(float64(p.quota)/p.window.Seconds()), p.window)
	case p.ctxDone || p.ctx.Err() != nil:
		p.err = p.contextErr() // the watcher woke it
	default:
		return err // another deadline: the server's ReadTimeout or WriteTimeout
	}
	return p.err
}

// contextErr explains why the context ended the transfer: its deadline
// (which may have passed a moment before the context says so, or after
// net/http cancelled it for the failed read) or its cancellation.
func (p *progress) contextErr() error {
	err := p.ctx.Err()
	if err == nil || errors.Is(err, context.DeadlineExceeded) || (!p.hard.IsZero() && !time.Now().Before(p.hard)) {
		return fmt.Errorf("uploads: the request's deadline passed after %d bytes, while waiting on the client (an upload or download route needs a long timeout or none; the minimum rate bounds it): %w",
			p.total, context.DeadlineExceeded)
	}
	return fmt.Errorf("uploads: the request was cancelled after %d bytes: %w", p.total, err)
}

// cause is the error that cut the transfer, if it did.
func (p *progress) cause() error {
	if p == nil {
		return nil
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.err
}

// finish ends the bound. After a failure the client is given grace more
// (the request body's rest can be drained for a clean close of the
// connection, without waiting long for a client that stopped), or none
// after being cut for slowness.
func (p *progress) finish(failed bool) {
	if p == nil {
		return
	}
	p.unwatch()
	p.mu.Lock()
	defer p.mu.Unlock()
	p.over = true
	if failed && !errors.Is(p.err, ErrTooSlow) {
		_ = p.set(time.Now().Add(p.grace))
	}
}

// progressReader reads through a progress bound.
type progressReader struct {
	r io.Reader
	p *progress
}

func (r *progressReader) Read(b []byte) (int, error) {
	if err := r.p.before(); err != nil {
		return 0, err
	}
	n, err := r.r.Read(b)
	return n, r.p.after(n, err)
}

// progressWriter writes through a progress bound.
type progressWriter struct {
	w io.Writer
	p *progress
}

func (w *progressWriter) Write(b []byte) (int, error) {
	if err := w.p.before(); err != nil {
		return 0, err
	}
	n, err := w.w.Write(b)
	return n, w.p.after(n, err)
}

// flush sends what the ResponseWriter buffered, within the bound.
func (w *progressWriter) flush() error {
	if err := w.p.before(); err != nil {
		return err
	}
	err := w.p.rc.Flush()
	if errors.Is(err, http.ErrNotSupported) {
		err = nil
	}
	return w.p.after(0, err)
}
