package uploads

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/aws/smithy-go"
)

// S3Config configures an S3Bucket. Bucket and credentials are required.
type S3Config struct {
	// Endpoint is the S3 endpoint URL, e.g. "https://s3.eu-west-1.amazonaws.com"
	// or "http://127.0.0.1:9000" for MinIO. Empty: AWS's own for Region.
	Endpoint string
	// Region defaults to "us-east-1".
	Region string
	// Bucket is the bucket's name. Required.
	Bucket string
	// AccessKey and SecretKey are static credentials; Credentials, if
	// set, is used instead.
	AccessKey, SecretKey string
	Credentials          aws.CredentialsProvider
	// PathStyle addresses the bucket in the path (endpoint/bucket/key), as
	// MinIO, Ceph and most S3-compatible servers want.
	PathStyle bool
	// PartSize is the size of a multipart upload's parts, and of the
	// buffers that hold them. Defaults to 5 MiB, which is also the least
	// allowed (S3's minimum).
	PartSize int64
	// Concurrency is how many complete parts of one upload are sent at
	// once; the next part fills meanwhile, and is itself sent to S3 as its
	// bytes arrive (unless SignPayload), so an upload holds at most
	// Concurrency + 1 parts of memory and has Concurrency + 1 requests
	// to S3 open. Defaults to 1: on MinIO over loopback that was as fast
	// as the SDK's upload manager with 5 parts at a time, with 2 parts of
	// memory per upload instead of 3 or more (docs/benchmarks.md). Raise
	// it when S3 takes a part much more slowly than clients send one.
	Concurrency int
	// MaxBuffers bounds the part buffers of all uploads together, and so
	// the memory uploads can take: MaxBuffers × PartSize (each part rounded
	// up to 256 KiB). Defaults to 8 (40 MiB with 5 MiB parts); at least 2.
	//
	// The memory is handed out 256 KiB at a time as bytes arrive: an upload
	// holds what its client has sent of the part it is filling and its
	// parts on their way to S3. An eighth of it is kept for the first
	// 256 KiB of uploads, which the rest cannot take: an upload that fits
	// in 256 KiB gets memory at once whatever the others hold, unless that
	// eighth (20 chunks by default) is all on other uploads' first chunks
	// at that moment. A part grows only while some part being filled can
	// still complete (S3 takes only whole parts), so when clients hold
	// most of the memory with parts far from complete, other uploads wait
	// for memory beyond their first 256 KiB: see BufferWait.
	MaxBuffers int
	// BufferWait is how long an upload waits at most, each time it needs
	// part memory, before it is refused with ErrBusy (503 with
	// Retry-After; its multipart upload aborted). The wait does not count
	// against the upload's progress bound (uploads.Config.MinRate).
	// Defaults to 30s.
	BufferWait time.Duration
	// AbortTimeout is how long a failed upload keeps trying to abort its
	// multipart upload (S3 may be the thing that failed). Defaults to 1m.
	// What still fails is left to [S3Bucket.AbortIncomplete].
	AbortTimeout time.Duration
	// SignPayload signs each part's content (SigV4 with the payload's
	// SHA-256) instead of sending it as UNSIGNED-PAYLOAD. Off by default:
	// hashing every byte twice (the Store computes its own SHA-256 of the
	// file) costs as much CPU as the rest of the upload, and TLS protects
	// the bytes on the wire. Turn it on for a plain-http endpoint across
	// an untrusted network.
	SignPayload bool
	// HTTPClient defaults to the SDK's.
	HTTPClient *http.Client
	// Logger defaults to slog.Default().
	Logger *slog.Logger
}

// S3Bucket keeps uploads in an S3 bucket. It speaks plain S3: path-style
// addressing when asked, and checksums only where S3 requires them, so
// MinIO, Ceph, Garage and others work as AWS does.
type S3Bucket struct {
	cfg     S3Config
	client  *s3.Client
	presign *s3.PresignClient
	log     *slog.Logger

	pool *pool // the memory of part buffers, shared by all uploads

	bodyOpts []func(*s3.Options) // for requests that carry file content

	earlyStall time.Duration // see early.go
	early      struct {
		took      atomic.Int64 // parts an early request took whole
		sentAgain atomic.Int64 // parts sent again after their early request gave up
	}

	aborts sync.WaitGroup
}

// NewS3Bucket returns an S3Bucket.
func NewS3Bucket(cfg S3Config) (*S3Bucket, error) {
	var errs []error
	if cfg.Bucket == "" {
		errs = append(errs, errors.New("S3Config.Bucket is empty"))
	}
	if cfg.Credentials == nil && (cfg.AccessKey == "" || cfg.SecretKey == "") {
		errs = append(errs, errors.New("S3Config needs AccessKey and SecretKey, or Credentials"))
	}
	if cfg.PartSize == 0 {
		cfg.PartSize = 5 << 20
	}
	if cfg.PartSize < 5<<20 {
		errs = append(errs, fmt.Errorf("S3Config.PartSize %d is below S3's 5 MiB minimum", cfg.PartSize))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("uploads: bad config: %w", err)
	}
	if cfg.Region == "" {
		cfg.Region = "us-east-1"
	}
	if cfg.Concurrency <= 0 {
		cfg.Concurrency = 1
	}
	if cfg.MaxBuffers <= 0 {
		cfg.MaxBuffers = 8
	}
	cfg.MaxBuffers = max(cfg.MaxBuffers, 2)
	if cfg.BufferWait <= 0 {
		cfg.BufferWait = 30 * time.Second
	}
	if cfg.AbortTimeout <= 0 {
		cfg.AbortTimeout = time.Minute
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	creds := cfg.Credentials
	if creds == nil {
		key, secret := cfg.AccessKey, cfg.SecretKey
		creds = aws.CredentialsProviderFunc(func(context.Context) (aws.Credentials, error) {
			return aws.Credentials{AccessKeyID: key, SecretAccessKey: secret, Source: "uploads.S3Config"}, nil
		})
	}
	opts := s3.Options{
		Region:                     cfg.Region,
		Credentials:                creds,
		UsePathStyle:               cfg.PathStyle,
		RequestChecksumCalculation: aws.RequestChecksumCalculationWhenRequired,
		ResponseChecksumValidation: aws.ResponseChecksumValidationWhenRequired,
	}
	if cfg.Endpoint != "" {
		opts.BaseEndpoint = aws.String(cfg.Endpoint)
	}
	if cfg.HTTPClient != nil {
		opts.HTTPClient = cfg.HTTPClient
	}
	b := &S3Bucket{cfg: cfg, client: s3.New(opts), log: cfg.Logger, bodyOpts: bodyOptions(cfg.SignPayload),
		pool: newPool(cfg.MaxBuffers, cfg.PartSize, cfg.BufferWait), earlyStall: earlyStall}
	b.presign = s3.NewPresignClient(b.client)
	return b, nil
}

// bodyOptions are the per-request options for content uploads.
func bodyOptions(sign bool) []func(*s3.Options) {
	if sign {
		return nil
	}
	return []func(*s3.Options){s3.WithAPIOptions(v4.SwapComputePayloadSHA256ForUnsignedPayloadMiddleware)}
}

// Client returns the S3 client, for what this package does not cover.
func (b *S3Bucket) Client() *s3.Client { return b.client }

// Upload implements Bucket: one PUT for a body smaller than a part, a
// multipart upload otherwise, with at most Concurrency complete parts in
// flight and the part after them sent as it fills. Parts are held in
// memory from the bucket's pool, taken as the bytes arrive, so memory
// does not grow with the size of the file and a slow client holds only
// what it has sent. A part sent as it fills is sent again whole, with
// the SDK's retries, if that first request fails, as it does when the
// part turns out to be the file's short last one. A reader that bounds
// what it has left (the Store's, from the request's Content-Length)
// spares that: a part that cannot be whole is not sent early (early.go).
// Waiting for part memory longer than BufferWait fails with ErrBusy. On
// any failure the multipart upload is aborted.
func (b *S3Bucket) Upload(ctx context.Context, key string, r io.Reader, contentType string, meta map[string]string) error {
	first := &part{}
	eof, err := b.pool.fill(ctx, first, r, int(b.cfg.PartSize), false)
	if err != nil {
		b.pool.release(first)
		return err
	}
	if eof {
		b.pool.seal(first)
		defer b.pool.release(first)
		_, err := b.client.PutObject(ctx, &s3.PutObjectInput{
			Bucket: &b.cfg.Bucket, Key: &key, Body: first.reader(), ContentLength: aws.Int64(int64(first.size)),
			ContentType: aws.String(contentType), Metadata: meta,
		}, b.bodyOpts...)
		if err != nil {
			return fmt.Errorf("uploads: put %s: %w", key, err)
		}
		return nil
	}

	created, err := b.client.CreateMultipartUpload(ctx, &s3.CreateMultipartUploadInput{
		Bucket: &b.cfg.Bucket, Key: &key, ContentType: aws.String(contentType), Metadata: meta,
	})
	if err != nil {
		b.pool.release(first)
		return fmt.Errorf("uploads: start multipart upload of %s: %w", key, err)
	}
	uploadID := created.UploadId
	pctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	var (
		mu    sync.Mutex
		parts []types.CompletedPart
		wg    sync.WaitGroup
		sem   = make(chan struct{}, b.cfg.Concurrency)
	)
	send := func(num int32, pt *part, e *early) {
		defer wg.Done()
		defer func() { <-sem }()
		defer b.pool.release(pt)
		if e != nil {
			<-e.done
			if e.err == nil {
				b.early.took.Add(1)
				mu.Lock()
				parts = append(parts, types.CompletedPart{ETag: e.etag, PartNumber: aws.Int32(num)})
				mu.Unlock()
				return
			}
			b.early.sentAgain.Add(1)
			if pctx.Err() == nil {
				b.log.Debug("uploads: a part sent as it filled is sent again whole", "key", key, "part", num, "err", e.err)
			}
		}
		out, err := b.client.UploadPart(pctx, &s3.UploadPartInput{
			Bucket: &b.cfg.Bucket, Key: &key, UploadId: uploadID, PartNumber: aws.Int32(num),
			Body: pt.reader(), ContentLength: aws.Int64(int64(pt.size)),
		}, b.bodyOpts...)
		if err != nil {
			cancel(fmt.Errorf("uploads: part %d of %s: %w", num, key, err))
			return
		}
		mu.Lock()
		parts = append(parts, types.CompletedPart{ETag: out.ETag, PartNumber: aws.Int32(num)})
		mu.Unlock()
	}
	pt := first
	var (
		e       *early // pt's early request, if any
		failure error
	)
	for num := int32(1); ; num++ {
		b.pool.seal(pt)
		select {
		case sem <- struct{}{}:
		case <-pctx.Done():
			failure = context.Cause(pctx)
		}
		if failure != nil {
			if e != nil {
				e.stop()
			}
			b.pool.release(pt)
			break
		}
		wg.Add(1)
		go send(num, pt, e)
		if eof { // that was the last part
			break
		}
		pt, e = &part{}, nil
		if b.sendsEarly(r) {
			e = b.sendEarly(pctx, key, uploadID, num+1, pt)
		}
		eof, err = b.pool.fill(pctx, pt, r, int(b.cfg.PartSize), true)
		if e != nil {
			pt.stream.end()
		}
		if err != nil || pt.size == 0 { // failed, or nothing more: no empty last part
			if e != nil {
				e.stop()
			}
			b.pool.release(pt)
			if err != nil {
				failure = err
			}
			break
		}
	}
	if failure != nil {
		cancel(failure)
	}
	wg.Wait()
	if failure == nil {
		failure = context.Cause(pctx)
	}
	if failure == nil {
		slices.SortFunc(parts, func(a, c types.CompletedPart) int { return int(*a.PartNumber - *c.PartNumber) })
		_, err := b.client.CompleteMultipartUpload(ctx, &s3.CompleteMultipartUploadInput{
			Bucket: &b.cfg.Bucket, Key: &key, UploadId: uploadID,
			MultipartUpload: &types.CompletedMultipartUpload{Parts: parts},
		})
		if err == nil {
			return nil
		}
		failure = fmt.Errorf("uploads: complete %s: %w", key, err)
	}
	b.abort(key, *uploadID)
	return failure
}

// abort aborts a multipart upload, so no parts are left behind, trying for
// up to AbortTimeout (in the background after a first attempt: S3 may be
// what failed).
func (b *S3Bucket) abort(key, uploadID string) {
	try := func(ctx context.Context) error {
		ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		_, err := b.client.AbortMultipartUpload(ctx, &s3.AbortMultipartUploadInput{Bucket: &b.cfg.Bucket, Key: &key, UploadId: &uploadID})
		var nsu *types.NoSuchUpload
		if errors.As(err, &nsu) {
			return nil
		}
		return err
	}
	if try(context.Background()) == nil {
		return
	}
	b.aborts.Go(func() {
		deadline := time.Now().Add(b.cfg.AbortTimeout)
		pause := 200 * time.Millisecond
		for time.Now().Before(deadline) {
			time.Sleep(pause)
			if err := try(context.Background()); err == nil {
				return
			} else if time.Now().Add(pause).After(deadline) {
				b.log.Error("uploads: could not abort a failed multipart upload; AbortIncomplete will", "key", key, "err", err)
			}
			pause = min(2*pause, 5*time.Second)
		}
	})
}

// Close waits for background aborts to finish (at most AbortTimeout).
func (b *S3Bucket) Close() { b.aborts.Wait() }

// AbortIncomplete aborts the multipart uploads under prefix started more
// than olderThan ago — what a crashed instance, or an abort that failed
// for AbortTimeout, left — and returns how many. Run it periodically.
func (b *S3Bucket) AbortIncomplete(ctx context.Context, prefix string, olderThan time.Duration) (int, error) {
	uploads, err := b.incomplete(ctx, prefix)
	n := 0
	for _, u := range uploads {
		if u.Initiated != nil && time.Since(*u.Initiated) < olderThan {
			continue
		}
		if _, err := b.client.AbortMultipartUpload(ctx, &s3.AbortMultipartUploadInput{Bucket: &b.cfg.Bucket, Key: u.Key, UploadId: u.UploadId}); err != nil {
			return n, fmt.Errorf("uploads: abort %s: %w", aws.ToString(u.Key), err)
		}
		n++
	}
	return n, err
}

// Incomplete counts the multipart uploads under prefix that are neither
// completed nor aborted (their parts take space, and cost, in S3).
func (b *S3Bucket) Incomplete(ctx context.Context, prefix string) (int, error) {
	uploads, err := b.incomplete(ctx, prefix)
	return len(uploads), err
}

// incomplete lists the bucket's multipart uploads and keeps those under
// prefix. It filters itself rather than pass the prefix to S3: some
// S3-compatible servers (MinIO) match only whole keys there.
func (b *S3Bucket) incomplete(ctx context.Context, prefix string) ([]types.MultipartUpload, error) {
	var out []types.MultipartUpload
	p := s3.NewListMultipartUploadsPaginator(b.client, &s3.ListMultipartUploadsInput{Bucket: &b.cfg.Bucket})
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			return out, fmt.Errorf("uploads: list multipart uploads: %w", err)
		}
		for _, u := range page.Uploads {
			if strings.HasPrefix(aws.ToString(u.Key), prefix) {
				out = append(out, u)
			}
		}
	}
	return out, nil
}

// Open implements Bucket.
func (b *S3Bucket) Open(ctx context.Context, key, rng, ifNoneMatch string) (*Object, error) {
	in := &s3.GetObjectInput{Bucket: &b.cfg.Bucket, Key: &key}
	if rng != "" {
		in.Range = aws.String(rng)
	}
	if ifNoneMatch != "" {
		in.IfNoneMatch = aws.String(ifNoneMatch)
	}
	out, err := b.client.GetObject(ctx, in)
	if err != nil {
		switch httpStatus(err) {
		case http.StatusNotModified:
			return &Object{Key: key, NotModified: true, ETag: ifNoneMatch}, nil
		case http.StatusNotFound:
			return nil, ErrNotFound
		case http.StatusRequestedRangeNotSatisfiable:
			return nil, ErrRangeNotSatisfiable
		case http.StatusBadRequest:
			return nil, refusedKey(key, err)
		}
		return nil, fmt.Errorf("uploads: get %s: %w", key, err)
	}
	o := &Object{Key: key, Body: out.Body, ContentType: aws.ToString(out.ContentType), ETag: aws.ToString(out.ETag),
		Meta: out.Metadata, Length: aws.ToInt64(out.ContentLength), ContentRange: aws.ToString(out.ContentRange),
		LastModified: aws.ToTime(out.LastModified)}
	o.Size = o.Length
	if cr := o.ContentRange; cr != "" {
		if i := strings.LastIndexByte(cr, '/'); i >= 0 {
			fmt.Sscan(cr[i+1:], &o.Size)
		}
	}
	return o, nil
}

// Stat implements Bucket.
func (b *S3Bucket) Stat(ctx context.Context, key string) (*Object, error) {
	out, err := b.client.HeadObject(ctx, &s3.HeadObjectInput{Bucket: &b.cfg.Bucket, Key: &key})
	if err != nil {
		switch httpStatus(err) {
		case http.StatusNotFound:
			return nil, ErrNotFound
		case http.StatusBadRequest:
			return nil, refusedKey(key, err)
		}
		return nil, fmt.Errorf("uploads: head %s: %w", key, err)
	}
	o := &Object{Key: key, Size: aws.ToInt64(out.ContentLength), ContentType: aws.ToString(out.ContentType),
		ETag: aws.ToString(out.ETag), Meta: out.Metadata, LastModified: aws.ToTime(out.LastModified)}
	return o, nil
}

// Delete implements Bucket.
func (b *S3Bucket) Delete(ctx context.Context, key string) error {
	if _, err := b.client.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: &b.cfg.Bucket, Key: &key}); err != nil {
		return fmt.Errorf("uploads: delete %s: %w", key, err)
	}
	return nil
}

// Ping checks that the bucket answers, for readiness checks.
func (b *S3Bucket) Ping(ctx context.Context) error {
	_, err := b.client.HeadBucket(ctx, &s3.HeadBucketInput{Bucket: &b.cfg.Bucket})
	return err
}

// refusedKey is the error for a read that S3 answered 400. When S3 says
// the key is one it does not accept (an error code about the object's
// name), no object has it: ErrNotFound, not a failure of the bucket, with
// S3's answer kept for the log. Any other 400 (a bad bucket name, a
// wrong signing region, an expired token, or a HEAD, which has no body
// to name a code) is the bucket failing.
func refusedKey(key string, err error) error {
	var ae smithy.APIError
	if errors.As(err, &ae) {
		switch ae.ErrorCode() {
		case "XMinioInvalidObjectName", "InvalidObjectName", "KeyTooLongError":
			return fmt.Errorf("%w: the bucket refused key %q: %w", ErrNotFound, key, err)
		}
	}
	return fmt.Errorf("uploads: read %s: %w", key, err)
}

// httpStatus returns the HTTP status of an S3 error, or 0.
func httpStatus(err error) int {
	var re *awshttp.ResponseError
	if errors.As(err, &re) {
		return re.HTTPStatusCode()
	}
	return 0
}
