package hatest

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
)

// MinIOOptions configures the S3 server started by [StartMinIO] or
// [NewMinIO]. The zero value is usable.
type MinIOOptions struct {
	// Bucket is created at start. Defaults to "hatest".
	Bucket string
	// AccessKey and SecretKey are the root credentials. Default to
	// "hatest" and "hatest-secret" (MinIO wants at least 8 characters).
	AccessKey, SecretKey string
	// StartTimeout bounds the start and each Restart. Defaults to 60s.
	StartTimeout time.Duration
}

// MinIO is a MinIO server: an S3-compatible object store on 127.0.0.1 with
// one bucket. Code under test should speak plain S3 to it (path-style
// addressing, checksums only when required), so it works on any S3
// implementation.
type MinIO struct {
	Endpoint  string // http://127.0.0.1:port
	Region    string // us-east-1
	Bucket    string
	AccessKey string
	SecretKey string

	d         *daemon
	dir       string
	timeout   time.Duration
	closeOnce sync.Once
}

// StartMinIO builds nothing: it starts the minio binary found on PATH or in
// $(go env GOPATH)/bin (make deps installs it with go install), waits until
// it is ready and creates the bucket. The caller must Close it; tests use
// [NewMinIO].
func StartMinIO(ctx context.Context, opts MinIOOptions) (_ *MinIO, err error) {
	defaultTo(&opts.Bucket, "hatest")
	defaultTo(&opts.AccessKey, "hatest")
	defaultTo(&opts.SecretKey, "hatest-secret")
	if len(opts.AccessKey) < 3 || len(opts.SecretKey) < 8 {
		return nil, errors.New("hatest: MinIOOptions: AccessKey needs at least 3 characters and SecretKey at least 8")
	}
	defaultTo(&opts.StartTimeout, 60*time.Second)
	bin, err := binary("minio", "github.com/minio/minio", goBinDirs()...)
	if err != nil {
		return nil, err
	}
	dir, err := runDir("minio")
	if err != nil {
		return nil, err
	}
	m := &MinIO{Region: "us-east-1", Bucket: opts.Bucket, AccessKey: opts.AccessKey, SecretKey: opts.SecretKey,
		dir: dir, timeout: opts.StartTimeout}
	defer func() {
		if err != nil {
			m.Close()
		}
	}()
	data := filepath.Join(dir, "data")
	if err := os.MkdirAll(data, 0o755); err != nil {
		return nil, fmt.Errorf("hatest: %w", err)
	}
	m.d = &daemon{name: "minio", path: bin, dir: dir, logPath: filepath.Join(dir, "minio.log"),
		env: []string{
			"MINIO_ROOT_USER=" + opts.AccessKey,
			"MINIO_ROOT_PASSWORD=" + opts.SecretKey,
			"MINIO_BROWSER=off",
			"MINIO_UPDATE=off",
			"MINIO_CONFIG_DIR=" + filepath.Join(dir, "config"),
		}}
	ctx, cancel := context.WithTimeout(ctx, opts.StartTimeout)
	defer cancel()
	err = m.d.startOnFreePorts(2, func(ports []int) error {
		m.Endpoint = "http://" + hostPort(ports[0])
		m.d.args = []string{"server", data, "--quiet", "--address", hostPort(ports[0]), "--console-address", hostPort(ports[1])}
		return nil
	}, func() error { return m.waitReady(ctx) })
	if err != nil {
		return nil, err
	}
	if _, err := m.S3Client().CreateBucket(ctx, &s3.CreateBucketInput{Bucket: aws.String(m.Bucket)}); err != nil {
		return nil, m.d.failure("create bucket "+m.Bucket, err)
	}
	return m, nil
}

// S3Client returns an aws-sdk-go-v2 S3 client for this server, configured
// as code that must work on any S3-compatible store should be: path-style
// addressing, request checksums and response validation only when
// required.
func (m *MinIO) S3Client() *s3.Client {
	return s3.New(s3.Options{
		BaseEndpoint: aws.String(m.Endpoint),
		Region:       m.Region,
		UsePathStyle: true,
		Credentials: aws.CredentialsProviderFunc(func(context.Context) (aws.Credentials, error) {
			return aws.Credentials{AccessKeyID: m.AccessKey, SecretAccessKey: m.SecretKey, Source: "hatest"}, nil
		}),
		RequestChecksumCalculation: aws.RequestChecksumCalculationWhenRequired,
		ResponseChecksumValidation: aws.ResponseChecksumValidationWhenRequired,
		RetryMaxAttempts:           1,
	})
}

// Kill SIGKILLs the server. Its data directory stays for Restart.
func (m *MinIO) Kill() error { return m.d.kill() }

// Restart starts a killed server again on the same port with the same data
// and waits until it is ready.
func (m *MinIO) Restart(ctx context.Context) error {
	if m.d.running() {
		return errors.New("hatest: minio is running; Kill it first")
	}
	if err := m.d.start(); err != nil {
		return err
	}
	return m.waitReady(ctx)
}

// Pid returns the server's process id.
func (m *MinIO) Pid() int { return m.d.pid() }

// LogPath returns the path of the server's log.
func (m *MinIO) LogPath() string { return m.d.logPath }

// Close stops the server and removes its data. It is safe to call more
// than once.
func (m *MinIO) Close() error {
	var errs []error
	m.closeOnce.Do(func() {
		if m.d != nil {
			errs = append(errs, m.d.kill())
		}
		errs = append(errs, os.RemoveAll(m.dir))
	})
	return errors.Join(errs...)
}

func (m *MinIO) waitReady(ctx context.Context) error {
	s3c := m.S3Client()
	return m.d.waitReady(ctx, m.timeout, func(ctx context.Context) error {
		code, err := httpStatus(ctx, m.Endpoint+"/minio/health/ready")
		if err != nil {
			return err
		}
		if code != http.StatusOK {
			return errors.New("health/ready: " + strconv.Itoa(code))
		}
		// MinIO reports ready a moment before it serves S3 requests
		// ("Server not initialized yet").
		_, err = s3c.ListBuckets(ctx, &s3.ListBucketsInput{})
		return err
	})
}

// NewMinIO starts a MinIO server for the test (see [StartMinIO]) and stops
// it when the test ends, pass or fail.
func NewMinIO(t testing.TB, opts MinIOOptions) *MinIO {
	t.Helper()
	skipUnlessServices(t)
	m, err := StartMinIO(context.Background(), opts)
	return register(t, m, err, func() string { return "--- minio (" + m.LogPath() + "):\n" + m.d.logTail(20) })
}
