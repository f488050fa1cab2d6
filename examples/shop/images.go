package main

// Product images. An admin's upload streams to S3 as it arrives (admin.go);
// in the same database write as the images row, a task is put in the
// outbox, and the thumbnail job (here) reads the original back, refuses a
// decompression bomb from its declared dimensions before decoding it,
// writes two JPEG thumbnails and marks the image ready. Pages only ever
// show those re-encoded thumbnails, through /images/{id}/{size}, which
// answers a placeholder while there is none — and when S3 is down, so
// the shop keeps selling with grey pictures.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/jackc/pgx/v5"

	"hakit.dev/jobs"
	"hakit.dev/uploads"
)

const (
	// thumbnailTask makes an image's thumbnails.
	thumbnailTask = "shop:thumbnails"
	// imageTimeout bounds reading a thumbnail from S3 for a page: a hung
	// S3 costs a page's images this long, then a placeholder.
	imageTimeout = 3 * time.Second
	// s3Pause is how long the image route answers the placeholder at
	// once after S3 failed, instead of trying again for every image.
	s3Pause = 5 * time.Second
)

// thumbnailJob is the payload of a thumbnailTask.
type thumbnailJob struct {
	ImageID int64 `json:"image_id"`
}

// thumbnailOptions: a transient failure (S3 or the database away) is
// retried with asynq's backoff, 15 times over more than a day; a bad
// image is archived at once (jobs.SkipRetry).
var thumbnailOptions = jobs.Options{MaxRetry: 15, Timeout: 5 * time.Minute}

// imageRoutes mounts the product image routes (/images/{id}/{size}).
func (s *shop) imageRoutes(r chi.Router) {
	h := &imageServer{shop: s}
	r.Get("/images/{id}/{size}", h.serveImage)
}

// imageServer serves thumbnails, and remembers when S3 last failed.
type imageServer struct {
	*shop
	s3DownUntil atomic.Int64 // unix nanoseconds
}

// imageURL returns the URL of a product image in a size ("small", "large"), "" if none.
func (s *shop) imageURL(imageID *int64, size string) string {
	if imageID == nil {
		return ""
	}
	return "/images/" + strconv.FormatInt(*imageID, 10) + "/" + size
}

// serveImage answers a thumbnail, or the placeholder while there is none:
// pending, broken, unknown, or S3 unreachable (503, so no cache keeps it;
// for s3Pause after a failure without asking S3 again, so a page of
// images does not wait imageTimeout for each). A thumbnail never changes
// (a new upload is a new image), so it is cached for a year and
// revalidated by its ETag.
func (s *imageServer) serveImage(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	size := chi.URLParam(r, "size")
	id, err := strconv.ParseInt(chi.URLParam(r, "id"), 10, 64)
	if err != nil || id <= 0 || (size != "small" && size != "large") {
		placeholder(w, http.StatusNotFound)
		return
	}
	var status string
	var small, large *string
	err = s.db.QueryRow(ctx, "SELECT status, small_key, large_key FROM images WHERE id = $1", id).Scan(&status, &small, &large)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		placeholder(w, http.StatusNotFound)
		return
	case err != nil:
		s.log.Warn("image: database", "image", id, "err", err)
		placeholder(w, http.StatusServiceUnavailable)
		return
	case status != "ready" || s.files == nil:
		placeholder(w, http.StatusOK)
		return
	}
	key := *small
	if size == "large" {
		key = *large
	}
	if time.Now().UnixNano() < s.s3DownUntil.Load() {
		placeholder(w, http.StatusServiceUnavailable)
		return
	}
	ctx, cancel := context.WithTimeout(ctx, imageTimeout)
	defer cancel()
	obj, err := s.files.Bucket().Open(ctx, key, "", r.Header.Get("If-None-Match"))
	if err != nil {
		if r.Context().Err() == nil && !errors.Is(err, uploads.ErrNotFound) {
			s.s3DownUntil.Store(time.Now().Add(s3Pause).UnixNano())
		}
		s.log.Warn("image: storage", "image", id, "key", key, "err", err)
		placeholder(w, http.StatusServiceUnavailable)
		return
	}
	h := w.Header()
	h.Set("Cache-Control", "public, max-age=31536000, immutable")
	h.Set("ETag", obj.ETag)
	if obj.NotModified {
		w.WriteHeader(http.StatusNotModified)
		return
	}
	defer obj.Body.Close()
	h.Set("Content-Type", "image/jpeg") // made by the thumbnail job, never the upload itself
	h.Set("Content-Length", strconv.FormatInt(obj.Length, 10))
	h.Set("X-Content-Type-Options", "nosniff")
	if _, err := io.Copy(w, obj.Body); err != nil {
		s.log.Info("image: cut short", "image", id, "err", err)
	}
}

// placeholderSVG is a soft grey picture frame shown where an image is
// missing. It is the shop's own: no user content is ever served as SVG.
const placeholderSVG = `<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 400 400" width="400" height="400">` +
	`<defs><linearGradient id="g" x1="0" y1="0" x2="1" y2="1"><stop offset="0" stop-color="#f4f1ec"/><stop offset="1" stop-color="#e6e1d9"/></linearGradient></defs>` +
	`<rect width="400" height="400" fill="url(#g)"/>` +
	`<g fill="none" stroke="#b9b1a5" stroke-width="8" stroke-linejoin="round" stroke-linecap="round">` +
	`<rect x="120" y="135" width="160" height="130" rx="14"/><path d="M132 250l44-50 32 34 22-22 38 38"/></g>` +
	`<circle cx="236" cy="170" r="13" fill="#b9b1a5"/></svg>`

// placeholder answers the placeholder picture with status. It is never
// cached: the real image may come any moment, under the same URL.
func placeholder(w http.ResponseWriter, status int) {
	h := w.Header()
	h.Set("Content-Type", "image/svg+xml")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Cache-Control", "no-store")
	if status == http.StatusServiceUnavailable {
		h.Set("Retry-After", "10")
	}
	h.Set("Content-Length", strconv.Itoa(len(placeholderSVG)))
	w.WriteHeader(status)
	_, _ = io.WriteString(w, placeholderSVG)
}

// registerImageJobs registers the thumbnail jobs on the worker. One
// image is decoded at a time per instance, so the memory a decode takes
// (up to 160 MB at the 40-megapixel limit) is paid once.
func (s *shop) registerImageJobs(w *jobs.Worker) {
	one := make(chan struct{}, 1)
	jobs.Handle(w, thumbnailTask, func(ctx context.Context, t thumbnailJob) error {
		select {
		case one <- struct{}{}:
		case <-ctx.Done():
			return ctx.Err()
		}
		defer func() { <-one }()
		return s.makeThumbnails(ctx, t.ImageID, defaultImageLimits())
	})
	jobs.Handle(w, seedPictureTask, s.seedPicture)
	jobs.Handle(w, deleteImageTask, s.deleteImage)
}

// deleteImageTask removes an image no product shows any more.
const deleteImageTask = "shop:image-delete"

// deleteImage removes a replaced image: its files in S3, then its row.
// An image a product points at again is left alone, and so is a file
// another images row names (a seed picture's key is its product's).
// Run again, it finds nothing to do.
func (s *shop) deleteImage(ctx context.Context, t thumbnailJob) error {
	if s.files == nil {
		return errors.New("delete image: no S3 bucket (HAKIT_S3_BUCKET)")
	}
	const unused = "NOT EXISTS (SELECT 1 FROM products WHERE image_id = $1)"
	var original string
	var small, large *string
	var shared bool
	err := s.db.QueryRow(ctx, "SELECT upload_key, small_key, large_key, "+
		"EXISTS (SELECT 1 FROM images o WHERE o.upload_key = i.upload_key AND o.id <> i.id) "+
		"FROM images i WHERE id = $1 AND "+unused, t.ImageID).Scan(&original, &small, &large, &shared)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil // gone, or shown again
	}
	if err != nil {
		return err
	}
	var keys []string
	if !shared { // its thumbnails' keys are made from the original's
		keys = append(keys, original)
		for _, k := range []*string{small, large} {
			if k != nil {
				keys = append(keys, *k)
			}
		}
	}
	for _, k := range keys {
		if err := s.files.Bucket().Delete(ctx, k); err != nil {
			return fmt.Errorf("delete image %d: %w", t.ImageID, err)
		}
	}
	_, err = s.db.Exec(ctx, "DELETE FROM images WHERE id = $1 AND "+unused, t.ImageID)
	return err
}

// makeThumbnails makes an image's thumbnails and marks it ready. It is
// idempotent: an image no longer pending is left alone. An image that can
// never give thumbnails (a bomb, not an image, truncated) is marked broken
// with the reason and the task archived (jobs.SkipRetry); any other
// failure is returned, and the task retried.
func (s *shop) makeThumbnails(ctx context.Context, id int64, lim imageLimits) error {
	if s.files == nil {
		return errors.New("thumbnails: no S3 bucket (HAKIT_S3_BUCKET)")
	}
	var key, status string
	err := s.db.QueryRow(ctx, "SELECT upload_key, status FROM images WHERE id = $1", id).Scan(&key, &status)
	if errors.Is(err, pgx.ErrNoRows) {
		return fmt.Errorf("thumbnails: image %d does not exist: %w", id, jobs.SkipRetry)
	}
	if err != nil || status != "pending" {
		return err
	}
	bucket := s.files.Bucket()
	obj, err := bucket.Open(ctx, key, "", "")
	if errors.Is(err, uploads.ErrNotFound) {
		return s.markBroken(ctx, id, "the uploaded file is missing from storage")
	}
	if err != nil {
		return fmt.Errorf("thumbnails: image %d: %w", id, err)
	}
	data, err := readOriginal(obj.Body, lim)
	obj.Body.Close()
	if err == nil {
		var thumbs map[string][]byte
		if thumbs, err = makeThumbnails(data, lim); err == nil {
			return s.storeThumbnails(ctx, id, key, thumbs)
		}
	}
	if reason, bad := isBadImage(err); bad {
		return s.markBroken(ctx, id, reason)
	}
	return fmt.Errorf("thumbnails: image %d: %w", id, err)
}

// storeThumbnails writes the thumbnails next to the original and marks
// the image ready.
func (s *shop) storeThumbnails(ctx context.Context, id int64, key string, thumbs map[string][]byte) error {
	keys := map[string]string{}
	for size, data := range thumbs {
		keys[size] = key + "." + size + ".jpg"
		if err := s.files.Bucket().Upload(ctx, keys[size], bytes.NewReader(data), "image/jpeg", nil); err != nil {
			return fmt.Errorf("thumbnails: image %d: %w", id, err)
		}
	}
	tag, err := s.db.Exec(ctx, "UPDATE images SET status = 'ready', reason = NULL, small_key = $2, large_key = $3 "+
		"WHERE id = $1 AND status = 'pending'", id, keys["small"], keys["large"])
	if err != nil {
		return fmt.Errorf("thumbnails: image %d: %w", id, err)
	}
	if tag.RowsAffected() > 0 {
		s.log.Info("thumbnails made", "image", id)
	}
	return nil
}

// markBroken records why an image gives no thumbnails and archives the
// task: retrying cannot change the file. If the record fails, the task is
// retried (and finds the same reason again); if the image was no longer
// pending (a run delivered twice finished first), there is nothing to do.
func (s *shop) markBroken(ctx context.Context, id int64, reason string) error {
	tag, err := s.db.Exec(ctx, "UPDATE images SET status = 'broken', reason = $2 WHERE id = $1 AND status = 'pending'", id, reason)
	if err != nil {
		return fmt.Errorf("thumbnails: image %d is broken (%s), not recorded: %w", id, reason, err)
	}
	if tag.RowsAffected() == 0 {
		return nil
	}
	s.log.Warn("image broken", "image", id, "reason", reason)
	return fmt.Errorf("thumbnails: image %d: %s: %w", id, reason, jobs.SkipRetry)
}

// seedImages gives every product without an image a generated picture
// (productArt): in one write, an images row for each (its original's key
// made from the product's slug), the product pointed at it, and a task
// that draws and uploads the picture, then makes its thumbnails as for
// any upload. So a start does not wait for the drawing, and instances
// seeding together do not both give a product a picture (the rows are
// locked, and the second finds them done). Without S3 there is nothing
// to do.
func (s *shop) seedImages(ctx context.Context) error {
	if s.files == nil {
		s.log.Info("seed: no S3 bucket (HAKIT_S3_BUCKET), products keep the placeholder")
		return nil
	}
	made := 0
	err := s.db.Write(ctx, func(tx pgx.Tx) error {
		made = 0
		rows, _ := tx.Query(ctx, "SELECT id, slug FROM products WHERE image_id IS NULL ORDER BY id FOR UPDATE")
		type product struct {
			ID   int64
			Slug string
		}
		products, err := pgx.CollectRows(rows, pgx.RowToStructByPos[product])
		if err != nil {
			return err
		}
		for _, p := range products {
			var id int64
			if err := tx.QueryRow(ctx, "INSERT INTO images (upload_key) VALUES ($1) RETURNING id", "seed/"+p.Slug+".jpg").Scan(&id); err != nil {
				return err
			}
			if _, err := tx.Exec(ctx, "UPDATE products SET image_id = $2 WHERE id = $1", p.ID, id); err != nil {
				return err
			}
			if _, err := s.outbox.EnqueueTx(ctx, tx, seedPictureTask, thumbnailJob{ImageID: id}, thumbnailOptions); err != nil {
				return err
			}
			made++
		}
		return nil
	})
	if err == nil && made > 0 {
		s.log.Info("seed: product pictures on their way", "products", made)
	}
	return err
}

// seedPictureTask draws a seeded product's picture, then makes its
// thumbnails.
const seedPictureTask = "shop:seed-picture"

// seedPicture draws and uploads the picture of the product whose image
// is t.ImageID, then makes its thumbnails. Run again, it uploads the same
// bytes to the same key.
func (s *shop) seedPicture(ctx context.Context, t thumbnailJob) error {
	if s.files == nil {
		return errors.New("seed picture: no S3 bucket (HAKIT_S3_BUCKET)")
	}
	var key, status, slug, name string
	err := s.db.QueryRow(ctx, `SELECT i.upload_key, i.status, p.slug, p.name FROM images i
		JOIN products p ON p.image_id = i.id WHERE i.id = $1`, t.ImageID).Scan(&key, &status, &slug, &name)
	if errors.Is(err, pgx.ErrNoRows) { // the product has another image now
		return fmt.Errorf("seed picture: image %d is no product's: %w", t.ImageID, jobs.SkipRetry)
	}
	if err != nil || status != "pending" {
		return err
	}
	img, err := productArt(slug, name)
	if err != nil {
		return err
	}
	data, err := encodeJPEG(img)
	if err != nil {
		return err
	}
	if err := s.files.Bucket().Upload(ctx, key, bytes.NewReader(data), "image/jpeg", nil); err != nil {
		return fmt.Errorf("seed picture: image %d: %w", t.ImageID, err)
	}
	return s.makeThumbnails(ctx, t.ImageID, defaultImageLimits())
}
