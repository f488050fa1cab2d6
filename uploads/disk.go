package uploads

import (
	"context"
	"crypto/md5"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// DiskBucket keeps uploads in a local directory. For development only:
// files are not shared between instances, which is what an S3 bucket is
// for.
type DiskBucket struct{ dir string }

// NewDiskBucket returns a DiskBucket in dir, which it creates.
func NewDiskBucket(dir string) (*DiskBucket, error) {
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, fmt.Errorf("uploads: %w", err)
	}
	return &DiskBucket{dir: dir}, nil
}

func (d *DiskBucket) path(key string) (string, error) {
	clean := filepath.Clean("/" + key)
	if clean == "/" || strings.Contains(key, "..") {
		return "", fmt.Errorf("%w: bad key %q", ErrBadRequest, key)
	}
	return filepath.Join(d.dir, clean), nil
}

type diskMeta struct {
	ContentType string            `json:"content_type"`
	Meta        map[string]string `json:"meta"`
	ETag        string            `json:"etag"`
}

// Upload implements Bucket: the data and its .meta file written to
// temporary files and renamed into place, data first. On any failure
// nothing is left under key.
func (d *DiskBucket) Upload(ctx context.Context, key string, r io.Reader, contentType string, meta map[string]string) error {
	p, err := d.path(key)
	if err != nil {
		return err
	}
	dir := filepath.Dir(p)
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return fmt.Errorf("uploads: %w", err)
	}
	data, err := os.CreateTemp(dir, ".upload-*")
	if err != nil {
		return fmt.Errorf("uploads: %w", err)
	}
	defer os.Remove(data.Name()) // if still there: something failed
	h := md5.New()
	_, err = io.Copy(io.MultiWriter(data, h), r)
	if err = errors.Join(err, data.Close(), ctx.Err()); err != nil {
		return err
	}
	m, _ := json.Marshal(diskMeta{ContentType: contentType, Meta: meta, ETag: `"` + hex.EncodeToString(h.Sum(nil)) + `"`})
	mf, err := os.CreateTemp(dir, ".upload-*.meta")
	if err != nil {
		return fmt.Errorf("uploads: %w", err)
	}
	defer os.Remove(mf.Name())
	_, err = mf.Write(m)
	if err = errors.Join(err, mf.Close()); err != nil {
		return fmt.Errorf("uploads: %w", err)
	}
	if err := os.Rename(data.Name(), p); err != nil {
		return fmt.Errorf("uploads: %w", err)
	}
	if err := os.Rename(mf.Name(), p+".meta"); err != nil {
		// The data without its metadata: remove it, and any older .meta.
		return errors.Join(fmt.Errorf("uploads: %w", err), removeIfExists(p), removeIfExists(p+".meta"))
	}
	return nil
}

// removeIfExists removes the file at p; one already gone is not an error.
func removeIfExists(p string) error {
	if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("uploads: %w", err)
	}
	return nil
}

// Stat implements Bucket.
func (d *DiskBucket) Stat(_ context.Context, key string) (*Object, error) {
	p, err := d.path(key)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrNotFound, err) // as S3 answers a key it refuses
	}
	fi, err := os.Stat(p)
	if errors.Is(err, os.ErrNotExist) || (err == nil && !fi.Mode().IsRegular()) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("uploads: %w", err)
	}
	var m diskMeta
	if b, err := os.ReadFile(p + ".meta"); err == nil {
		_ = json.Unmarshal(b, &m)
	}
	return &Object{Key: key, Size: fi.Size(), ContentType: m.ContentType, ETag: m.ETag, LastModified: fi.ModTime(), Meta: m.Meta}, nil
}

// Open implements Bucket (a single byte range, as S3 serves).
func (d *DiskBucket) Open(ctx context.Context, key, rng, ifNoneMatch string) (*Object, error) {
	o, err := d.Stat(ctx, key)
	if err != nil {
		return nil, err
	}
	if ifNoneMatch != "" && ifNoneMatch == o.ETag {
		o.NotModified = true
		return o, nil
	}
	p, _ := d.path(key)
	f, err := os.Open(p)
	if err != nil {
		return nil, err
	}
	start, end := int64(0), o.Size-1
	if rng != "" {
		s, e, ok := parseRange(rng, o.Size)
		if !ok {
			f.Close()
			return nil, ErrRangeNotSatisfiable
		}
		start, end = s, e
		o.ContentRange = "bytes " + strconv.FormatInt(s, 10) + "-" + strconv.FormatInt(e, 10) + "/" + strconv.FormatInt(o.Size, 10)
	}
	if _, err := f.Seek(start, io.SeekStart); err != nil {
		f.Close()
		return nil, err
	}
	o.Length = end - start + 1
	o.Body = struct {
		io.Reader
		io.Closer
	}{io.LimitReader(f, o.Length), f}
	return o, nil
}

// parseRange parses "bytes=a-b", "bytes=a-" and "bytes=-n".
func parseRange(h string, size int64) (start, end int64, ok bool) {
	spec, found := strings.CutPrefix(h, "bytes=")
	if !found || strings.Contains(spec, ",") {
		return 0, 0, false
	}
	a, b, found := strings.Cut(spec, "-")
	if !found {
		return 0, 0, false
	}
	switch {
	case a == "":
		n, err := strconv.ParseInt(b, 10, 64)
		if err != nil || n <= 0 {
			return 0, 0, false
		}
		return max(0, size-n), size - 1, size > 0
	default:
		s, err := strconv.ParseInt(a, 10, 64)
		if err != nil || s >= size {
			return 0, 0, false
		}
		e := size - 1
		if b != "" {
			if e, err = strconv.ParseInt(b, 10, 64); err != nil || e < s {
				return 0, 0, false
			}
			e = min(e, size-1)
		}
		return s, e, true
	}
}

// Delete implements Bucket: the data first, then its .meta file, so a
// failure leaves the object whole or only a .meta file no Stat or Open
// sees.
func (d *DiskBucket) Delete(_ context.Context, key string) error {
	p, err := d.path(key)
	if err != nil {
		return err
	}
	if err := removeIfExists(p); err != nil {
		return err
	}
	return removeIfExists(p + ".meta")
}
