package uploads

import (
	"bytes"
	"context"
	"errors"
	"io"
	"math/rand/v2"
	"runtime"
	"sync"
	"testing"
	"time"
)

// dribble gives n bytes in reads of at most 100 KiB.
type dribble struct {
	n   int
	rnd *rand.Rand
}

func (d *dribble) Read(p []byte) (int, error) {
	if d.n == 0 {
		return 0, io.EOF
	}
	runtime.Gosched() // let the other uploads interleave
	k := min(len(p), d.n, 1+d.rnd.IntN(100<<10))
	d.n -= k
	return k, nil
}

// Many uploads filling parts at once from a pool far too small for all of
// them: every one completes (no deadlock: parts being filled never take
// the pool so that none can complete), and the pool never hands out more
// than its budget.
func TestPoolNeverDeadlocks(t *testing.T) {
	const partSize = 4 * chunkSize
	p := newPool(2, partSize, time.Minute) // 8 chunks for 12 uploads of up to 5 parts
	budget := p.free
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range 12 {
		wg.Go(func() {
			rnd := rand.New(rand.NewPCG(uint64(i), 1))
			r := &dribble{n: partSize + rnd.IntN(4*partSize), rnd: rnd}
			<-start
			var sending sync.WaitGroup
			for later := false; ; later = true {
				pt := &part{}
				eof, err := p.fill(ctx, pt, r, partSize, later)
				if err != nil {
					t.Errorf("upload %d: %v", i, err)
					p.release(pt)
					break
				}
				p.seal(pt)
				pause := time.Duration(rnd.IntN(3)) * time.Millisecond
				sending.Go(func() { // to S3 and back
					time.Sleep(pause)
					p.release(pt)
				})
				if eof {
					break
				}
			}
			sending.Wait()
		})
	}
	close(start)
	wg.Wait()
	if p.free != budget || p.rfree != p.reserve || p.sending != 0 || len(p.filling) != 0 || p.made > p.budget || p.waiting != 0 {
		t.Fatalf("after all uploads: free %d of %d, reserve %d of %d, sending %d, filling %d, %d chunks made of %d, %d waiting",
			p.free, budget, p.rfree, p.reserve, p.sending, len(p.filling), p.made, p.budget, p.waiting)
	}
}

func TestPartReaderSeeks(t *testing.T) {
	p := newPool(2, 5<<20, time.Second)
	want := make([]byte, 2*chunkSize+1000)
	rand.NewChaCha8([32]byte{1}).Read(want)
	pt := &part{}
	if eof, err := p.fill(context.Background(), pt, bytes.NewReader(want), 5<<20, false); !eof || err != nil || pt.size != len(want) {
		t.Fatalf("fill: eof %v, %v, %d bytes", eof, err, pt.size)
	}
	r := pt.reader()
	for range 2 {
		got, err := io.ReadAll(r)
		if err != nil || !bytes.Equal(got, want) {
			t.Fatalf("read %d bytes, %v", len(got), err)
		}
		if n, err := r.Seek(0, io.SeekStart); n != 0 || err != nil {
			t.Fatalf("seek: %d, %v", n, err)
		}
	}
	if n, _ := r.Seek(-10, io.SeekEnd); n != int64(len(want)-10) {
		t.Fatalf("seek from the end: %d", n)
	}
	p.release(pt)
}

// slowHolders fills p as the review's reproduction did: n parts of
// uploads each take k chunks, in turn, as far as the pool lets them
// (parts it refuses are given up, as the Store does). It returns the parts
// that hold chunks.
func slowHolders(t *testing.T, p *pool, n, k int) []*part {
	t.Helper()
	wait := p.wait
	p.wait = time.Millisecond // refuse at once what cannot be had now
	defer func() { p.wait = wait }()
	var held []*part
	for range n {
		pt := &part{}
		for range k {
			if err := p.grow(context.Background(), pt, false); err != nil {
				if !errors.Is(err, ErrBusy) {
					t.Fatal(err)
				}
				break
			}
		}
		if len(pt.chunks) < k {
			p.release(pt)
			continue
		}
		held = append(held, pt)
	}
	t.Logf("%d of %d uploads hold %d chunks each: %d free, %d reserved free", len(held), n, k, p.free, p.rfree)
	return held
}

// The default pool (8 parts of 5 MiB) with 30 uploads holding 1.25 MB
// each: a new upload's first chunk comes from the reserve at once, its
// second (which would need the rest of the pool) is refused after the
// bounded wait; the pool's books balance once all is given back.
func TestPoolReserveAndBoundedWait(t *testing.T) {
	const wait = 300 * time.Millisecond
	p := newPool(8, 5<<20, wait)
	held := slowHolders(t, p, 30, 5)
	if !p.full() {
		t.Fatalf("30 uploads of 5 chunks did not fill the pool: free %d, reserve %d", p.free, p.rfree)
	}
	small := &part{}
	start := time.Now()
	eof, err := p.fill(context.Background(), small, io.LimitReader(&dribble{n: 100 << 10, rnd: rand.New(rand.NewPCG(1, 1))}, 100<<10), 5<<20, false)
	if err != nil || !eof || small.size != 100<<10 || !small.reserved {
		t.Fatalf("small upload at a full pool: eof %v, %v, %d bytes, reserved %v", eof, err, small.size, small.reserved)
	}
	if took := time.Since(start); took >= wait {
		t.Fatalf("the small upload waited %s", took)
	}
	p.seal(small)
	p.release(small)

	large := &part{}
	if err := p.grow(context.Background(), large, false); err != nil || !large.reserved {
		t.Fatalf("large upload's first chunk: %v, reserved %v", err, large.reserved)
	}
	start = time.Now()
	err = p.grow(context.Background(), large, false)
	if took := time.Since(start); !errors.Is(err, ErrBusy) || took < wait || RetryAfter(err) < time.Second {
		t.Fatalf("large upload's second chunk at a full pool: %v after %s (retry after %s)", err, took, RetryAfter(err))
	}
	if p.waiting != 0 {
		t.Fatalf("after the refusal: %d waiting", p.waiting)
	}
	p.release(large)
	for _, pt := range held {
		p.release(pt)
	}
	if p.free != p.budget-p.reserve || p.rfree != p.reserve || len(p.filling) != 0 || p.sending != 0 {
		t.Fatalf("after all is given back: free %d, reserve %d, filling %d, sending %d", p.free, p.rfree, len(p.filling), p.sending)
	}
}

// full reports whether a new part could get a chunk only from the reserve.
func (p *pool) full() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return !p.grantable(&part{}, 1)
}

// The reserve serves as many first chunks as it holds while the rest of
// the pool is full; one more waits, at most the pool's wait. A part on a
// reserved chunk that grows, once the rest has room, moves out of the
// reserve and so frees its chunk for the next upload.
func TestPoolReserveWhenTheRestIsFull(t *testing.T) {
	const wait = 300 * time.Millisecond
	p := newPool(8, 5<<20, wait)
	held := slowHolders(t, p, 30, 5)
	var firsts []*part
	for range p.reserve {
		pt := &part{}
		if err := p.grow(context.Background(), pt, false); err != nil || !pt.reserved {
			t.Fatalf("first chunk %d: %v, reserved %v", len(firsts), err, pt.reserved)
		}
		firsts = append(firsts, pt)
	}
	one := &part{}
	start := time.Now()
	if err := p.grow(context.Background(), one, false); !errors.Is(err, ErrBusy) || time.Since(start) < wait {
		t.Fatalf("a first chunk with the reserve taken: %v after %s", err, time.Since(start))
	}
	// A slow upload gives up; the first of the others grows into the rest.
	p.release(held[0])
	if err := p.grow(context.Background(), firsts[0], false); err != nil || firsts[0].reserved || firsts[0].held != 2 {
		t.Fatalf("growing out of the reserve: %v, reserved %v, held %d", err, firsts[0].reserved, firsts[0].held)
	}
	if p.rfree != 1 {
		t.Fatalf("%d reserved chunks free after one part grew out of the reserve", p.rfree)
	}
	start = time.Now()
	if err := p.grow(context.Background(), one, false); err != nil || time.Since(start) >= wait {
		t.Fatalf("a first chunk once the slow upload gave up: %v after %s", err, time.Since(start))
	}
	for _, pt := range append(append(held[1:], firsts...), one) {
		p.release(pt)
	}
	if p.free != p.budget-p.reserve || p.rfree != p.reserve || len(p.filling) != 0 || p.waiting != 0 {
		t.Fatalf("after all is given back: free %d, reserve %d, filling %d, waiting %d", p.free, p.rfree, len(p.filling), p.waiting)
	}
}

// An upload of exactly one chunk never asks for a second: at a full pool
// with the reserve in use, it ends without waiting.
func TestPoolNoChunkPastTheEnd(t *testing.T) {
	const wait = 10 * time.Second
	p := newPool(8, 5<<20, wait)
	slowHolders(t, p, 30, 5)
	body := make([]byte, chunkSize)
	pt := &part{}
	start := time.Now()
	eof, err := p.fill(context.Background(), pt, bytes.NewReader(body), 5<<20, false)
	if err != nil || !eof || len(pt.chunks) != 1 || pt.size != chunkSize || time.Since(start) > wait/2 {
		t.Fatalf("a one-chunk upload: eof %v, %v, %d chunks, %d bytes, after %s", eof, err, len(pt.chunks), pt.size, time.Since(start))
	}
	// Nor does a later part that turns out empty.
	empty := &part{}
	if eof, err := p.fill(context.Background(), empty, bytes.NewReader(nil), 5<<20, true); err != nil || !eof || len(empty.chunks) != 0 {
		t.Fatalf("an empty last part: eof %v, %v, %d chunks", eof, err, len(empty.chunks))
	}
}

// A part keeps its pool alive, and so the memory of its chunks, which is
// outside the Go heap and given back only once the pool is unreachable:
// a part read after its pool was dropped still has its bytes.
func TestPartKeepsItsMemory(t *testing.T) {
	want := bytes.Repeat([]byte("0123456789abcdef"), 300<<10/16)
	pt := &part{}
	func() {
		p := newPool(2, 5<<20, time.Second)
		eof, err := p.fill(context.Background(), pt, bytes.NewReader(want), 5<<20, false)
		if err != nil || !eof {
			t.Fatalf("fill: eof %v, %v", eof, err)
		}
	}()
	for range 3 {
		runtime.GC()
	}
	got, err := io.ReadAll(pt.reader())
	if err != nil || !bytes.Equal(got, want) {
		t.Fatalf("the part's bytes after its pool was dropped: %d bytes, %v; want the %d sent", len(got), err, len(want))
	}
}
