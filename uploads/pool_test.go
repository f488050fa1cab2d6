package uploads

import (
	"bytes"
	"context"
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
	p := newPool(2, partSize) // 8 chunks for 12 uploads of up to 5 parts
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
			for {
				pt := &part{}
				eof, err := p.fill(ctx, pt, r, partSize)
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
	if p.free != budget || p.sending != 0 || len(p.filling) != 0 || p.made > budget {
		t.Fatalf("after all uploads: free %d of %d, sending %d, filling %d, %d chunks made", p.free, budget, p.sending, len(p.filling), p.made)
	}
}

func TestPartReaderSeeks(t *testing.T) {
	p := newPool(2, 5<<20)
	want := make([]byte, 2*chunkSize+1000)
	rand.NewChaCha8([32]byte{1}).Read(want)
	pt := &part{}
	if eof, err := p.fill(context.Background(), pt, bytes.NewReader(want), 5<<20); !eof || err != nil || pt.size != len(want) {
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
