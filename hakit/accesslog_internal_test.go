package hakit

import (
	"bytes"
	"context"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/netip"
	"strings"
	"testing"
	"time"
	"unsafe"
)

// The access-log line the stack writes itself is byte for byte the line
// slog's JSON handler writes for the same record: strings that need
// escaping, times in other zones or without nanoseconds, client
// addresses of every form.
func TestAccessLineIsSlogsLine(t *testing.T) {
	t.Parallel()
	east := time.FixedZone("east", 5*3600+30*60)
	times := []time.Time{
		time.Now(), // with a monotonic reading
		time.Date(2026, 11, 30, 23, 59, 59, 123456789, time.UTC),
		time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC),     // no fraction
		time.Date(2026, 1, 2, 3, 4, 5, 120000000, east), // trailing zeros, an offset
		time.Date(1, 1, 1, 0, 0, 0, 1, time.FixedZone("w", -7*3600)),
		time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC), // out of RFC 3339's range: slog's error
		time.Date(-1, 1, 1, 0, 0, 0, 0, time.UTC),
	}
	paths := []string{
		"/", "/hello", `/a"b\c`, "/tab\there/nl\nend\r", "/ctl\x00\x01\x1f\x7f",
		"/<script>&amp;", "/ünïcödé/日本", "/bad\xff\xfeutf8\xc3", "/sep\u2028\u2029x",
		"/emoji/😀", strings.Repeat("/long", 2000),
	}
	infos := []requestInfo{
		{id: "abcdefghi-1", remote: "127.0.0.1:5000"},
		{id: "abcdefghi-zz", remote: "[::1]:5000"},
		{id: "x", remote: "[::ffff:10.0.0.7]:5000"},
		{id: "y", remote: "[fe80::1%eth0]:5000"},
		{id: "z", remote: "not an address"},
		{id: `q"\`, remote: "@"},
		{id: "p", remote: "10.0.0.1:1", parsed: true, clientIP: netip.MustParseAddr("2001:db8::1")},
		{id: "zone", remote: "10.0.0.1:1", parsed: true, clientIP: netip.MustParseAddr("fe80::1%a\"b\\c\x01é")},
	}
	var fast, slow bytes.Buffer
	h := NewJSONHandler(&fast, nil)
	ref := slog.NewJSONHandler(&slow, nil)
	n := 0
	for _, tm := range times {
		for i, p := range paths {
			ri := &infos[i%len(infos)]
			for _, m := range []string{"GET", "PROPFIND", "WEIRD\"METHOD"} {
				fast.Reset()
				slow.Reset()
				if err := h.writeAccess(tm, m, p, 200+i, int64(i*1000-1), ri); err != nil {
					t.Fatal(err)
				}
				if err := ref.Handle(context.Background(), accessRecord(tm, m, p, 200+i, int64(i*1000-1), ri)); err != nil {
					t.Fatal(err)
				}
				if fast.String() != slow.String() {
					t.Fatalf("time %v, method %q, path %q, client %q:\nstack: %s\nslog:  %s", tm, m, p, ri.remote, fast.String(), slow.String())
				}
				n++
			}
		}
	}
	for _, ri := range infos {
		fast.Reset()
		slow.Reset()
		_ = h.writeAccess(times[1], "GET", "/", 200, 1, &ri)
		_ = ref.Handle(context.Background(), accessRecord(times[1], "GET", "/", 200, 1, &ri))
		if fast.String() != slow.String() {
			t.Fatalf("client %q %v:\nstack: %s\nslog:  %s", ri.remote, ri.clientIP, fast.String(), slow.String())
		}
	}
	if n == 0 {
		t.Fatal("nothing compared")
	}
}

// The time of the access line, formatted from a cached second, is
// time.RFC3339Nano's, in every zone, across second boundaries, with and
// without a fraction.
func TestAccessTimeIsRFC3339Nano(t *testing.T) {
	t.Parallel()
	zones := []*time.Location{time.UTC, time.Local, time.FixedZone("east", 5*3600+30*60),
		time.FixedZone("west", -8*3600), time.FixedZone("lmt", 17*60+30)}
	if ny, err := time.LoadLocation("America/New_York"); err == nil {
		zones = append(zones, ny)
	}
	h := NewJSONHandler(&bytes.Buffer{}, nil)
	rng := rand.New(rand.NewPCG(1, 2))
	base := time.Date(2026, 3, 8, 6, 59, 58, 0, time.UTC) // a DST change in New York at 07:00 UTC
	for i := range 20000 {
		tm := base.Add(time.Duration(rng.Int64N(int64(4 * time.Second))))
		switch i % 4 {
		case 1:
			tm = tm.Truncate(time.Second) // no fraction
		case 2:
			tm = tm.Truncate(time.Millisecond) // trailing zeros
		case 3:
			tm = time.Unix(rng.Int64N(1<<36)-1<<35, rng.Int64N(1e9)) // any year in range
		}
		tm = tm.In(zones[i%len(zones)])
		got, ok := h.appendTime(nil, tm)
		if y := tm.Year(); y < 0 || y >= 10000 {
			if ok {
				t.Fatalf("%v: %s, want no time (the year is out of range)", tm, got)
			}
			continue
		}
		if want := tm.Format(time.RFC3339Nano); !ok || string(got) != want {
			t.Fatalf("%v: %s (%v), want %s", tm, got, ok, want)
		}
	}
}

// Options the shortcut cannot honour turn it off; the stack then goes
// through slog.
func TestJSONHandlerFastOnlyWithPlainOptions(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		opts *slog.HandlerOptions
		fast bool
	}{
		{nil, true},
		{&slog.HandlerOptions{Level: slog.LevelDebug}, true},
		{&slog.HandlerOptions{AddSource: true}, false},
		{&slog.HandlerOptions{ReplaceAttr: func(_ []string, a slog.Attr) slog.Attr { return a }}, false},
	} {
		h := NewJSONHandler(&bytes.Buffer{}, c.opts)
		if h.fast != c.fast {
			t.Errorf("options %+v: fast %v, want %v", c.opts, h.fast, c.fast)
		}
	}
}

// A request's one allocation stays within the 512-byte size class.
func TestRequestStateSize(t *testing.T) {
	if n := unsafe.Sizeof(reqState{}); n > 512 {
		t.Fatalf("reqState is %d bytes: past the 512-byte size class, a request allocates 640", n)
	}
}

func TestMayBeHTML(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		body string
		want bool
	}{
		{"", true}, {" \t\r\n\x0c", true}, {"<p>", true}, {"  \n<!DOCTYPE html>", true},
		{"hello", false}, {" {\"a\":1}", false}, {"\xef\xbb\xbf<html>", false}, {"\x00<html>", false},
	} {
		if got := mayBeHTML([]byte(c.body)); got != c.want {
			t.Errorf("mayBeHTML(%q) = %v, want %v", c.body, got, c.want)
		}
	}
	// Whatever net/http sniffs as HTML, mayBeHTML lets through.
	for _, sig := range []string{"<!DOCTYPE HTML", "<HTML", "<HEAD", "<SCRIPT", "<IFRAME", "<H1", "<DIV",
		"<FONT", "<TABLE", "<A", "<STYLE", "<TITLE", "<B", "<BODY", "<BR", "<P", "<!--"} {
		for _, body := range []string{sig + ">", " \n" + strings.ToLower(sig) + " ", "\t" + sig + ">x"} {
			if ct := http.DetectContentType([]byte(body)); strings.HasPrefix(ct, "text/html") && !mayBeHTML([]byte(body)) {
				t.Errorf("%q sniffs as %s, and mayBeHTML says no", body, ct)
			}
		}
	}
}
