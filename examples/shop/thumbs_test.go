package main

import (
	"bytes"
	"encoding/base64"
	"encoding/binary"
	"hash/crc32"
	"image"
	"image/color"
	"image/gif"
	"image/jpeg"
	"image/png"
	"net/http"
	"strings"
	"testing"
)

// testPicture is a w×h gradient with some transparency.
func testPicture(w, h int) *image.NRGBA {
	img := image.NewNRGBA(image.Rect(0, 0, w, h))
	for y := range h {
		for x := range w {
			i := img.PixOffset(x, y)
			copy(img.Pix[i:i+4], []uint8{uint8(x * 255 / max(1, w-1)), uint8(y * 255 / max(1, h-1)), 128, uint8(255 - (x+y)%64)})
		}
	}
	return img
}

// testGIF is a w×h GIF of stripes, already paletted (no dithering).
func testGIF(t *testing.T, w, h int) []byte {
	img := image.NewPaletted(image.Rect(0, 0, w, h), color.Palette{color.White, color.Black, color.RGBA{200, 60, 40, 255}})
	for i := range img.Pix {
		img.Pix[i] = uint8(i / 7 % 3)
	}
	var buf bytes.Buffer
	if err := gif.Encode(&buf, img, nil); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func encodePNG(t *testing.T, img image.Image) []byte {
	t.Helper()
	var buf bytes.Buffer
	if err := png.Encode(&buf, img); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// pngDeclaring is a valid small PNG whose header then claims w×h pixels
// (its IHDR checksum fixed up): a decompression bomb's header.
func pngDeclaring(t *testing.T, w, h uint32) []byte {
	data := encodePNG(t, testPicture(4, 4))
	// signature (8), IHDR length (4), "IHDR" (4), width, height, …, CRC.
	binary.BigEndian.PutUint32(data[16:], w)
	binary.BigEndian.PutUint32(data[20:], h)
	binary.BigEndian.PutUint32(data[29:], crc32.ChecksumIEEE(data[12:29]))
	return data
}

// webpGopher is a 1-bit lossless WebP (golang.org/x/image's testdata).
const webpGopher = "UklGRrIBAABXRUJQVlA4TKUBAAAvSsAYAA8w//M///MfeJAkbXvaSG7m8Q3GfYSBJekwQztm/IcZlgwnmWImn2BK7aFmBtnVir6q//8VOkFE/xm4baTIu8c48ArEo6+B3zFKYln3pqClSCKX0begFTAXFOLXHSyF8cCNcZEG4OywuA4KVVfJCiArU7GAgJI8+lJP/OKMT/fBAjevg1cYB7YVkFuWga2lyPi5I0HFy5YTpWIHg0RZpkniRVW9odHAKOwosWuOGdxIyn2OvaCDvhg/we6TwadPBPbqBV58MsLmMJ8yZnOWk8SRz4N+QoyPL+MnamzMvcE1rHNEr91F9GKZPVUcS9w7PhhH36suB9qPeYb/oLk6cuTiJ0wOK3m5h1cKjW6EVZCYMK7dxcKCBdgP9HkKr9gkAO2P8GKZGWVdIAatQa+1IDpt6qyorVwdy01xdW8Jkfk6xjEXmVQQ+HQdFr6OKhIN34dXWq0+0qr6EJSCeeVLH9+gvGTLyqM65PQ44ihzlTXxQKjKbAvshXgir7Lil9w4L2bvMycmjQcqXaMCO6BlY28i+FOLzbfI1vEqxAhotocAAA=="

func TestMakeThumbnails(t *testing.T) {
	pic := testPicture(400, 300)
	var jpg bytes.Buffer
	if err := jpeg.Encode(&jpg, pic, nil); err != nil {
		t.Fatal(err)
	}
	wp, err := base64.StdEncoding.DecodeString(webpGopher)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name                 string
		data                 []byte
		smallW, smallH, bigW int
	}{
		{"png", encodePNG(t, pic), 320, 240, 400},
		{"jpeg", jpg.Bytes(), 320, 240, 400},
		{"gif", testGIF(t, 400, 300), 320, 240, 400},
		{"webp", wp, 0, 0, 0},
		{"tiny png, never enlarged", encodePNG(t, testPicture(50, 30)), 50, 30, 50},
		{"tall png, at most twice as tall as wide", encodePNG(t, testPicture(50, 1500)), 21, 640, 50},
	} {
		t.Run(tc.name, func(t *testing.T) {
			thumbs, err := makeThumbnails(tc.data, defaultImageLimits())
			if err != nil {
				t.Fatal(err)
			}
			if len(thumbs) != 2 {
				t.Fatalf("%d thumbnails, want small and large", len(thumbs))
			}
			for size, data := range thumbs {
				if ct := http.DetectContentType(data); ct != "image/jpeg" {
					t.Fatalf("%s is %s", size, ct)
				}
				cfg, err := jpeg.DecodeConfig(bytes.NewReader(data))
				if err != nil {
					t.Fatalf("%s: %v", size, err)
				}
				if tc.smallW == 0 { // the WebP: only the aspect ratio is checked
					continue
				}
				if size == "small" && (cfg.Width != tc.smallW || cfg.Height != tc.smallH) {
					t.Errorf("small is %d×%d, want %d×%d", cfg.Width, cfg.Height, tc.smallW, tc.smallH)
				}
				if size == "large" && cfg.Width != tc.bigW {
					t.Errorf("large is %d wide, want %d", cfg.Width, tc.bigW)
				}
			}
		})
	}
}

// TestBadImages: each is refused with a reason, and the bombs before
// anything is decoded (their declared size would take gigabytes).
func TestBadImages(t *testing.T) {
	good := encodePNG(t, testPicture(64, 64))
	gifBomb := testGIF(t, 8, 8)
	binary.LittleEndian.PutUint16(gifBomb[6:], 65535) // logical screen width
	binary.LittleEndian.PutUint16(gifBomb[8:], 65535) // and height
	lim := defaultImageLimits()
	for _, tc := range []struct {
		name, data, reason string
	}{
		{"png bomb", string(pngDeclaring(t, 100000, 100000)), "declares 100000×100000 pixels: a side is more than 12000"},
		{"png over the pixel limit", string(pngDeclaring(t, 10000, 10000)), "more than 40 megapixels"},
		{"png declaring no pixels", string(pngDeclaring(t, 0, 10)), "PNG header cannot be read"},
		{"gif bomb", string(gifBomb), "declares 65535×65535 pixels"},
		{"truncated png", string(good[:len(good)/2]), "PNG cannot be decoded"},
		{"header only", string(good[:40]), "PNG cannot be decoded"},
		{"text named .png", "name,price\nmug,12.50\n", "not a JPEG, PNG, GIF or WebP image (the file looks like text/plain"},
		{"svg", `<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>`, "not a JPEG, PNG, GIF or WebP"},
		{"empty", "", "not a JPEG, PNG, GIF or WebP"},
		{"too many bytes", string(good), "more than the 100 allowed"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l := lim
			if tc.name == "too many bytes" {
				l.MaxBytes = 100
			}
			thumbs, err := makeThumbnails([]byte(tc.data), l)
			reason, bad := isBadImage(err)
			if !bad {
				t.Fatalf("makeThumbnails = %d thumbnails, %v; want a bad image", len(thumbs), err)
			}
			if !strings.Contains(reason, tc.reason) {
				t.Errorf("reason %q, want it to contain %q", reason, tc.reason)
			}
		})
	}
}

// TestBombIsRefusedBeforeDecoding: the bomb's rejection allocates next to
// nothing, where decoding 100000×100000 would take 40 GB.
func TestBombIsRefusedBeforeDecoding(t *testing.T) {
	bomb := pngDeclaring(t, 12000, 12000) // within the side limit, 144 MP
	allocs := testing.AllocsPerRun(5, func() {
		if _, err := makeThumbnails(bomb, defaultImageLimits()); err == nil {
			t.Fatal("a 144 MP image was accepted")
		}
	})
	if allocs > 50 {
		t.Errorf("%.0f allocations to refuse a bomb: it was decoded", allocs)
	}
}

func TestReadOriginal(t *testing.T) {
	lim := imageLimits{MaxBytes: 10}
	if data, err := readOriginal(strings.NewReader("0123456789"), lim); err != nil || len(data) != 10 {
		t.Fatalf("10 bytes: %q, %v", data, err)
	}
	if _, err := readOriginal(strings.NewReader("0123456789A"), lim); err == nil {
		t.Fatal("11 bytes were read with a limit of 10")
	} else if _, bad := isBadImage(err); !bad {
		t.Fatalf("11 bytes: %v, want a bad image", err)
	}
}

func TestThumbSize(t *testing.T) {
	for _, tc := range []struct{ w, h, maxW, tw, th int }{
		{1200, 800, 320, 320, 213},
		{800, 1200, 320, 320, 480},
		{320, 320, 320, 320, 320},
		{10000, 1, 320, 320, 1},
		{1, 10000, 320, 1, 640},
		{100, 3000, 960, 64, 1920},
	} {
		if tw, th := thumbSize(tc.w, tc.h, tc.maxW); tw != tc.tw || th != tc.th {
			t.Errorf("thumbSize(%d, %d, %d) = %d×%d, want %d×%d", tc.w, tc.h, tc.maxW, tw, th, tc.tw, tc.th)
		}
	}
}

// jpegWithOrientation encodes img as a JPEG carrying an EXIF orientation
// (big-endian TIFF, one IFD entry), as a phone writes it.
func jpegWithOrientation(t *testing.T, img image.Image, orientation uint16) []byte {
	var buf bytes.Buffer
	if err := jpeg.Encode(&buf, img, nil); err != nil {
		t.Fatal(err)
	}
	tiff := []byte("MM\x00\x2a\x00\x00\x00\x08\x00\x01" + // header, IFD at 8 with 1 entry
		"\x01\x12\x00\x03\x00\x00\x00\x01\x00\x00\x00\x00" + // orientation, SHORT, count 1, value
		"\x00\x00\x00\x00") // no next IFD
	binary.BigEndian.PutUint16(tiff[18:], orientation)
	seg := append([]byte("Exif\x00\x00"), tiff...)
	app1 := []byte{0xFF, 0xE1, 0, 0}
	binary.BigEndian.PutUint16(app1[2:], uint16(len(seg)+2))
	data := buf.Bytes()
	return append(append(append([]byte{}, data[:2]...), append(app1, seg...)...), data[2:]...)
}

// TestThumbnailsFollowEXIF: a photo stored sideways with its orientation
// in EXIF gets thumbnails as it is seen.
func TestThumbnailsFollowEXIF(t *testing.T) {
	// Left half red, right half blue, 60×30.
	src := image.NewRGBA(image.Rect(0, 0, 60, 30))
	for y := range 30 {
		for x := range 60 {
			c := color.RGBA{220, 20, 20, 255}
			if x >= 30 {
				c = color.RGBA{20, 20, 220, 255}
			}
			src.SetRGBA(x, y, c)
		}
	}
	red := func(c color.Color) bool { r, _, b, _ := c.RGBA(); return r > 2*b }
	for o := uint16(1); o <= 8; o++ {
		data := jpegWithOrientation(t, src, o)
		if got := jpegOrientation(data); got != int(o) {
			t.Fatalf("orientation %d read as %d", o, got)
		}
		thumbs, err := makeThumbnails(data, defaultImageLimits())
		if err != nil {
			t.Fatal(err)
		}
		img, err := jpeg.Decode(bytes.NewReader(thumbs["large"]))
		if err != nil {
			t.Fatal(err)
		}
		b := img.Bounds()
		if want := (image.Point{60, 30}); o >= 5 && b.Size() != (image.Point{30, 60}) || o < 5 && b.Size() != want {
			t.Errorf("orientation %d: %v", o, b.Size())
		}
		// Where the red half is seen: 6 turns the left side to the top,
		// 8 to the bottom, 2 and 3 mirror it to the right.
		switch o {
		case 1, 4:
			if !red(img.At(5, 15)) || red(img.At(55, 15)) {
				t.Errorf("orientation %d: red is not on the left", o)
			}
		case 2, 3:
			if red(img.At(5, 15)) || !red(img.At(55, 15)) {
				t.Errorf("orientation %d: red is not on the right", o)
			}
		case 5, 6:
			if !red(img.At(15, 5)) || red(img.At(15, 55)) {
				t.Errorf("orientation %d: red is not on top", o)
			}
		case 7, 8:
			if red(img.At(15, 5)) || !red(img.At(15, 55)) {
				t.Errorf("orientation %d: red is not at the bottom", o)
			}
		}
	}
	// Cut anywhere, the EXIF reader gives 1 or the orientation, never a panic.
	data := jpegWithOrientation(t, src, 6)
	for n := range 80 {
		if o := jpegOrientation(data[:n]); o != 1 && o != 6 {
			t.Errorf("cut at %d: orientation %d", n, o)
		}
	}
	if o := jpegOrientation(encodePNG(t, src)); o != 1 {
		t.Errorf("a PNG: orientation %d", o)
	}
}
