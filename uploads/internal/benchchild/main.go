// Command benchchild is the process of `go run ./bench uploads` whose
// memory is measured: a binary with the upload path and the S3 SDK only,
// so its peak RSS is what the upload takes plus the floor of a small Go
// program, not the floor of the bench binary (every suite's dependencies).
//
// With BENCH_MODE=sdk it uploads BENCH_BYTES bytes straight with the SDK's
// multipart API (the upload manager's defaults: 5 MiB parts, 5 at a time),
// prints "direct <seconds> <peak RSS MiB>" and exits. Otherwise it serves
// POST /upload (Store.Receive; ?big for the 2 GiB store) on 127.0.0.1 and
// prints its address, then "floor <RSS MiB>" once ready, and serves until
// killed. MINIO_ENDPOINT, MINIO_BUCKET, MINIO_ACCESS, MINIO_SECRET say
// where to; BENCH_S3_CONCURRENCY, if set, is S3Config.Concurrency.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"

	"hakit.dev/uploads"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "benchchild:", err)
		os.Exit(1)
	}
}

func run() error {
	ctx := context.Background()
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError}))
	endpoint, bucket := os.Getenv("MINIO_ENDPOINT"), os.Getenv("MINIO_BUCKET")
	conc, _ := strconv.Atoi(os.Getenv("BENCH_S3_CONCURRENCY")) // 0: the default
	b, err := uploads.NewS3Bucket(uploads.S3Config{Endpoint: endpoint, Bucket: bucket,
		AccessKey: os.Getenv("MINIO_ACCESS"), SecretKey: os.Getenv("MINIO_SECRET"), PathStyle: true, Logger: log,
		Concurrency: conc})
	if err != nil {
		return err
	}
	if os.Getenv("BENCH_MODE") == "sdk" {
		n, err := strconv.ParseInt(os.Getenv("BENCH_BYTES"), 10, 64)
		if err != nil {
			return fmt.Errorf("BENCH_BYTES: %w", err)
		}
		t0 := time.Now()
		if err := sdkMultipart(ctx, b.Client(), bucket, "direct/big.png", &pattern{n: n}, 5<<20, 5); err != nil {
			return err
		}
		secs := time.Since(t0).Seconds()
		hwm, err := peakRSS()
		if err != nil {
			return err
		}
		fmt.Printf("direct %f %f\n", secs, hwm)
		return nil
	}

	store, err := uploads.New(uploads.Config{Bucket: b, Prefix: "up/", MaxSize: 2 << 30, Logger: log})
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
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	fmt.Println(ln.Addr().String())
	hwm, err := peakRSS()
	if err != nil {
		return err
	}
	fmt.Printf("floor %f\n", hwm)
	select {}
}

// sdkMultipart uploads r with the SDK's multipart API, partSize parts,
// concurrency at a time, a new buffer per part.
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

// pattern is n bytes of a PNG-looking stream: a random 1 MiB block,
// repeated (the bench's own benchPattern, for the SDK's side).
type pattern struct {
	n, off int64
	block  []byte
}

func (p *pattern) Read(b []byte) (int, error) {
	if p.block == nil {
		p.block = make([]byte, 1<<20)
		rand.NewChaCha8([32]byte{42}).Read(p.block)
		copy(p.block, "\x89PNG\r\n\x1a\n")
	}
	if p.off >= p.n {
		return 0, io.EOF
	}
	i := p.off % int64(len(p.block))
	n := copy(b, p.block[i:min(int64(len(p.block)), i+p.n-p.off)])
	p.off += int64(n)
	return n, nil
}

// peakRSS reads this process's peak resident set (VmHWM) in MiB.
func peakRSS() (float64, error) {
	b, err := os.ReadFile("/proc/self/status")
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
