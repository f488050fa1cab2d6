package dbrouter

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync/atomic"
)

// LSN is a PostgreSQL write-ahead log position. LSNs only grow, across
// failovers too (a promoted replica continues from where it stood), so the
// commit LSN of a write is a token that says "a node that has replayed this
// far has my write".
type LSN uint64

// ParseLSN parses an LSN in PostgreSQL's text form ("16/B374D848"). The hex
// digits may be upper or lower case, so it also reads the form [LSN.String]
// produces ("16/b374d848"): the token to carry in a cookie, a session or a
// job payload.
func ParseLSN(s string) (LSN, error) {
	hi, lo, ok := strings.Cut(s, "/")
	if ok {
		h, err1 := strconv.ParseUint(hi, 16, 32)
		l, err2 := strconv.ParseUint(lo, 16, 32)
		if err1 == nil && err2 == nil {
			return LSN(h<<32 | l), nil
		}
	}
	return 0, fmt.Errorf("dbrouter: bad LSN %q (want the form 16/B374D848)", s)
}

// String returns the LSN in PostgreSQL's text form but with lower-case hex
// digits ("16/b374d848"); [ParseLSN] reads it back.
func (l LSN) String() string {
	return strconv.FormatUint(uint64(l)>>32, 16) + "/" + strconv.FormatUint(uint64(l)&0xffffffff, 16)
}

// causal is the read-your-writes position carried by a context: Writes
// raise it to their commit LSN, Reads only use nodes that have replayed it.
type causal struct{ lsn atomic.Uint64 }

func (c *causal) raise(l LSN) { atomicMax(&c.lsn, uint64(l)) }

// atomicMax raises a to v if v is higher.
func atomicMax(a *atomic.Uint64, v uint64) {
	for {
		cur := a.Load()
		if v <= cur || a.CompareAndSwap(cur, v) {
			return
		}
	}
}

type causalKey struct{}

// WithMinLSN returns a context whose Reads see every write up to lsn: they
// use only replicas that have replayed that far (waiting up to
// Config.ReplicaWait for one), else the primary. Writes made with the
// returned context raise the position to their own commit LSN, so later
// Reads with it see them too; [MinLSN] reads the position back, to carry to
// the user's next request (in a session or cookie) or into a job.
//
// Use lsn 0 to start tracking a request's writes without a prior position.
func WithMinLSN(ctx context.Context, lsn LSN) context.Context {
	c := &causal{}
	if prev, ok := ctx.Value(causalKey{}).(*causal); ok {
		c.lsn.Store(prev.lsn.Load())
	}
	c.raise(lsn)
	return context.WithValue(ctx, causalKey{}, c)
}

// MinLSN returns the read-your-writes position of ctx: the highest of the
// LSN given to [WithMinLSN] and the commit LSNs of the Writes made with
// ctx since. It is 0 for a context without one.
func MinLSN(ctx context.Context) LSN {
	if c, ok := ctx.Value(causalKey{}).(*causal); ok {
		return LSN(c.lsn.Load())
	}
	return 0
}

// hasMinLSN reports whether ctx carries a read-your-writes position.
func hasMinLSN(ctx context.Context) bool {
	_, ok := ctx.Value(causalKey{}).(*causal)
	return ok
}

// raiseMinLSN records a write's commit LSN in ctx's read-your-writes
// position, if it carries one.
func raiseMinLSN(ctx context.Context, lsn LSN) {
	if c, ok := ctx.Value(causalKey{}).(*causal); ok {
		c.raise(lsn)
	}
}
