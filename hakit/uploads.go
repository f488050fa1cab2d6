package hakit

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"hakit.dev/health"
	"hakit.dev/uploads"
)

// S3Config says which S3 bucket [App.Uploads] keeps files in. Any
// S3-compatible server works (AWS, MinIO, Ceph, Garage…). The zero value
// is no bucket.
type S3Config struct {
	// Endpoint is the S3 endpoint URL [HAKIT_S3_ENDPOINT], e.g.
	// "http://127.0.0.1:9000" for MinIO. Defaults to AWS's own for
	// Region.
	Endpoint string

	// Region is the bucket's region [HAKIT_S3_REGION]. Defaults to
	// "us-east-1".
	Region string

	// Bucket is the bucket's name [HAKIT_S3_BUCKET]. Setting it enables
	// App.Uploads' default bucket.
	Bucket string

	// AccessKeyID and SecretAccessKey are static credentials
	// [HAKIT_S3_ACCESS_KEY_ID, HAKIT_S3_SECRET_ACCESS_KEY]. Required with
	// Bucket. For other credentials (an instance role), make the bucket
	// with uploads.NewS3Bucket and S3Config.Credentials, and pass it in
	// uploads.Config.Bucket.
	AccessKeyID, SecretAccessKey string

	// PathStyle addresses the bucket in the path (endpoint/bucket/key)
	// rather than in the host name [HAKIT_S3_PATH_STYLE], as MinIO, Ceph
	// and most S3-compatible servers want. Defaults to false.
	PathStyle bool

	// Prefix is put before every key of the app's uploads store
	// [HAKIT_S3_PREFIX], e.g. "uploads/", so a bucket can be shared.
	// It is uploads.Config.Prefix when that is empty. Defaults to none.
	Prefix string
}

// Configured reports whether c names a bucket.
func (c S3Config) Configured() bool { return c.Bucket != "" }

// problems lists what is wrong with c; name turns a field name into the
// name the user gave it.
func (c S3Config) problems(name func(field string) string) []error {
	var errs []error
	if c.Endpoint != "" {
		u, err := url.Parse(c.Endpoint)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			errs = append(errs, fmt.Errorf("%s=%s: want an http:// or https:// URL", name("Endpoint"), redactURL(c.Endpoint)))
		}
	}
	if (c.AccessKeyID == "") != (c.SecretAccessKey == "") {
		errs = append(errs, fmt.Errorf("%s and %s go together: set both", name("AccessKeyID"), name("SecretAccessKey")))
	}
	if strings.ContainsAny(c.Bucket, "/ ") {
		errs = append(errs, fmt.Errorf("%s=%q: want a bucket name, without / or spaces (the key prefix is %s)", name("Bucket"), c.Bucket, name("Prefix")))
	}
	switch {
	case c.Bucket != "" && c.AccessKeyID == "" && c.SecretAccessKey == "":
		errs = append(errs, fmt.Errorf("%s needs %s and %s", name("Bucket"), name("AccessKeyID"), name("SecretAccessKey")))
	case c.Bucket == "" && (c.Endpoint != "" || c.Region != "" || c.AccessKeyID != "" || c.PathStyle || c.Prefix != ""):
		errs = append(errs, fmt.Errorf("S3 settings without %s: set it too", name("Bucket")))
	}
	return errs
}

// Uploads returns an uploads.Store, ready for Receive, Serve and the
// rest, and makes it part of the app:
//
//   - its bucket is cfg.Bucket or, when that is nil, an S3 bucket made
//     from Config.S3 (an error when neither is set); cfg.Prefix defaults
//     to Config.S3.Prefix and cfg.Logger to the app's logger;
//   - the errors the store answers by itself (Serve's 404, 416, 502,
//     503 before the body, and Store.Error's) go through [Error]
//     unless cfg.ErrorHandler is set: the app's error page
//     ([App.SetErrorPage]; HTML for browsers, problem details for JSON
//     clients), with the app's status mapping ([HTTPErrorOf]: an
//     unreachable S3 is 503 with Retry-After, where uploads.Status
//     says 502), logged with the request ID;
//   - its metrics are registered in [App.Registry];
//   - an S3 bucket's Ping is a (non-critical) readiness check, named
//     "s3:" and the store's name;
//   - while the app runs, every hour or so (at a random point of the hour
//     on each instance, so instances seldom meet), multipart uploads
//     under the prefix left incomplete (by a crashed instance, or an
//     abort that failed) are aborted once older than the longest upload
//     cfg allows (MaxSize at MinRate, plus an hour; at least 24h; a week
//     without a MinRate), and direct uploads never confirmed are deleted
//     after 24h (Store.SweepPending). Both are safe to run on every
//     instance;
//   - at shutdown, the bucket made from Config.S3 waits for its
//     background aborts (S3Bucket.Close), within the shutdown's deadline.
//
// Call it before Run: after, it is an error. Several stores (two
// prefixes) need different uploads.Config.Name (or prefixes).
func (a *App) Uploads(cfg uploads.Config) (*uploads.Store, error) {
	if err := a.beforeRun("Uploads"); err != nil {
		return nil, err
	}
	if cfg.Logger == nil {
		cfg.Logger = a.log
	}
	if cfg.ErrorHandler == nil {
		cfg.ErrorHandler = Error
	}
	if cfg.Prefix == "" {
		cfg.Prefix = a.cfg.S3.Prefix
	}
	var own *uploads.S3Bucket
	if cfg.Bucket == nil {
		s := a.cfg.S3
		if !s.Configured() {
			return nil, errors.New("hakit: Uploads: no bucket: set Config.S3 (HAKIT_S3_BUCKET and its credentials) or uploads.Config.Bucket")
		}
		b, err := uploads.NewS3Bucket(uploads.S3Config{Endpoint: s.Endpoint, Region: s.Region, Bucket: s.Bucket,
			AccessKey: s.AccessKeyID, SecretKey: s.SecretAccessKey, PathStyle: s.PathStyle, Logger: a.log})
		if err != nil {
			return nil, fmt.Errorf("hakit: Uploads: %w", err)
		}
		cfg.Bucket, own = b, b
	}
	store, err := uploads.New(cfg)
	if err != nil {
		if own != nil {
			own.Close()
		}
		return nil, fmt.Errorf("hakit: Uploads: %w", err)
	}
	name := storeName(cfg)
	if err := a.registry.Register(store); err != nil {
		if own != nil {
			own.Close()
		}
		if errors.As(err, new(prometheus.AlreadyRegisteredError)) {
			return nil, fmt.Errorf("hakit: Uploads: a store named %q exists already: give this one another uploads.Config.Name", name)
		}
		return nil, fmt.Errorf("hakit: Uploads: metrics: %w", err)
	}
	s3b, _ := cfg.Bucket.(*uploads.S3Bucket)
	incompleteAge := 7 * 24 * time.Hour
	if rate := orDefault(cfg.MinRate, uploads.DefaultMinRate); rate > 0 {
		longest := time.Duration(orDefault(cfg.MaxSize, 100<<20 /* uploads.Config.MaxSize default */)/rate)*time.Second + time.Hour
		incompleteAge = max(24*time.Hour, longest)
	}
	pendingAge := 24 * time.Hour
	if a.wire.maintenanceAge > 0 {
		incompleteAge, pendingAge = a.wire.maintenanceAge, a.wire.maintenanceAge
	}
	p := &periodic{log: a.log, every: a.wire.maintenanceEvery, what: "uploads maintenance", name: name}
	p.run = func(ctx context.Context) error {
		var errs []error
		if s3b != nil {
			n, err := s3b.AbortIncomplete(ctx, cfg.Prefix, incompleteAge)
			if n > 0 {
				a.log.Info("hakit: aborted incomplete multipart uploads", "store", name, "count", n, "older_than", incompleteAge)
			}
			errs = append(errs, err)
		}
		n, err := store.SweepPending(ctx, pendingAge)
		if n > 0 {
			a.log.Info("hakit: deleted direct uploads never confirmed", "store", name, "count", n)
		}
		return errors.Join(append(errs, err)...)
	}
	if own != nil {
		p.close = own.Close
	}
	if s3b != nil {
		p.checks = []health.Check{{Name: "s3:" + name, Func: s3b.Ping}}
	}
	a.Add("uploads:"+name, p)
	return store, nil
}

// storeName is the name uploads.New gives a Store of cfg.
func storeName(cfg uploads.Config) string {
	if cfg.Name != "" {
		return cfg.Name
	}
	if n := strings.Trim(cfg.Prefix, "/"); n != "" {
		return n
	}
	return "default"
}

func orDefault(v, def int64) int64 {
	if v == 0 {
		return def
	}
	return v
}
