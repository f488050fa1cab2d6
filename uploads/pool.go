package uploads

import (
	"context"
	"errors"
	"fmt"
	"io"
	"runtime"
	"sync"
	"time"
)

// chunkSize is the unit in which part buffers are handed out.
const chunkSize = 256 << 10

// pool hands out the memory of part buffers chunk by chunk, as an
// upload's bytes arrive, within a fixed budget: an upload holds what its
// client has sent of the part it is filling (plus the chunk being read
// into), never a whole part reserved ahead of bytes that may trickle in
// for minutes.
//
// A part can be sent only when full (S3's 5 MiB minimum), so parts being
// filled could take the whole budget with none of them able to complete.
// The pool prevents that: it hands out a chunk only if afterwards some part
// being filled can still be completed from the free chunks and those of
// parts on their way to S3 (which come back without needing any). That
// invariant survives every other change (a part finished or given up adds
// its chunks to those), so some upload can always go on.
//
// That alone lets slow clients hold the pool: parts that have each taken
// a little, none near completion, leave too few chunks for any other part
// to be sure to complete, and a new upload would wait for the slowest of
// them. So:
//
//   - A reserve of the budget is kept for the first chunks of uploads
//     (not of their later parts) that the rest cannot take: an upload
//     that ends within its first chunk never needs more, and finds one
//     at once unless the whole reserve is on other uploads' first chunks
//     at that moment. A part on a reserved chunk that grows first moves
//     that chunk out of the reserve, as a new part's first chunk would be
//     had, and grows as any part from there.
//   - Every wait for memory ends after wait with ErrBusy: a part that
//     cannot grow (its client having sent more) is given up, its chunks
//     back in the pool, instead of holding them for as long as the others
//     take to finish theirs; a part that waits on a reserved chunk gives
//     it back at the latest then.
//
// Waiters are woken together and not served in order: under a load the
// pool cannot serve within wait, some are refused while others go on.
//
// Chunks are made on first need, a part's worth at a time, outside the Go
// heap (allocSlab), and kept on a free list (a sync.Pool would drop them
// at each GC and make the heap churn, which shows in RSS). They are given
// back to the OS when the pool is unreachable, which it is only once no
// part holds one: a part, and a reader of it, keep the pool.
type pool struct {
	perPart int           // chunks in a full part
	budget  int           // chunks in all, reserve included
	reserve int           // chunks kept for first chunks of uploads
	wait    time.Duration // longest wait for a chunk; ErrBusy after

	mu      sync.Mutex
	free    int // chunks outside the reserve that may still be handed out
	sending int // chunks of complete parts, back once sent
	filling map[*part]struct{}
	rfree   int      // reserved chunks that may still be handed out
	waiting int      // parts waiting for memory
	spare   [][]byte // made and not in use
	made    int
	slabs   *slabs        // the memory made, freed when the pool is unreachable
	changed chan struct{} // closed, and replaced, when chunks may be had
}

// slabs frees the memory of a pool's chunks.
type slabs struct {
	mu   sync.Mutex
	free []func()
}

func (s *slabs) add(free func()) {
	s.mu.Lock()
	s.free = append(s.free, free)
	s.mu.Unlock()
}

func (s *slabs) release() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, f := range s.free {
		f()
	}
	s.free = nil
}

// part is one part of an upload: its bytes in chunks from the pool.
type part struct {
	pool     *pool // keeps the chunks' memory mapped while the part lives
	chunks   [][]byte
	size     int
	held     int     // chunks counted outside the reserve (under the pool's lock)
	reserved bool    // its only chunk is a reserved one
	sealed   bool    // complete: on its way to S3
	stream   *stream // set when the part is sent as it fills (early.go)
}

// newPool returns a pool of parts parts of partSize bytes whose waits
// for memory last at most wait; an eighth of it is the reserve.
func newPool(parts int, partSize int64, wait time.Duration) *pool {
	perPart := int((partSize + chunkSize - 1) / chunkSize)
	budget := parts * perPart
	reserve := max(1, budget/8)
	p := &pool{perPart: perPart, budget: budget, reserve: reserve, wait: wait,
		free: budget - reserve, rfree: reserve, filling: map[*part]struct{}{}, slabs: &slabs{}, changed: make(chan struct{})}
	runtime.AddCleanup(p, (*slabs).release, p.slabs)
	return p
}

// grow adds a chunk to pt, which is being filled, waiting as long as the
// pool cannot give one without the risk described on pool, and at most
// p.wait. A part that is not the first of its upload (later) never gets
// a reserved chunk.
func (p *pool) grow(ctx context.Context, pt *part, later bool) error {
	p.mu.Lock()
	var (
		timer   *time.Timer
		expired bool
	)
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	for {
		granted := p.grantMain(pt)
		if !granted && len(pt.chunks) == 0 && !later && p.rfree > 0 {
			p.rfree--
			pt.reserved, granted = true, true
		}
		if granted || expired {
			if timer != nil {
				p.waiting--
			}
			if !granted {
				p.mu.Unlock()
				return &busyError{retryAfter: max(time.Second, p.wait.Round(time.Second)),
					why: fmt.Sprintf("no part memory became free within %s", p.wait)}
			}
			c := p.take()
			p.mu.Unlock()
			pt.pool = p
			pt.chunks = append(pt.chunks, c)
			return nil
		}
		if timer == nil {
			timer = time.NewTimer(p.wait)
			p.waiting++
		}
		changed := p.changed
		p.mu.Unlock()
		select {
		case <-changed:
		case <-timer.C:
			expired = true // one more look, then give up
		case <-ctx.Done():
			p.mu.Lock()
			p.waiting--
			p.mu.Unlock()
			return context.Cause(ctx)
		}
		p.mu.Lock()
	}
}

// grantMain counts one more chunk for pt outside the reserve, if
// grantable. A part on a reserved chunk first moves that chunk out of the
// reserve, as a new part's first chunk would be had, then grows as any.
func (p *pool) grantMain(pt *part) bool {
	if pt.reserved {
		if !p.grantable(pt, 1) {
			return false
		}
		p.free--
		pt.held, pt.reserved = 1, false
		p.filling[pt] = struct{}{}
		p.rfree++
		p.wake() // a reserved chunk is free again
	}
	if !p.grantable(pt, 1) {
		return false
	}
	p.free--
	pt.held++
	p.filling[pt] = struct{}{}
	return true
}

// grantable reports whether pt may have n more chunks outside the
// reserve: whether, after that, some part being filled (pt included)
// needs no more chunks than are free or on their way back.
func (p *pool) grantable(pt *part, n int) bool {
	if p.free < n {
		return false
	}
	avail := p.free - n + p.sending
	if p.perPart-(pt.held+n) <= avail {
		return true
	}
	for q := range p.filling {
		if q != pt && p.perPart-q.held <= avail {
			return true
		}
	}
	return false
}

// take returns a chunk that has been counted for a part.
func (p *pool) take() []byte {
	if len(p.spare) == 0 {
		p.makeChunks()
	}
	n := len(p.spare)
	c := p.spare[n-1]
	p.spare = p.spare[:n-1]
	return c
}

// makeChunks adds a part's worth of chunks to the spare ones (as many as
// the budget has left to make), in one allocation: the heap then grows as
// it would for whole part buffers, which keeps the peak RSS down.
func (p *pool) makeChunks() {
	k := min(p.perPart, p.budget-p.made)
	slab, free := allocSlab(k * chunkSize)
	p.slabs.add(free)
	for i := range k {
		p.spare = append(p.spare, slab[i*chunkSize:(i+1)*chunkSize:(i+1)*chunkSize])
	}
	p.made += k
}

// seal marks pt complete: its chunks come back without needing more.
func (p *pool) seal(pt *part) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if pt.sealed {
		return
	}
	pt.sealed = true
	if !pt.reserved {
		delete(p.filling, pt)
		p.sending += pt.held
	}
	p.wake()
}

// release gives pt's chunks back, sealed or not.
func (p *pool) release(pt *part) {
	p.mu.Lock()
	defer p.mu.Unlock()
	switch {
	case pt.reserved:
		p.rfree++
	case pt.sealed:
		p.sending -= pt.held
	default:
		delete(p.filling, pt)
	}
	p.free += pt.held
	p.spare = append(p.spare, pt.chunks...)
	pt.chunks, pt.held, pt.size, pt.reserved = nil, 0, 0, false
	p.wake()
}

func (p *pool) wake() {
	close(p.changed)
	p.changed = make(chan struct{})
}

// fill reads r into pt until pt holds limit bytes or r ends (eof). It
// asks the pool for a chunk only once a byte for it has arrived, so an
// upload that ends on a chunk's boundary never waits for memory it does
// not need. later is grow's.
func (p *pool) fill(ctx context.Context, pt *part, r io.Reader, limit int, later bool) (eof bool, err error) {
	for pt.size < limit {
		off := pt.size - (len(pt.chunks)-1)*chunkSize
		if len(pt.chunks) == 0 || off == chunkSize {
			var b [1]byte
			if _, err := io.ReadFull(r, b[:]); err == io.EOF {
				return true, nil
			} else if err != nil {
				return false, err
			}
			if pt.stream != nil {
				pt.stream.waitMemory(true)
			}
			err := p.grow(ctx, pt, later)
			if pt.stream != nil {
				pt.stream.waitMemory(false)
			}
			if err != nil {
				return false, err
			}
			pt.chunks[len(pt.chunks)-1][0] = b[0]
			pt.size++
			if pt.stream != nil {
				pt.stream.publish(pt.chunks, pt.size)
			}
			continue
		}
		c := pt.chunks[len(pt.chunks)-1]
		n, err := r.Read(c[off:min(chunkSize, off+limit-pt.size)])
		pt.size += n
		if n > 0 && pt.stream != nil {
			pt.stream.publish(pt.chunks, pt.size)
		}
		if err == io.EOF {
			return true, nil
		}
		if err != nil {
			return false, err
		}
	}
	return false, nil
}

// reader returns a reader of pt's bytes; it seeks, so the SDK can retry.
func (pt *part) reader() io.ReadSeeker { return &partReader{pt: pt} }

type partReader struct {
	pt  *part
	off int64
}

func (r *partReader) Read(b []byte) (int, error) {
	if r.off >= int64(r.pt.size) {
		return 0, io.EOF
	}
	n := copyFrom(b, r.pt.chunks, r.pt.size, int(r.off))
	r.off += int64(n)
	return n, nil
}

// copyFrom copies into b the bytes of a part's chunks from off, which is
// before size, up to the end of off's chunk or of the size's first bytes.
func copyFrom(b []byte, chunks [][]byte, size, off int) int {
	i, o := off/chunkSize, off%chunkSize
	return copy(b, chunks[i][o:min(chunkSize, size-i*chunkSize)])
}

func (r *partReader) Seek(offset int64, whence int) (int64, error) {
	switch whence {
	case io.SeekCurrent:
		offset += r.off
	case io.SeekEnd:
		offset += int64(r.pt.size)
	}
	if offset < 0 {
		return 0, errors.New("uploads: seek before the start of a part")
	}
	r.off = offset
	return offset, nil
}
