package uploads

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"mime"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
)

// pendingPrefix holds direct uploads until they are confirmed.
const pendingPrefix = "pending/"

// DirectUpload is what a browser needs to upload a file straight to S3: a
// form POST to URL with Fields (in order, before the file field "file").
type DirectUpload struct {
	URL     string            `json:"url"`
	Fields  map[string]string `json:"fields"`
	Key     string            `json:"key"` // pass it to Confirm afterwards
	Expires time.Time         `json:"expires"`
}

// PresignUpload lets a client upload one file of contentType, at most
// Config.MaxSize bytes, straight to the bucket within ttl (the app never
// sees the bytes). S3 enforces the size (content-length-range), the key
// and the content type. The object lands under a pending prefix and counts
// only after [Store.Confirm]; unconfirmed ones are removed by
// [Store.SweepPending]. The bucket must be an *S3Bucket.
func (s *Store) PresignUpload(ctx context.Context, contentType string, ttl time.Duration) (*DirectUpload, error) {
	b, ok := s.cfg.Bucket.(*S3Bucket)
	if !ok {
		return nil, errors.New("uploads: direct uploads need an S3 bucket")
	}
	if !s.allowed(contentType) {
		return nil, fmt.Errorf("%w: %s", ErrUnsupportedType, contentType)
	}
	if ttl <= 0 {
		ttl = 15 * time.Minute
	}
	key := s.cfg.Prefix + pendingPrefix + newKey()
	out, err := b.presign.PresignPostObject(ctx, &s3.PutObjectInput{Bucket: &b.cfg.Bucket, Key: &key, ContentType: aws.String(contentType)},
		func(o *s3.PresignPostOptions) {
			o.Expires = ttl
			o.Conditions = []any{
				[]any{"content-length-range", 1, s.cfg.MaxSize},
				map[string]string{"Content-Type": contentType},
			}
		})
	if err != nil {
		return nil, fmt.Errorf("uploads: presign: %w", err)
	}
	fields := out.Values
	fields["Content-Type"] = contentType
	return &DirectUpload{URL: out.URL, Fields: fields, Key: key, Expires: time.Now().Add(ttl)}, nil
}

// Confirm checks a direct upload before it counts: it exists, its size is
// within MaxSize (and equals size, if size > 0), its first bytes sniff as
// an allowed type, and its SHA-256 equals sha256Hex (if given; the whole
// object is read to check). A file that fails is deleted. A good one is
// moved out of the pending prefix, and its new key returned in Stored.
func (s *Store) Confirm(ctx context.Context, key string, size int64, sha256Hex string) (*Stored, error) {
	b, ok := s.cfg.Bucket.(*S3Bucket)
	if !ok {
		return nil, errors.New("uploads: direct uploads need an S3 bucket")
	}
	rest, pending := strings.CutPrefix(key, s.cfg.Prefix+pendingPrefix)
	if !pending {
		return nil, fmt.Errorf("%w: %q is not a pending upload", ErrBadRequest, key)
	}
	reject := func(err error) (*Stored, error) {
		if derr := b.Delete(context.WithoutCancel(ctx), key); derr != nil {
			s.log.Warn("uploads: could not delete a rejected direct upload", "key", key, "err", derr)
		}
		return nil, err
	}
	o, err := b.Open(ctx, key, "", "")
	if err != nil {
		return nil, err
	}
	defer o.Body.Close()
	if o.Size > s.cfg.MaxSize || (size > 0 && o.Size != size) {
		return reject(fmt.Errorf("%w: %d bytes (expected %d, at most %d)", ErrTooLarge, o.Size, size, s.cfg.MaxSize))
	}
	head, ct, err := readHead(o.Body)
	if err != nil {
		return nil, fmt.Errorf("uploads: read %s: %w", key, err)
	}
	if !s.allowed(ct) {
		return reject(fmt.Errorf("%w: %s", ErrUnsupportedType, ct))
	}
	if declared, _, _ := mime.ParseMediaType(o.ContentType); declared != ct {
		return reject(fmt.Errorf("%w: declared %s, content is %s", ErrUnsupportedType, o.ContentType, ct))
	}
	st := &Stored{Key: s.cfg.Prefix + rest, ContentType: ct, Size: o.Size}
	if sha256Hex != "" {
		h := sha256.New()
		h.Write(head)
		if _, err := io.Copy(h, o.Body); err != nil {
			return nil, fmt.Errorf("uploads: read %s: %w", key, err)
		}
		got := hex.EncodeToString(h.Sum(nil))
		if got != strings.ToLower(sha256Hex) {
			return reject(fmt.Errorf("%w: SHA-256 %s, expected %s", ErrBadRequest, got, sha256Hex))
		}
		st.SHA256 = got
	}
	src := b.cfg.Bucket + "/" + key
	if _, err := b.client.CopyObject(ctx, &s3.CopyObjectInput{Bucket: &b.cfg.Bucket, Key: &st.Key, CopySource: aws.String(src),
		ContentType: aws.String(ct), MetadataDirective: "REPLACE"}); err != nil {
		return nil, fmt.Errorf("uploads: confirm %s: %w", key, err)
	}
	if err := b.Delete(ctx, key); err != nil {
		s.log.Warn("uploads: confirmed upload left in pending", "key", key, "err", err)
	}
	return st, nil
}

// SweepPending deletes direct uploads not confirmed within olderThan, and
// returns how many. Run it periodically (a jobs schedule), or give the
// bucket a lifecycle rule expiring the pending prefix.
func (s *Store) SweepPending(ctx context.Context, olderThan time.Duration) (int, error) {
	b, ok := s.cfg.Bucket.(*S3Bucket)
	if !ok {
		return 0, nil
	}
	n := 0
	p := s3.NewListObjectsV2Paginator(b.client, &s3.ListObjectsV2Input{Bucket: &b.cfg.Bucket, Prefix: aws.String(s.cfg.Prefix + pendingPrefix)})
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			return n, fmt.Errorf("uploads: list pending: %w", err)
		}
		for _, o := range page.Contents {
			if o.LastModified != nil && time.Since(*o.LastModified) < olderThan {
				continue
			}
			if err := b.Delete(ctx, aws.ToString(o.Key)); err != nil {
				return n, err
			}
			n++
		}
	}
	return n, nil
}

// PresignDownload returns a URL that fetches key straight from the bucket
// for ttl, with the same safe headers Serve sends (attachment unless a
// safe image, the given file name). The bucket must be an *S3Bucket.
func (s *Store) PresignDownload(ctx context.Context, key, name string, ttl time.Duration) (string, error) {
	b, ok := s.cfg.Bucket.(*S3Bucket)
	if !ok {
		return "", errors.New("uploads: presigned downloads need an S3 bucket")
	}
	if ttl <= 0 {
		ttl = 5 * time.Minute
	}
	st, err := b.Stat(ctx, key)
	if err != nil {
		return "", err
	}
	out, err := b.presign.PresignGetObject(ctx, &s3.GetObjectInput{Bucket: &b.cfg.Bucket, Key: &key,
		ResponseContentDisposition: aws.String(mime.FormatMediaType(dispositionFor(st.ContentType), map[string]string{"filename": SanitizeName(name)})),
		ResponseContentType:        aws.String(st.ContentType),
	}, s3.WithPresignExpires(ttl))
	if err != nil {
		return "", fmt.Errorf("uploads: presign download: %w", err)
	}
	return out.URL, nil
}
