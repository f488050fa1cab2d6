package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"mime/multipart"
	"net"
	"net/http"
	"os"
	"os/exec"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"

	"hakit.dev/hatest"
	"hakit.dev/uploads"
)

const gib = 1 << 30

// envUploadsChild makes the bench binary the upload server of the uploads
// suite: a process of its own, so its peak RSS is the handler's alone.
const envUploadsChild = "HAKIT_BENCH_UPLOADS_CHILD"

// uploadsSuite streams 1 GiB through the upload handler of a separate
// process into MinIO and reads that process's peak RSS; the same process
// first uploads the same bytes straight with the SDK (the baseline); then
// 100 uploads are cut off in various ways and the orphan parts counted.
func uploadsSuite(ctx context.Context, r *report) error {
	m, err := hatest.StartMinIO(ctx, hatest.MinIOOptions{Bucket: "bench"})
	if err != nil {
		return err
	}
	defer m.Close()

	self, err := os.Executable()
	if err != nil {
		return err
	}
	cmd := exec.CommandContext(ctx, self)
	cmd.Env = append(os.Environ(), envUploadsChild+"=1",
		"MINIO_ENDPOINT="+m.Endpoint, "MINIO_BUCKET="+m.Bucket, "MINIO_ACCESS="+m.AccessKey, "MINIO_SECRET="+m.SecretKey)
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	if err := cmd.Start(); err != nil {
		return err
	}
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	lines := bufio.NewScanner(out)
	next := func() (string, error) {
		if !lines.Scan() {
			return "", fmt.Errorf("upload server ended: %v", lines.Err())
		}
		return lines.Text(), nil
	}
	addr, err := next()
	if err != nil {
		return err
	}
	baseline, err := next() // "direct <seconds>"
	if err != nil {
		return err
	}
	directSecs, _ := strconv.ParseFloat(strings.TrimPrefix(baseline, "direct "), 64)

	// Our path: 1 GiB, streamed, through the handler.
	t0 := time.Now()
	code, body, err := postFile(ctx, "http://"+addr+"/upload?big", "big.png", &benchPattern{n: gib})
	if err != nil {
		return err
	}
	oursSecs := time.Since(t0).Seconds()
	if code != 200 {
		return fmt.Errorf("1 GiB upload: %d %s", code, body)
	}
	hwm, err := peakRSS(cmd.Process.Pid)
	if err != nil {
		return err
	}
	r.row("measurement", "hakit handler", "baseline", "")
	r.row("1 GiB to MinIO (MiB/s)", fmt.Sprintf("%.0f", 1024/oursSecs), fmt.Sprintf("%.0f", 1024/directSecs), "SDK multipart from the same process, 5 MiB parts, 5 at a time")
	r.row("peak RSS of the uploading process during ours (MiB)", fmt.Sprintf("%.0f", hwm), "", "HTTP + multipart parsing, sniffing, SHA-256, 5 MiB parts, 4 at a time")

	orphans, outcomes, err := abortedUploads(ctx, "http://"+addr+"/upload", m)
	if err != nil {
		return err
	}
	r.row("100 uploads cut off in random ways: incomplete multipart uploads left", fmt.Sprint(orphans), "", outcomes)

	r.metric("upload_1gib_peak_rss_mib", fmt.Sprintf("%.1f", hwm))
	r.metric("upload_throughput_ratio", fmt.Sprintf("%.3f", directSecs/oursSecs))
	r.metric("upload_orphan_parts", orphans)
	return nil
}

// benchPattern is n bytes of a PNG-looking stream: a random 1 MiB block,
// repeated, so making the bytes costs next to nothing on either side.
type benchPattern struct {
	n, off int64
}

// benchBlock is made on first use, not at start for every suite.
var benchBlock = sync.OnceValue(func() []byte {
	b := make([]byte, 1<<20)
	rand.NewChaCha8([32]byte{42}).Read(b)
	copy(b, "\x89PNG\r\n\x1a\n")
	return b
})

func (p *benchPattern) Read(b []byte) (int, error) {
	if p.off >= p.n {
		return 0, io.EOF
	}
	b = b[:min(int64(len(b)), p.n-p.off)]
	block := benchBlock()
	n := 0
	for n < len(b) {
		i := (p.off + int64(n)) % int64(len(block))
		n += copy(b[n:], block[i:])
	}
	p.off += int64(n)
	return n, nil
}

// postFile streams a multipart upload of r.
func postFile(ctx context.Context, url, name string, r io.Reader) (int, string, error) {
	pr, pw := io.Pipe()
	mw := multipart.NewWriter(pw)
	go func() {
		fw, err := mw.CreateFormFile("file", name)
		if err == nil {
			_, err = io.Copy(fw, r)
		}
		if err == nil {
			err = mw.Close()
		}
		pw.CloseWithError(err)
	}()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, pr)
	if err != nil {
		return 0, "", err
	}
	req.Header.Set("Content-Type", mw.FormDataContentType())
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), nil
}

// peakRSS reads a process's peak resident set (VmHWM) in MiB.
func peakRSS(pid int) (float64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) >= 2 && f[0] == "VmHWM:" {
			kb, err := strconv.ParseFloat(f[1], 64)
			return kb / 1024, err
		}
	}
	return 0, errors.New("no VmHWM in /proc status")
}

// abortedUploads sends 100 multipart-sized uploads that fail in random
// ways — the client hangs up part way, the file turns out too large, or
// is not an allowed type — and counts the incomplete multipart uploads
// left in the bucket once the server has answered them all.
func abortedUploads(ctx context.Context, url string, m *hatest.MinIO) (int, string, error) {
	rnd := rand.New(rand.NewPCG(7, 7))
	kinds := map[string]int{}
	var wg sync.WaitGroup
	sem := make(chan struct{}, 4)
	for i := range 100 {
		kind := []string{"hang-up", "too-large", "wrong-type"}[rnd.IntN(3)]
		size := int64(6+rnd.IntN(20)) << 20
		cut := int64(rnd.IntN(int(size)))
		kinds[kind]++
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			switch kind {
			case "hang-up":
				hangUp(url, &benchPattern{n: size}, cut)
			case "too-large": // the server's limit is 64 MiB
				postFile(ctx, url, fmt.Sprintf("big%d.png", i), &benchPattern{n: 70 << 20})
			case "wrong-type":
				postFile(ctx, url, "page.png", io.MultiReader(strings.NewReader("<!doctype html>"), &benchPattern{n: size, off: 8}))
			}
		})
	}
	wg.Wait()
	var parts []string
	for _, k := range []string{"hang-up", "too-large", "wrong-type"} {
		parts = append(parts, fmt.Sprintf("%d %s", kinds[k], k))
	}
	// Aborts run as each failure is noticed; give the last a moment.
	deadline := time.Now().Add(30 * time.Second)
	for {
		out, err := m.S3Client().ListMultipartUploads(ctx, &s3.ListMultipartUploadsInput{Bucket: &m.Bucket})
		if err != nil {
			return 0, "", err
		}
		if len(out.Uploads) == 0 || time.Now().After(deadline) {
			return len(out.Uploads), strings.Join(parts, ", "), nil
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// hangUp sends an upload's first cut bytes on a raw connection and closes
// it.
func hangUp(url string, r io.Reader, cut int64) {
	host := strings.TrimPrefix(strings.TrimSuffix(url, "/upload"), "http://")
	conn, err := net.Dial("tcp", host)
	if err != nil {
		return
	}
	defer conn.Close()
	const boundary = "bench-boundary"
	head := "--" + boundary + "\r\nContent-Disposition: form-data; name=\"file\"; filename=\"x.png\"\r\n\r\n"
	fmt.Fprintf(conn, "POST /upload HTTP/1.1\r\nHost: %s\r\nContent-Type: multipart/form-data; boundary=%s\r\nContent-Length: %d\r\n\r\n%s",
		host, boundary, 1<<30, head)
	_, _ = io.CopyN(conn, r, cut)
}

// uploadsChild is the upload server process.
func uploadsChild() error {
	ctx := context.Background()
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError}))
	endpoint, bucket := os.Getenv("MINIO_ENDPOINT"), os.Getenv("MINIO_BUCKET")
	access, secret := os.Getenv("MINIO_ACCESS"), os.Getenv("MINIO_SECRET")
	b, err := uploads.NewS3Bucket(uploads.S3Config{Endpoint: endpoint, Bucket: bucket, AccessKey: access, SecretKey: secret,
		PathStyle: true, Logger: log})
	if err != nil {
		return err
	}
	store, err := uploads.New(uploads.Config{Bucket: b, Prefix: "up/", MaxSize: 2 * gib, Logger: log})
	if err != nil {
		return err
	}
	small, err := uploads.New(uploads.Config{Bucket: b, Prefix: "small/", MaxSize: 64 << 20, Logger: log})
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /upload", func(w http.ResponseWriter, r *http.Request) {
		st := small
		if r.URL.Query().Has("big") {
			st = store
		}
		got, err := st.Receive(w, r)
		if err != nil {
			http.Error(w, err.Error(), uploads.Status(err))
			return
		}
		_ = json.NewEncoder(w).Encode(got)
	})
	go func() { _ = http.Serve(ln, mux) }()
	fmt.Println(ln.Addr().String())

	// The baseline: the same bytes, straight through the SDK, multipart,
	// with the SDK upload manager's defaults (5 MiB parts, 5 at a time).
	t0 := time.Now()
	if err := sdkMultipart(ctx, b.Client(), bucket, "direct/big.png", &benchPattern{n: gib}, 5<<20, 5); err != nil {
		return err
	}
	fmt.Printf("direct %f\n", time.Since(t0).Seconds())
	// Peak RSS from here on is the handler's: give the baseline's memory
	// back to the OS, then reset the peak.
	debug.FreeOSMemory()
	if err := os.WriteFile("/proc/self/clear_refs", []byte("5"), 0); err != nil {
		return fmt.Errorf("reset peak RSS: %w", err)
	}
	select {}
}

// sdkMultipart uploads r with the SDK's multipart API, partSize parts,
// concurrency at a time.
func sdkMultipart(ctx context.Context, c *s3.Client, bucket, key string, r io.Reader, partSize int, concurrency int) error {
	mu, err := c.CreateMultipartUpload(ctx, &s3.CreateMultipartUploadInput{Bucket: &bucket, Key: &key})
	if err != nil {
		return err
	}
	var (
		mtx   sync.Mutex
		parts []types.CompletedPart
		wg    sync.WaitGroup
		errs  []error
		sem   = make(chan struct{}, concurrency)
	)
	for num := int32(1); ; num++ {
		buf := make([]byte, partSize)
		n, rerr := io.ReadFull(r, buf)
		if n > 0 {
			sem <- struct{}{}
			wg.Go(func() {
				defer func() { <-sem }()
				out, err := c.UploadPart(ctx, &s3.UploadPartInput{Bucket: &bucket, Key: &key, UploadId: mu.UploadId,
					PartNumber: aws.Int32(num), Body: bytes.NewReader(buf[:n]), ContentLength: aws.Int64(int64(n))})
				mtx.Lock()
				defer mtx.Unlock()
				if err != nil {
					errs = append(errs, err)
					return
				}
				parts = append(parts, types.CompletedPart{ETag: out.ETag, PartNumber: aws.Int32(num)})
			})
		}
		if rerr != nil {
			break
		}
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return err
	}
	slices.SortFunc(parts, func(a, b types.CompletedPart) int { return int(*a.PartNumber - *b.PartNumber) })
	_, err = c.CompleteMultipartUpload(ctx, &s3.CompleteMultipartUploadInput{Bucket: &bucket, Key: &key, UploadId: mu.UploadId,
		MultipartUpload: &types.CompletedMultipartUpload{Parts: parts}})
	return err
}
