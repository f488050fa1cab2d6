package uploads

import (
	"context"
	"errors"
	"io"
	"sync"
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
// Chunks are made on first need, a part's worth at a time, and kept on a
// free list (a sync.Pool would drop them at each GC and make the heap
// churn, which shows in RSS).
type pool struct {
	perPart int // chunks in a full part
	budget  int // chunks in all

	mu      sync.Mutex
	free    int // chunks that may still be handed out
	sending int // chunks of complete parts, back once sent
	filling map[*part]struct{}
	spare   [][]byte // made and not in use
	made    int
	changed chan struct{} // closed, and replaced, when chunks may be had
}

// part is one part of an upload: its bytes in chunks from the pool.
type part struct {
	chunks [][]byte
	size   int
	held   int  // chunks counted by the pool (under its lock)
	sealed bool // complete: on its way to S3
}

func newPool(parts int, partSize int64) *pool {
	perPart := int((partSize + chunkSize - 1) / chunkSize)
	return &pool{perPart: perPart, budget: parts * perPart, free: parts * perPart, filling: map[*part]struct{}{}, changed: make(chan struct{})}
}

// grow adds a chunk to pt, which is being filled, waiting as long as the
// pool cannot give one without the risk described on pool.
func (p *pool) grow(ctx context.Context, pt *part) error {
	for {
		p.mu.Lock()
		if p.grantable(pt) {
			p.free--
			pt.held++
			p.filling[pt] = struct{}{}
			if len(p.spare) == 0 {
				p.makeChunks()
			}
			n := len(p.spare)
			c := p.spare[n-1]
			p.spare = p.spare[:n-1]
			p.mu.Unlock()
			pt.chunks = append(pt.chunks, c)
			return nil
		}
		changed := p.changed
		p.mu.Unlock()
		select {
		case <-changed:
		case <-ctx.Done():
			return context.Cause(ctx)
		}
	}
}

// makeChunks adds a part's worth of chunks to the spare ones (as many as
// the budget has left to make), in one allocation: the heap then grows as
// it would for whole part buffers, which keeps the peak RSS down.
func (p *pool) makeChunks() {
	k := min(p.perPart, p.budget-p.made)
	slab := make([]byte, k*chunkSize)
	for i := range k {
		p.spare = append(p.spare, slab[i*chunkSize:(i+1)*chunkSize:(i+1)*chunkSize])
	}
	p.made += k
}

// grantable reports whether pt may have one more chunk: whether, after
// that, some part being filled (pt included) needs no more chunks than are
// free or on their way back.
func (p *pool) grantable(pt *part) bool {
	if p.free == 0 {
		return false
	}
	avail := p.free - 1 + p.sending
	if p.perPart-(pt.held+1) <= avail {
		return true
	}
	for q := range p.filling {
		if q != pt && p.perPart-q.held <= avail {
			return true
		}
	}
	return false
}

// seal marks pt complete: its chunks come back without needing more.
func (p *pool) seal(pt *part) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if pt.sealed {
		return
	}
	pt.sealed = true
	delete(p.filling, pt)
	p.sending += pt.held
	p.wake()
}

// release gives pt's chunks back, sealed or not.
func (p *pool) release(pt *part) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if pt.sealed {
		p.sending -= pt.held
	} else {
		delete(p.filling, pt)
	}
	p.free += pt.held
	p.spare = append(p.spare, pt.chunks...)
	pt.chunks, pt.held, pt.size = nil, 0, 0
	p.wake()
}

func (p *pool) wake() {
	close(p.changed)
	p.changed = make(chan struct{})
}

// fill reads r into pt until pt holds limit bytes or r ends (eof).
func (p *pool) fill(ctx context.Context, pt *part, r io.Reader, limit int) (eof bool, err error) {
	for pt.size < limit {
		off := pt.size - (len(pt.chunks)-1)*chunkSize
		if len(pt.chunks) == 0 || off == chunkSize {
			if err := p.grow(ctx, pt); err != nil {
				return false, err
			}
			off = 0
		}
		c := pt.chunks[len(pt.chunks)-1]
		n, err := r.Read(c[off:min(chunkSize, off+limit-pt.size)])
		pt.size += n
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
	i, o := int(r.off/chunkSize), int(r.off%chunkSize)
	end := min(chunkSize, r.pt.size-i*chunkSize)
	n := copy(b, r.pt.chunks[i][o:end])
	r.off += int64(n)
	return n, nil
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
