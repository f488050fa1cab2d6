package hakit_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/jackc/pgx/v5"

	"hakit.dev/hakit"
	"hakit.dev/hatest"
	"hakit.dev/jobs"
	"hakit.dev/session"
	"hakit.dev/uploads"
)

// Without what they need, the wiring methods return an error that says
// what to set; a second part of a kind with the first one's name is an
// error naming the field to change, not a panic.
func TestWiringErrors(t *testing.T) {
	t.Parallel()
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	bare, err := hakit.New(context.Background(), hakit.Config{Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	for what, err := range map[string]error{
		"Jobs":      second(bare.Jobs(jobs.ClientConfig{})),
		"Worker":    second(bare.Worker(jobs.WorkerConfig{})),
		"Scheduler": second(bare.Scheduler(jobs.SchedulerConfig{})),
		"Relay":     second(bare.Relay(jobs.RelayConfig{})),
		"Uploads":   second(bare.Uploads(uploads.Config{})),
	} {
		want := map[string]string{"Relay": "HAKIT_DATABASE_URL_1", "Uploads": "HAKIT_S3_BUCKET"}[what]
		if want == "" {
			want = "HAKIT_REDIS_SENTINELS"
		}
		if err == nil || !strings.Contains(err.Error(), "hakit: "+what+": ") || !strings.Contains(err.Error(), want) {
			t.Errorf("%s without its service: %v; want an error naming %s", what, err, want)
		}
	}

	// A Redis client is lazy: no server is needed to wire.
	app, err := hakit.New(context.Background(), hakit.Config{Logger: quiet,
		Redis: hakit.RedisConfig{URL: "redis://127.0.0.1:1", NoReplicas: true}})
	if err != nil {
		t.Fatal(err)
	}
	defer app.Redis().Close()
	if _, err := app.Scheduler(jobs.SchedulerConfig{}); err != nil {
		t.Fatal(err)
	}
	c1, err := app.Jobs(jobs.ClientConfig{})
	if err != nil || c1 == nil {
		t.Fatalf("Jobs with a zero config after Scheduler: %v, %v; want the client the Scheduler made", c1, err)
	}
	if _, err := app.Jobs(jobs.ClientConfig{Retention: 2 * time.Hour}); err == nil || !strings.Contains(err.Error(), "call Jobs before them") {
		t.Errorf("Jobs with a config after Scheduler made the client: %v", err)
	}
	if _, err := app.Scheduler(jobs.SchedulerConfig{}); err == nil || !strings.Contains(err.Error(), "SchedulerConfig.Name") {
		t.Errorf("a second Scheduler with the same name: %v", err)
	}
	if _, err := app.Worker(jobs.WorkerConfig{}); err != nil {
		t.Fatal(err)
	}
	if _, err := app.Worker(jobs.WorkerConfig{}); err == nil || !strings.Contains(err.Error(), "WorkerConfig.Name") {
		t.Errorf("a second Worker with the same name: %v", err)
	}
	if _, err := app.Worker(jobs.WorkerConfig{Name: "mail", Queues: map[string]int{"mail": 1}}); err != nil {
		t.Errorf("a second Worker with its own name: %v", err)
	}
	disk, err := uploads.NewDiskBucket(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := app.Uploads(uploads.Config{Bucket: disk, Prefix: "avatars/"}); err != nil {
		t.Errorf("Uploads on a bucket of the app's own, without S3: %v", err)
	}
	if _, err := app.Uploads(uploads.Config{Bucket: disk, Prefix: "/avatars/"}); err == nil || !strings.Contains(err.Error(), "uploads.Config.Name") {
		t.Errorf("a second store named avatars: %v", err)
	}
}

func second[T any](_ T, err error) error { return err }

// The session store follows what the app has: PostgreSQL (its table made
// by the app's migrations, expired rows swept), else memory with a
// warning.
func TestSessionsStoreChoice(t *testing.T) {
	t.Parallel()
	hatestSkip(t)
	pg := hatest.NewPostgres(t, hatest.PostgresOptions{})

	var m *session.Manager
	r := serve(t, hakit.Config{DatabaseURLs: pg.DSNs()}, func(a *hakit.App) {
		hakit.SetMaintenance(a, 100*time.Millisecond, 0)
		var err error
		if m, err = a.Sessions(session.Config{Insecure: true}); err != nil {
			t.Fatal(err)
		}
		a.Router().Post("/login", func(w http.ResponseWriter, r *http.Request) {
			if err := m.Login(r.Context(), "alice"); err != nil {
				hakit.Error(w, r, err)
				return
			}
			io.WriteString(w, "in")
		})
		a.Router().Get("/me", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, m.UserID(r.Context())) })
	}, true)
	if _, ok := m.Store().(*session.PostgresStore); !ok {
		t.Fatalf("with a database and no Redis the store is a %T", m.Store())
	}
	jar, _ := cookiejar.New(nil)
	c := &http.Client{Jar: jar}
	for _, step := range []struct{ method, path, want string }{{"POST", "/login", "in"}, {"GET", "/me", "alice"}} {
		req, _ := http.NewRequest(step.method, r.url+step.path, nil)
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || string(b) != step.want {
			t.Fatalf("%s %s: %d %q", step.method, step.path, resp.StatusCode, b)
		}
	}
	var n int
	if err := r.app.DB().QueryRow(context.Background(), "SELECT count(*) FROM hakit_sessions").Scan(&n); err != nil || n != 1 {
		t.Fatalf("sessions in hakit_sessions: %d, %v", n, err)
	}
	// An expired row is swept by the maintenance task.
	if _, err := r.app.DB().Exec(context.Background(),
		"INSERT INTO hakit_sessions VALUES ('old', '{}', now(), now() - interval '1 minute')"); err != nil {
		t.Fatal(err)
	}
	hatest.WaitFor(t, 10*time.Second, "the expired session deleted", func() bool {
		var n int
		err := r.app.DB().QueryRow(context.Background(), "SELECT count(*) FROM hakit_sessions WHERE token = 'old'").Scan(&n)
		return err == nil && n == 0
	})

	logs := &logBuffer{}
	mem, err := hakit.New(context.Background(), hakit.Config{Logger: slog.New(slog.NewTextHandler(logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	mm, err := mem.Sessions(session.Config{})
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := mm.Store().(*session.MemoryStore); !ok || !strings.Contains(logs.String(), "sessions in memory") {
		t.Errorf("without Redis or a database: a %T, log %q", mm.Store(), logs)
	}
}

// Config.Redis.NoReplicas is one knob for sessions and jobs. On a Redis
// without replicas, with it set, a login does not wait for a replica and
// the outbox relay deletes each row once its task is on the master; with
// it unset, the login's confirmation times out (logged) and the relay
// keeps the row, unconfirmed, though the task ran.
func TestNoReplicasFeedsSessionsAndJobs(t *testing.T) {
	t.Parallel()
	hatestSkip(t)
	for _, noReplicas := range []bool{true, false} {
		t.Run(fmt.Sprint("NoReplicas=", noReplicas), func(t *testing.T) {
			t.Parallel()
			pg := hatest.NewPostgres(t, hatest.PostgresOptions{})
			rd := hatest.NewRedis(t, hatest.RedisOptions{})
			logs, sessionLogs := &logBuffer{}, &logBuffer{}
			var ran atomic.Int32
			outbox := jobs.NewOutbox("")
			r := serve(t, hakit.Config{
				DatabaseURLs: pg.DSNs(),
				Redis:        hakit.RedisConfig{URL: "redis://" + rd.Addr(), NoReplicas: noReplicas},
				Logger:       slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelInfo})),
			}, func(a *hakit.App) {
				m, err1 := a.Sessions(session.Config{Insecure: true, Logger: slog.New(slog.NewTextHandler(sessionLogs, nil))})
				w, err2 := a.Worker(jobs.WorkerConfig{})
				_, err3 := a.Relay(jobs.RelayConfig{Outbox: outbox, PollInterval: 100 * time.Millisecond})
				for _, err := range []error{err1, err2, err3} {
					if err != nil {
						t.Fatal(err)
					}
				}
				jobs.Handle(w, "ping", func(context.Context, struct{}) error { ran.Add(1); return nil })
				a.Router().Post("/login", func(w http.ResponseWriter, r *http.Request) {
					if err := m.Login(r.Context(), "bob"); err != nil {
						hakit.Error(w, r, err)
						return
					}
					err := a.DB().Write(r.Context(), func(tx pgx.Tx) error {
						_, err := outbox.EnqueueTx(r.Context(), tx, "ping", struct{}{}, jobs.Options{})
						return err
					})
					if err != nil {
						hakit.Error(w, r, err)
					}
				})
			}, true)
			resp, err := http.PostForm(r.url+"/login", url.Values{})
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != 200 {
				t.Fatalf("POST /login: %d", resp.StatusCode)
			}
			hatest.WaitFor(t, 15*time.Second, "the task run", func() bool { return ran.Load() == 1 })
			rows := func() int {
				var n int
				if err := r.app.DB().QueryRow(context.Background(), "SELECT count(*) FROM hakit_outbox").Scan(&n); err != nil {
					t.Fatal(err)
				}
				return n
			}
			// The session store logs to session.Config.Logger, not the app's.
			const notConfirmed = "session: a durable change was not confirmed by the Redis replicas"
			unconfirmed := strings.Contains(sessionLogs.String(), notConfirmed)
			if strings.Contains(logs.String(), notConfirmed) {
				t.Errorf("the session store logged to the app's logger, not session.Config.Logger: %s", logs)
			}
			// A Redis without replica and NoReplicas off: one warning,
			// naming the variable.
			const noReplica = "hakit: the Redis master has no replica, and HAKIT_REDIS_NO_REPLICAS"
			if noReplicas {
				hatest.WaitFor(t, 10*time.Second, "the outbox row deleted", func() bool { return rows() == 0 })
				if unconfirmed {
					t.Errorf("NoReplicas, and the login waited for a replica: %s", sessionLogs)
				}
				if strings.Contains(logs.String(), noReplica) {
					t.Errorf("NoReplicas, and a warning about the missing replica: %s", logs)
				}
				return
			}
			if n := strings.Count(logs.String(), noReplica); n != 1 {
				t.Errorf("%d warnings about a Redis without replica, want 1: %s", n, logs)
			}
			// Without NoReplicas the row stays (the relay waits for a
			// replica that does not exist), and the login's WAIT timed out.
			hatest.WaitFor(t, 10*time.Second, "a relay pass left unconfirmed", func() bool {
				return strings.Contains(logs.String(), "the relay keeps outbox rows until a Redis replica confirms their tasks")
			})
			if n := rows(); n != 1 {
				t.Errorf("without NoReplicas, %d outbox rows; want the row kept", n)
			}
			if !unconfirmed {
				t.Errorf("without NoReplicas, the login's confirmation did not time out: %s", sessionLogs)
			}
		})
	}
}

// Uploads' maintenance aborts the multipart uploads left under its
// prefix, and deletes the direct uploads never confirmed, on its own;
// the bucket is checked in /readyz.
func TestUploadsMaintenance(t *testing.T) {
	t.Parallel()
	hatestSkip(t)
	mio := hatest.NewMinIO(t, hatest.MinIOOptions{Bucket: "media"})
	cfg := hakit.Config{S3: hakit.S3Config{Endpoint: mio.Endpoint, Region: mio.Region, Bucket: mio.Bucket,
		AccessKeyID: mio.AccessKey, SecretAccessKey: mio.SecretKey, PathStyle: true, Prefix: "up/"}}
	ctx := context.Background()
	s3c := mio.S3Client()
	for _, key := range []string{"up/left-behind", "elsewhere/not-ours"} {
		if _, err := s3c.CreateMultipartUpload(ctx, &s3.CreateMultipartUploadInput{Bucket: &mio.Bucket, Key: aws.String(key)}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s3c.PutObject(ctx, &s3.PutObjectInput{Bucket: &mio.Bucket, Key: aws.String("up/pending/never-confirmed"),
		Body: strings.NewReader("x")}); err != nil {
		t.Fatal(err)
	}
	var store *uploads.Store
	r := serve(t, cfg, func(a *hakit.App) {
		hakit.SetMaintenance(a, 200*time.Millisecond, time.Millisecond)
		var err error
		if store, err = a.Uploads(uploads.Config{}); err != nil {
			t.Fatal(err)
		}
	}, true)
	b := store.Bucket().(*uploads.S3Bucket)
	hatest.WaitFor(t, 15*time.Second, "the incomplete upload under up/ aborted and the pending one deleted", func() bool {
		n, err := b.Incomplete(ctx, "up/")
		_, serr := b.Stat(ctx, "up/pending/never-confirmed")
		return err == nil && n == 0 && serr == uploads.ErrNotFound
	})
	if n, err := b.Incomplete(ctx, "elsewhere/"); err != nil || n != 1 {
		t.Errorf("the upload outside the prefix: %d incomplete, %v; want it left alone", n, err)
	}
	hatest.WaitFor(t, 5*time.Second, "the s3:up check passing", func() bool {
		for _, res := range r.app.Health().Results() {
			if res.Name == "s3:up" {
				return res.Status == "pass"
			}
		}
		return false
	})
}

// A wiring method called after Run started returns an error: what it
// would add would never start.
func TestWiringAfterRun(t *testing.T) {
	t.Parallel()
	r := serve(t, hakit.Config{}, nil, true)
	disk, err := uploads.NewDiskBucket(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	for what, err := range map[string]error{
		"Sessions":  second(r.app.Sessions(session.Config{Store: session.NewMemoryStore()})),
		"Worker":    second(r.app.Worker(jobs.WorkerConfig{})),
		"Relay":     second(r.app.Relay(jobs.RelayConfig{})),
		"Scheduler": second(r.app.Scheduler(jobs.SchedulerConfig{})),
		"Uploads":   second(r.app.Uploads(uploads.Config{Bucket: disk})),
	} {
		if err == nil || !strings.Contains(err.Error(), "hakit: "+what+": called after Run started") {
			t.Errorf("%s after Run started: %v; want an error saying so", what, err)
		}
	}
}
