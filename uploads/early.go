package uploads

import (
	"context"
	"errors"
	"io"
	"slices"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
)

// Early parts.
//
// A part can go to S3 only whole, with its length in the request. Sent
// only once complete, each part costs the client's time to fill it plus
// S3's time to take it, and S3's share (most of it, on MinIO over
// loopback, whose one stream is slower than the client) is spent with the
// next part full and waiting. Every part after the first is therefore
// also sent while it fills: a request declaring a full part's length
// starts with the part, and its body hands S3 the bytes as they arrive.
// The part's memory is what it was: the bytes are still kept until the
// part is done, taken from the pool as they arrive.
//
// That attempt is a bonus, never the only way a part gets to S3. It is not
// retried, and it gives up when the part turns out shorter (the upload's
// last part), when the client pauses longer than earlyStall (a wait for
// pool memory is not a pause), or on any error; the complete part is then
// sent as any other (with the SDK's retries), from the same memory. S3
// keeps no part of a request that did not complete, and a later request
// for the same part number replaces a completed one. A part that cannot
// be whole, as the Store's reader can tell (sizeBound), is not sent early.

// earlyStall is how long an early part's request waits for the client's
// next bytes before it gives up, so that a paused client does not hold a
// request to S3 open (S3 ends one idle for about 20 s itself).
const earlyStall = 5 * time.Second

var (
	errShortPart   = errors.New("uploads: the part ended short of a full part (the upload's last)")
	errStalled     = errors.New("uploads: the client sent nothing for a while")
	errStreamEnded = errors.New("uploads: the part's request is over")
)

// stream is what a part's early request reads: the bytes of the part as
// the filling goroutine publishes them.
type stream struct {
	mu     sync.Mutex
	chunks [][]byte // the part's chunks, as published (shares the part's array)
	size   int
	ended  bool // the part will not grow
	memory bool // the part waits for pool memory: not the client's pause
	closed bool // the request is over: its body reads nothing more
	kick   chan struct{}
}

func newStream() *stream { return &stream{kick: make(chan struct{}, 1)} }

// publish makes the part's first size bytes readable.
func (s *stream) publish(chunks [][]byte, size int) {
	s.mu.Lock()
	s.chunks, s.size = chunks, size
	s.mu.Unlock()
	s.poke()
}

// end says the part will not grow.
func (s *stream) end() {
	s.mu.Lock()
	s.ended = true
	s.mu.Unlock()
	s.poke()
}

// waitMemory says whether the part waits for pool memory. Such a wait is
// bounded by S3Config.BufferWait and is not the client pausing, so it
// does not count as a stall: giving up then would send the part again
// when S3 or the pool is what is slow.
func (s *stream) waitMemory(on bool) {
	s.mu.Lock()
	s.memory = on
	s.mu.Unlock()
	s.poke()
}

// close makes every later read fail: the transport may read a request's
// body after the request returned, and the chunks go back to the pool.
func (s *stream) close() {
	s.mu.Lock()
	s.closed = true
	s.chunks = nil
	s.mu.Unlock()
}

func (s *stream) poke() {
	select {
	case s.kick <- struct{}{}:
	default:
	}
}

// streamReader is an early part's request body: it reads the part's bytes
// as they arrive, and ends once it has read want bytes.
type streamReader struct {
	ctx   context.Context
	s     *stream
	want  int
	off   int
	stall time.Duration
	timer *time.Timer
}

func (r *streamReader) Read(b []byte) (int, error) {
	for {
		s := r.s
		s.mu.Lock()
		switch {
		case s.closed:
			s.mu.Unlock()
			return 0, errStreamEnded
		case r.off < s.size:
			n := copyFrom(b, s.chunks, s.size, r.off)
			r.off += n
			s.mu.Unlock()
			return n, nil
		case r.off >= r.want:
			s.mu.Unlock()
			return 0, io.EOF
		case s.ended:
			s.mu.Unlock()
			return 0, errShortPart
		}
		memory := s.memory
		s.mu.Unlock()
		if memory { // no stall while the part waits for memory
			select {
			case <-s.kick:
			case <-r.ctx.Done():
				return 0, context.Cause(r.ctx)
			}
			continue
		}
		if r.timer == nil {
			r.timer = time.NewTimer(r.stall)
		} else {
			r.timer.Reset(r.stall)
		}
		select {
		case <-s.kick:
		case <-r.timer.C:
			return 0, errStalled
		case <-r.ctx.Done():
			return 0, context.Cause(r.ctx)
		}
	}
}

// Seek lets the SDK rewind the body before its one attempt.
func (r *streamReader) Seek(offset int64, whence int) (int64, error) {
	switch whence {
	case io.SeekCurrent:
		offset += int64(r.off)
	case io.SeekEnd:
		offset += int64(r.want)
	}
	if offset < 0 || offset > int64(r.want) {
		return 0, errors.New("uploads: seek outside an early part")
	}
	r.off = int(offset)
	return offset, nil
}

// early is the early request of one part.
type early struct {
	cancel context.CancelFunc
	done   chan struct{}
	etag   *string // the part's ETag if the request took the whole part
	err    error
}

// noRetry makes a request's first attempt its only one.
func noRetry(o *s3.Options) { o.Retryer = aws.NopRetryer{} }

// sizeBound is what the Store's reader tells of the bytes left.
type sizeBound interface{ maxLeft() int64 }

// sendsEarly reports whether the part about to fill from r is sent as it
// fills: not with a signed payload (the SDK reads a part whole to hash it
// before it sends a byte), nor when r can tell it has fewer bytes left
// than a whole part (the file's last part, short: its early request would
// give up, and the part go to S3 twice).
func (b *S3Bucket) sendsEarly(r io.Reader) bool {
	if b.cfg.SignPayload {
		return false
	}
	if sb, ok := r.(sizeBound); ok && sb.maxLeft() < b.cfg.PartSize {
		return false
	}
	return true
}

// sendEarly starts part num's request while pt fills; pt must not have
// started filling.
func (b *S3Bucket) sendEarly(ctx context.Context, key string, uploadID *string, num int32, pt *part) *early {
	ctx, cancel := context.WithCancel(ctx)
	e := &early{cancel: cancel, done: make(chan struct{})}
	s := newStream()
	pt.stream = s
	want := int(b.cfg.PartSize)
	opts := append(slices.Clip(b.bodyOpts), noRetry) // a copy: uploads run at once
	go func() {
		defer close(e.done)
		defer cancel() // the request is over: its context leaves the upload's
		out, err := b.client.UploadPart(ctx, &s3.UploadPartInput{
			Bucket: &b.cfg.Bucket, Key: &key, UploadId: uploadID, PartNumber: aws.Int32(num),
			Body: &streamReader{ctx: ctx, s: s, want: want, stall: b.earlyStall}, ContentLength: aws.Int64(int64(want)),
		}, opts...)
		s.close()
		if err != nil {
			e.err = err
			return
		}
		e.etag = out.ETag
	}()
	return e
}

// stop stops e, if it is still going, and waits for it to end.
func (e *early) stop() {
	e.cancel()
	<-e.done
}
