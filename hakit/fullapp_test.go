package hakit_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"mime/multipart"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/jackc/pgx/v5"

	"hakit.dev/hatest"
)

// TestFullApp runs the getting-started app (hakit/internal/fullapp, the
// main of docs/getting-started.md) as a process against a PostgreSQL
// primary with a replica 300ms behind, Redis with a replica and three
// Sentinels, and MinIO, configured by the environment alone. A login, a
// note written with its outbox job, read back at once (read-your-writes
// from the lagging replica), the job run by the worker, an attachment
// streamed to S3 and downloaded; then SIGTERM: exit 0, every component
// stopped in reverse order, the Redis client closed after all of them,
// and every log line from the app's own logger.
func TestFullApp(t *testing.T) {
	t.Parallel()
	hatestSkip(t)
	ctx := context.Background()
	pg := hatest.NewPostgres(t, hatest.PostgresOptions{Replicas: 1})
	rd := hatest.NewRedis(t, hatest.RedisOptions{Replicas: 1, Sentinels: 3})
	mio := hatest.NewMinIO(t, hatest.MinIOOptions{Bucket: "notes"})
	if err := pg.Nodes[1].SetApplyDelay(ctx, 300*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	bin := hatest.Build(t, "./internal/fullapp")
	addr := freeAddr(t)
	p := hatest.NewProcess(t, hatest.ProcessOptions{Path: bin, Env: []string{
		"HAKIT_ADDR=" + addr,
		"HAKIT_DATABASE_URL_1=" + pg.DSNs()[0],
		"HAKIT_DATABASE_URL_2=" + pg.DSNs()[1],
		"HAKIT_REDIS_SENTINELS=" + strings.Join(rd.SentinelAddrs(), ","),
		"HAKIT_REDIS_MASTER=" + rd.MasterName,
		"HAKIT_S3_ENDPOINT=" + mio.Endpoint,
		"HAKIT_S3_REGION=" + mio.Region,
		"HAKIT_S3_BUCKET=" + mio.Bucket,
		"HAKIT_S3_ACCESS_KEY_ID=" + mio.AccessKey,
		"HAKIT_S3_SECRET_ACCESS_KEY=" + mio.SecretKey,
		"HAKIT_S3_PATH_STYLE=true",
		"HAKIT_S3_PREFIX=attachments/",
		"HAKIT_DRAIN_DELAY=200ms",
		"HAKIT_LOG_LEVEL=debug",
		"NOTES_DEV=true",
	}})
	base := "http://" + addr
	waitStatus(t, base+"/readyz", 200)

	jar, _ := cookiejar.New(nil)
	c := &http.Client{Jar: jar, Timeout: 10 * time.Second}
	call := func(method, path, contentType string, body io.Reader, want int, into any) []byte {
		t.Helper()
		req, err := http.NewRequest(method, base+path, body)
		if err != nil {
			t.Fatal(err)
		}
		if contentType != "" {
			req.Header.Set("Content-Type", contentType)
		}
		resp, err := c.Do(req)
		if err != nil {
			t.Fatalf("%s %s: %v", method, path, err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != want {
			t.Fatalf("%s %s: %d %s; want %d", method, path, resp.StatusCode, b, want)
		}
		if into != nil {
			if err := json.Unmarshal(b, into); err != nil {
				t.Fatalf("%s %s: %q: %v", method, path, b, err)
			}
		}
		return b
	}
	form := func(kv ...string) io.Reader {
		v := url.Values{}
		for i := 0; i < len(kv); i += 2 {
			v.Set(kv[i], kv[i+1])
		}
		return strings.NewReader(v.Encode())
	}
	const formType = "application/x-www-form-urlencoded"

	// Sessions (Redis through Sentinel): a login, durable, read back.
	var me struct {
		User     string `json:"user"`
		LastNote int64  `json:"last_note"`
	}
	call("POST", "/login", formType, form("user", "alice"), 200, &me) // followed to /me
	if me.User != "alice" {
		t.Fatalf("after login /me = %+v", me)
	}

	// dbrouter + jobs: a note and its outbox job in one transaction, read
	// back at once from the lagging replica.
	var created struct{ ID int64 }
	call("POST", "/notes", formType, form("body", "one two three four"), 201, &created)
	type noteJSON struct {
		Body        string
		Words       *int
		Attachments []struct {
			ID   int64
			Name string
		}
	}
	var nt noteJSON
	call("GET", fmt.Sprint("/notes/", created.ID), "", nil, 200, &nt)
	if nt.Body != "one two three four" {
		t.Fatalf("the note read right after its write: %+v", nt)
	}
	// The relay moved the job to Redis, the worker ran it.
	hatest.WaitFor(t, 20*time.Second, "the words counted by the job", func() bool {
		call("GET", fmt.Sprint("/notes/", created.ID), "", nil, 200, &nt)
		return nt.Words != nil
	})
	if *nt.Words != 4 {
		t.Errorf("words = %d, want 4", *nt.Words)
	}

	// A body over the limit (HAKIT_MAX_BODY_BYTES, 1 MiB) is a 413, not an
	// empty note; an empty note is refused.
	call("POST", "/notes", formType, form("body", strings.Repeat("x", 1<<20)), 413, nil)
	call("POST", "/notes", formType, form("body", " "), 422, nil)
	if n := countNotes(t, pg.DSNs()[0]); n != 1 {
		t.Errorf("%d notes in the database, want 1", n)
	}

	// uploads (MinIO): a PNG streamed in, recorded, served back.
	png := append([]byte("\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR"), bytes.Repeat([]byte{7}, 300<<10)...)
	var mp bytes.Buffer
	mw := multipart.NewWriter(&mp)
	fw, _ := mw.CreateFormFile("file", "cat.png")
	fw.Write(png)
	mw.Close()
	var att struct{ ID int64 }
	call("POST", fmt.Sprint("/notes/", created.ID, "/attachments"), mw.FormDataContentType(), &mp, 201, &att)
	got := call("GET", fmt.Sprint("/attachments/", att.ID), "", nil, 200, nil)
	if !bytes.Equal(got, png) {
		t.Errorf("downloaded %d bytes, not the %d uploaded", len(got), len(png))
	}
	call("GET", "/attachments/999999", "", nil, 404, nil)

	// Only the author sees a note and its files; no file is streamed for
	// a note that is missing or someone else's, nor without a login.
	uploadsBefore := uploadsTotal(t, call)
	call("POST", "/notes/999999/attachments", mw.FormDataContentType(), bytes.NewReader(mp.Bytes()), 404, nil)
	bobJar, _ := cookiejar.New(nil)
	alice := c.Jar
	c.Jar = bobJar
	call("POST", fmt.Sprint("/notes/", created.ID, "/attachments"), mw.FormDataContentType(), bytes.NewReader(mp.Bytes()), 401, nil)
	call("POST", "/login", formType, form("user", "bob"), 200, nil)
	call("GET", fmt.Sprint("/notes/", created.ID), "", nil, 404, nil)
	call("GET", fmt.Sprint("/attachments/", att.ID), "", nil, 404, nil)
	call("POST", fmt.Sprint("/notes/", created.ID, "/attachments"), mw.FormDataContentType(), bytes.NewReader(mp.Bytes()), 404, nil)
	c.Jar = alice
	if after := uploadsTotal(t, call); after != uploadsBefore {
		t.Errorf("hakit_uploads_total went from %v to %v: a file was received for a note it was refused for", uploadsBefore, after)
	}
	if n, err := countObjects(mio, "attachments/"); err != nil || n != 1 {
		t.Errorf("objects under attachments/: %d, %v; want 1", n, err)
	}

	// The session kept the last note across requests.
	call("GET", "/me", "", nil, 200, &me)
	if me.LastNote != created.ID {
		t.Errorf("/me = %+v, want last_note %d", me, created.ID)
	}

	// Every wired part is checked and measured.
	var health struct {
		Checks map[string][]struct{ Status string } `json:"checks"`
	}
	call("GET", "/readyz?verbose", "", nil, 200, &health)
	for _, name := range []string{"postgres:primary", "redis", "s3:attachments", "sessions"} {
		if cs := health.Checks[name+":responseTime"]; len(cs) == 0 || cs[0].Status != "pass" {
			t.Errorf("readiness check %s: %+v", name, cs)
		}
	}
	metrics := string(call("GET", "/metrics", "", nil, 200, nil))
	for _, m := range []string{"hakit_session_saves_total", "hakit_jobs_enqueued_total", "hakit_jobs_relay_",
		"hakit_jobs_processed_total", "hakit_uploads_total", "hakit_dbrouter_"} {
		if !strings.Contains(metrics, m) {
			t.Errorf("/metrics has no %s", m)
		}
	}

	// SIGTERM: a clean exit, components stopped in reverse order, Redis
	// closed last.
	if err := p.Terminate(); err != nil {
		t.Fatal(err)
	}
	if code, _ := waitExit(t, p, 30*time.Second); code != 0 {
		t.Fatalf("exit code %d after SIGTERM", code)
	}
	var stopped []string
	closedAt, stoppedLast := -1, -1
	for i, line := range strings.Split(strings.TrimSpace(p.Output()), "\n") {
		var rec struct {
			Msg       string `json:"msg"`
			Component string `json:"component"`
		}
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			// go-redis logs Sentinel notices through its process-wide
			// logger (redis.SetLogger), which an App does not take over.
			if !strings.HasPrefix(line, "redis: ") {
				t.Errorf("a log line not from the app's logger: %q", line)
			}
			continue
		}
		switch rec.Msg {
		case "hakit: component stopped":
			stopped, stoppedLast = append(stopped, rec.Component), i
		case "hakit: redis client closed":
			closedAt = i
		}
	}
	want := []string{"uploads:attachments", "jobs:scheduler", "jobs:relay", "jobs:worker", "database"}
	if !slices.Equal(stopped, want) {
		t.Errorf("components stopped: %q, want %q", stopped, want)
	}
	if closedAt < 0 || closedAt < stoppedLast {
		t.Errorf("the Redis client closed at log line %d, the last component stopped at %d: want it after", closedAt, stoppedLast)
	}
}

// countNotes counts the rows of the notes table on the primary at dsn.
func countNotes(t *testing.T, dsn string) int {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var n int
	if err := conn.QueryRow(ctx, "SELECT count(*) FROM notes").Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// uploadsTotal sums the app's hakit_uploads_total, every outcome.
func uploadsTotal(t *testing.T, call func(method, path, contentType string, body io.Reader, want int, into any) []byte) float64 {
	t.Helper()
	var sum float64
	for _, line := range strings.Split(string(call("GET", "/metrics", "", nil, 200, nil)), "\n") {
		if strings.HasPrefix(line, "hakit_uploads_total{") {
			var v float64
			if _, err := fmt.Sscan(line[strings.LastIndexByte(line, ' ')+1:], &v); err != nil {
				t.Fatalf("%q: %v", line, err)
			}
			sum += v
		}
	}
	return sum
}

// countObjects counts the objects under prefix in the MinIO bucket.
func countObjects(m *hatest.MinIO, prefix string) (int, error) {
	out, err := m.S3Client().ListObjectsV2(context.Background(), &s3.ListObjectsV2Input{Bucket: &m.Bucket, Prefix: &prefix})
	if err != nil {
		return 0, err
	}
	return len(out.Contents), nil
}

// The main of docs/getting-started.md is the test app, byte for byte: the
// doc's program is built and run by TestFullApp.
func TestGettingStartedIsTheFullApp(t *testing.T) {
	t.Parallel()
	doc, err := os.ReadFile("../docs/getting-started.md")
	if err != nil {
		t.Fatal(err)
	}
	src, err := os.ReadFile("internal/fullapp/main.go")
	if err != nil {
		t.Fatal(err)
	}
	sql, err := os.ReadFile("internal/fullapp/migrations/001_notes.up.sql")
	if err != nil {
		t.Fatal(err)
	}
	blocks := regexp.MustCompile("(?s)```(go|sql)\n(.*?)```").FindAllSubmatch(doc, -1)
	var goOK, sqlOK bool
	for _, b := range blocks {
		goOK = goOK || string(b[1]) == "go" && bytes.Equal(b[2], src)
		sqlOK = sqlOK || string(b[1]) == "sql" && bytes.Equal(b[2], sql)
	}
	if !goOK {
		t.Error("docs/getting-started.md has no ```go block equal to hakit/internal/fullapp/main.go: copy it over")
	}
	if !sqlOK {
		t.Error("docs/getting-started.md has no ```sql block equal to hakit/internal/fullapp/migrations/001_notes.up.sql")
	}
}
