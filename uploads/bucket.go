package uploads

import (
	"context"
	"errors"
	"io"
	"time"
)

// Bucket is where uploads are kept: S3 ([NewS3Bucket]) in production,
// a directory ([NewDiskBucket]) in development.
type Bucket interface {
	// Upload streams r to key. On any error (r's included) nothing is left
	// under key: a multipart upload is aborted, a partial file removed.
	Upload(ctx context.Context, key string, r io.Reader, contentType string, meta map[string]string) error
	// Open returns the object at key; rng is an HTTP Range header value
	// (empty: all of it) and ifNoneMatch an If-None-Match value.
	// A missing object is ErrNotFound, and so is a key the bucket refuses
	// to look up (one no object can have); a matching ETag gives an
	// Object with NotModified set and no Body.
	Open(ctx context.Context, key, rng, ifNoneMatch string) (*Object, error)
	// Stat returns the object's metadata. A missing object, or a key
	// the bucket refuses, is ErrNotFound.
	Stat(ctx context.Context, key string) (*Object, error)
	// Delete removes the object; a missing one is not an error.
	Delete(ctx context.Context, key string) error
}

// Object is a stored object, as opened or described.
type Object struct {
	Key          string
	Size         int64 // of the whole object
	ContentType  string
	ETag         string // with its quotes, as HTTP wants it
	LastModified time.Time
	Meta         map[string]string

	// For Open: the body (close it), the range it covers
	// ("bytes 0-99/1000"), and whether If-None-Match matched.
	Body         io.ReadCloser
	ContentRange string
	Length       int64 // of the body
	NotModified  bool
}

// Errors a Bucket or the Store return; [Status] maps them to HTTP.
var (
	ErrNotFound            = errors.New("uploads: no such object")
	ErrTooLarge            = errors.New("uploads: file too large")
	ErrUnsupportedType     = errors.New("uploads: file type not allowed")
	ErrNoFile              = errors.New("uploads: no file in the request")
	ErrBadRequest          = errors.New("uploads: malformed upload request")
	ErrRangeNotSatisfiable = errors.New("uploads: range not satisfiable")
	// ErrTooSlow is a transfer cut because the client moved fewer than
	// Config.MinRate × Config.Window bytes in a Window of waiting.
	ErrTooSlow = errors.New("uploads: transfer too slow")
	// ErrBusy is an upload refused for want of memory for its parts: an
	// S3Bucket's part memory (S3Config.MaxBuffers) stayed taken by other
	// uploads for S3Config.BufferWait, or too many uploads were already
	// waiting for it. Nothing of the upload is left in the bucket. [Status]
	// maps it to 503, and [RetryAfter] says when to try again.
	ErrBusy = errors.New("uploads: busy")
)

// busyError is an ErrBusy with its reason and when to try again.
type busyError struct {
	retryAfter time.Duration
	why        string
}

func (e *busyError) Error() string        { return "uploads: busy: " + e.why }
func (e *busyError) Is(target error) bool { return target == ErrBusy }

// RetryAfter returns how long the client of an upload refused with
// [ErrBusy] should wait before trying again (S3Config.BufferWait, at
// least a second), or 0 if err is not ErrBusy. [Store.Receive] sends it
// as Retry-After itself.
func RetryAfter(err error) time.Duration {
	var b *busyError
	if errors.As(err, &b) {
		return b.retryAfter
	}
	if errors.Is(err, ErrBusy) {
		return time.Second
	}
	return 0
}
