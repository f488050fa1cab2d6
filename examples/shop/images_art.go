package main

import (
	"hash/fnv"
	"image"
	"image/color"
	"math"

	"golang.org/x/image/font"
	"golang.org/x/image/font/gofont/gobold"
	"golang.org/x/image/font/opentype"
	"golang.org/x/image/math/fixed"
	"golang.org/x/image/vector"
)

// artSize is the side of a generated product picture: the large
// thumbnail's width, so making that one scales nothing. Shapes are laid
// out on a 1200-unit square, scaled by artScale.
const (
	artSize  = 960
	artScale = artSize / 1200.0
)

// productArt draws the picture of a seeded product: a soft two-colour
// gradient, a shape and a floor shadow, and the product's initials, all
// chosen from its slug, so each product has its own and the same on
// every run.
func productArt(slug, name string) (*image.RGBA, error) {
	h := fnv.New64a()
	h.Write([]byte(slug))
	seed := h.Sum64()
	hue := float64(seed%360) / 360
	img := image.NewRGBA(image.Rect(0, 0, artSize, artSize))

	// Background: a diagonal gradient between two pastels.
	from, to := hsl(hue, 0.45, 0.93), hsl(hue+0.08, 0.50, 0.82)
	ramp := make([]color.RGBA, 2*artSize-1)
	for i := range ramp {
		ramp[i] = mix(from, to, float64(i)/float64(len(ramp)-1))
	}
	for y := range artSize {
		row := img.Pix[y*img.Stride:]
		for x := range artSize {
			c := ramp[x+y]
			row[4*x], row[4*x+1], row[4*x+2], row[4*x+3] = c.R, c.G, c.B, 255
		}
	}

	// A shadow on the floor, then the shape standing on it.
	const c = 600
	fill(img, ellipse(c, 1010, 330, 46), color.RGBA{0, 0, 0, 28})
	shape := hsl(hue+0.5*float64(seed>>9%2), 0.42, 0.62)
	switch seed >> 12 % 4 {
	case 0:
		fill(img, ellipse(c, 560, 400, 400), shape)
	case 1:
		fill(img, roundedRect(200, 160, 1000, 960, 120), shape)
	case 2:
		fill(img, polygon(c, 130, 1010, 950, 190, 950), shape)
	default:
		fill(img, polygon(c, 120, 1030, 560, c, 1000, 170, 560), shape)
	}

	// The initials, white with a soft shadow.
	f, err := opentype.Parse(gobold.TTF)
	if err != nil {
		return nil, err
	}
	face, err := opentype.NewFace(f, &opentype.FaceOptions{Size: 300 * artScale, DPI: 72, Hinting: font.HintingNone})
	if err != nil {
		return nil, err
	}
	defer face.Close()
	text := initials(name)
	if text == "" {
		text = "?"
	}
	d := &font.Drawer{Dst: img, Face: face}
	bounds, _ := d.BoundString(text)
	x := fixed.I(artSize/2) - (bounds.Min.X+bounds.Max.X)/2
	y := fixed.I(560*artScale) - (bounds.Min.Y+bounds.Max.Y)/2
	d.Src, d.Dot = image.NewUniform(color.RGBA{0, 0, 0, 40}), fixed.Point26_6{X: x + fixed.I(5), Y: y + fixed.I(8)}
	d.DrawString(text)
	d.Src, d.Dot = image.NewUniform(color.White), fixed.Point26_6{X: x, Y: y}
	d.DrawString(text)
	return img, nil
}

// fill paints the path in z with an anti-aliased edge.
func fill(dst *image.RGBA, z *vector.Rasterizer, c color.Color) {
	z.Draw(dst, dst.Bounds(), image.NewUniform(c), image.Point{})
}

// ellipse, roundedRect and polygon take coordinates on the 1200-unit
// square.
func ellipse(cx, cy, rx, ry float32) *vector.Rasterizer {
	const k = 0.5523 // a circle's quarter as a cubic Bézier
	cx, cy, rx, ry = cx*artScale, cy*artScale, rx*artScale, ry*artScale
	z := vector.NewRasterizer(artSize, artSize)
	z.MoveTo(cx+rx, cy)
	z.CubeTo(cx+rx, cy+k*ry, cx+k*rx, cy+ry, cx, cy+ry)
	z.CubeTo(cx-k*rx, cy+ry, cx-rx, cy+k*ry, cx-rx, cy)
	z.CubeTo(cx-rx, cy-k*ry, cx-k*rx, cy-ry, cx, cy-ry)
	z.CubeTo(cx+k*rx, cy-ry, cx+rx, cy-k*ry, cx+rx, cy)
	z.ClosePath()
	return z
}

func roundedRect(x0, y0, x1, y1, r float32) *vector.Rasterizer {
	x0, y0, x1, y1, r = x0*artScale, y0*artScale, x1*artScale, y1*artScale, r*artScale
	z := vector.NewRasterizer(artSize, artSize)
	z.MoveTo(x0+r, y0)
	z.LineTo(x1-r, y0)
	z.QuadTo(x1, y0, x1, y0+r)
	z.LineTo(x1, y1-r)
	z.QuadTo(x1, y1, x1-r, y1)
	z.LineTo(x0+r, y1)
	z.QuadTo(x0, y1, x0, y1-r)
	z.LineTo(x0, y0+r)
	z.QuadTo(x0, y0, x0+r, y0)
	z.ClosePath()
	return z
}

// polygon takes its points as x0, y0, x1, y1, …
func polygon(xy ...float32) *vector.Rasterizer {
	for i := range xy {
		xy[i] *= artScale
	}
	z := vector.NewRasterizer(artSize, artSize)
	z.MoveTo(xy[0], xy[1])
	for i := 2; i+1 < len(xy); i += 2 {
		z.LineTo(xy[i], xy[i+1])
	}
	z.ClosePath()
	return z
}

func mix(a, b color.RGBA, t float64) color.RGBA {
	m := func(x, y uint8) uint8 { return uint8(float64(x) + (float64(y)-float64(x))*t + 0.5) }
	return color.RGBA{m(a.R, b.R), m(a.G, b.G), m(a.B, b.B), 255}
}

// hsl converts a hue (turns, any value), saturation and lightness (0-1)
// to an opaque colour.
func hsl(h, s, l float64) color.RGBA {
	h -= math.Floor(h)
	q := l + s - l*s
	if l < 0.5 {
		q = l * (1 + s)
	}
	p := 2*l - q
	ch := func(t float64) uint8 {
		t -= math.Floor(t)
		var v float64
		switch {
		case t < 1.0/6:
			v = p + (q-p)*6*t
		case t < 0.5:
			v = q
		case t < 2.0/3:
			v = p + (q-p)*(2.0/3-t)*6
		default:
			v = p
		}
		return uint8(v*255 + 0.5)
	}
	return color.RGBA{ch(h + 1.0/3), ch(h), ch(h - 1.0/3), 255}
}
