package main

import (
	"bytes"
	"errors"
	"fmt"
	"image"
	"image/color"
	"image/gif"
	"image/jpeg"
	"image/png"
	"io"
	"net/http"

	"golang.org/x/image/draw"
	"golang.org/x/image/webp"
)

// Thumbnails are JPEGs of two widths, the aspect ratio kept, never
// enlarged, and at most twice as tall as wide.
const (
	smallWidth = 320
	largeWidth = 960
)

// imageLimits bound what the thumbnail job agrees to decode. The header's
// declared dimensions are checked before any pixel is decoded: a 100 KB
// PNG can declare 100000×100000 pixels, 40 GB once decoded.
type imageLimits struct {
	MaxBytes  int64 // of the original file
	MaxPixels int64 // width × height
	MaxSide   int   // width or height
}

// defaultImageLimits are 40 megapixels (a 48 MP phone photo is refused;
// phones save 12 MP by default), 12000 px a side and 20 MiB a file. One
// decode at a time takes at most 160 MB (RGBA at 40 MP).
func defaultImageLimits() imageLimits {
	return imageLimits{MaxBytes: 20 << 20, MaxPixels: 40_000_000, MaxSide: 12000}
}

// badImageError is an image that will never give thumbnails, whatever
// the retries: Reason says why, in words for the shop's admin.
type badImageError struct{ Reason string }

func (e *badImageError) Error() string { return "bad image: " + e.Reason }

func badImage(format string, args ...any) error {
	return &badImageError{Reason: fmt.Sprintf(format, args...)}
}

// imageFormat is a format the job decodes: sniffed from the file's first
// bytes, never taken from its name or a client's claim.
type imageFormat struct {
	name         string
	decodeConfig func(io.Reader) (image.Config, error)
	decode       func(io.Reader) (image.Image, error)
}

// sniffFormat returns the decoder for data's content, or a badImageError
// for anything but JPEG, PNG, GIF and WebP.
func sniffFormat(data []byte) (imageFormat, error) {
	switch ct := http.DetectContentType(data); ct {
	case "image/jpeg":
		return imageFormat{"JPEG", jpeg.DecodeConfig, jpeg.Decode}, nil
	case "image/png":
		return imageFormat{"PNG", png.DecodeConfig, png.Decode}, nil
	case "image/gif":
		return imageFormat{"GIF", gif.DecodeConfig, gif.Decode}, nil // the first frame
	case "image/webp":
		return imageFormat{"WebP", webp.DecodeConfig, webp.Decode}, nil
	default:
		return imageFormat{}, badImage("not a JPEG, PNG, GIF or WebP image (the file looks like %s)", ct)
	}
}

// checkImage reads only the header of data and refuses an image whose
// declared dimensions are beyond lim, before anything is decoded.
func checkImage(data []byte, lim imageLimits) (imageFormat, image.Config, error) {
	if int64(len(data)) > lim.MaxBytes {
		return imageFormat{}, image.Config{}, badImage("the file is %d bytes, more than the %d allowed", len(data), lim.MaxBytes)
	}
	f, err := sniffFormat(data)
	if err != nil {
		return f, image.Config{}, err
	}
	cfg, err := f.decodeConfig(bytes.NewReader(data))
	if err != nil {
		return f, cfg, badImage("the %s header cannot be read: %v", f.name, err)
	}
	w, h := cfg.Width, cfg.Height
	switch {
	case w <= 0 || h <= 0:
		return f, cfg, badImage("the %s declares %d×%d pixels", f.name, w, h)
	case w > lim.MaxSide || h > lim.MaxSide:
		return f, cfg, badImage("the %s declares %d×%d pixels: a side is more than %d", f.name, w, h, lim.MaxSide)
	case int64(w)*int64(h) > lim.MaxPixels:
		return f, cfg, badImage("the %s declares %d×%d pixels, more than %d megapixels", f.name, w, h, lim.MaxPixels/1_000_000)
	}
	return f, cfg, nil
}

// decodeImage checks data's declared dimensions, then decodes it.
func decodeImage(data []byte, lim imageLimits) (image.Image, error) {
	f, _, err := checkImage(data, lim)
	if err != nil {
		return nil, err
	}
	img, err := f.decode(bytes.NewReader(data))
	if err != nil {
		return nil, badImage("the %s cannot be decoded: %v", f.name, err)
	}
	if b := img.Bounds(); b.Empty() {
		return nil, badImage("the %s has no pixels", f.name)
	}
	return img, nil
}

// thumbSize returns the size of a thumbnail of a w×h image at most maxW
// wide and 2×maxW tall, aspect kept, never larger than the image.
func thumbSize(w, h, maxW int) (int, int) {
	maxH := 2 * maxW
	tw, th := w, h
	if tw > maxW {
		tw, th = maxW, max(1, int((int64(h)*int64(maxW)+int64(w)/2)/int64(w)))
	}
	if th > maxH {
		tw, th = max(1, int((int64(tw)*int64(maxH)+int64(th)/2)/int64(th))), maxH
	}
	return tw, th
}

// thumbnail scales src (Catmull-Rom) onto white, which stands in for
// any transparency, as JPEG has none. If src is to be seen turned a
// quarter (EXIF), maxW bounds its height, which will be the width.
func thumbnail(src image.Image, maxW int, turned bool) *image.RGBA {
	b := src.Bounds()
	tw, th := thumbSize(b.Dx(), b.Dy(), maxW)
	if turned {
		th, tw = thumbSize(b.Dy(), b.Dx(), maxW)
	}
	dst := image.NewRGBA(image.Rect(0, 0, tw, th))
	draw.Draw(dst, dst.Bounds(), image.NewUniform(color.White), image.Point{}, draw.Src)
	if tw == b.Dx() && th == b.Dy() {
		draw.Draw(dst, dst.Bounds(), src, b.Min, draw.Over)
	} else {
		draw.CatmullRom.Scale(dst, dst.Bounds(), src, b, draw.Over, nil)
	}
	return dst
}

// encodeJPEG encodes img at a quality that keeps product photos crisp.
func encodeJPEG(img image.Image) ([]byte, error) {
	var buf bytes.Buffer
	if err := jpeg.Encode(&buf, img, &jpeg.Options{Quality: 85}); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// makeThumbnails decodes an original (its dimensions checked first) and
// returns its thumbnails as JPEGs by size name ("small", "large"). An
// image that can never give them is a *badImageError.
func makeThumbnails(data []byte, lim imageLimits) (map[string][]byte, error) {
	img, err := decodeImage(data, lim)
	if err != nil {
		return nil, err
	}
	// Turned as the camera says (EXIF), once small. The small one is made
	// from the large one: a third of the work, and the same picture.
	o := jpegOrientation(data)
	large := orient(thumbnail(img, largeWidth, turned(o)), o)
	out := map[string][]byte{}
	for size, img := range map[string]image.Image{"large": large, "small": thumbnail(large, smallWidth, false)} {
		if out[size], err = encodeJPEG(img); err != nil {
			return nil, fmt.Errorf("thumbnail %s: %w", size, err)
		}
	}
	return out, nil
}

// readOriginal reads an original of at most lim.MaxBytes from r.
func readOriginal(r io.Reader, lim imageLimits) ([]byte, error) {
	data, err := io.ReadAll(io.LimitReader(r, lim.MaxBytes+1))
	if err != nil {
		return nil, err
	}
	if int64(len(data)) > lim.MaxBytes {
		return nil, badImage("the file is more than the %d bytes allowed", lim.MaxBytes)
	}
	return data, nil
}

// isBadImage reports whether err is a bad image, and why.
func isBadImage(err error) (string, bool) {
	var bad *badImageError
	if errors.As(err, &bad) {
		return bad.Reason, true
	}
	return "", false
}
