package hatest_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"hakit.dev/hatest"
)

func TestMissingBinariesNameThePackage(t *testing.T) {
	t.Setenv("PATH", t.TempDir())
	t.Setenv(hatest.EnvPostgresBin, t.TempDir())
	t.Setenv("GOPATH", t.TempDir())
	t.Setenv("HOME", t.TempDir())
	ctx := context.Background()
	cases := []struct {
		name  string
		start func() error
		pkg   string
	}{
		{"postgres", func() error { _, err := hatest.StartPostgres(ctx, hatest.PostgresOptions{}); return err }, "postgresql-15"},
		{"patroni", func() error { _, err := hatest.StartPatroni(ctx, hatest.PatroniOptions{}); return err }, "patroni"},
		{"minio", func() error { _, err := hatest.StartMinIO(ctx, hatest.MinIOOptions{}); return err }, "go install github.com/minio/minio@latest"},
	}
	for _, c := range cases {
		err := c.start()
		var missing *hatest.MissingBinaryError
		if !errors.As(err, &missing) {
			t.Errorf("%s: err = %v; want a MissingBinaryError", c.name, err)
			continue
		}
		if !strings.Contains(err.Error(), c.pkg) {
			t.Errorf("%s: %q does not name %q", c.name, err, c.pkg)
		}
	}
}

func TestServiceThatDoesNotComeUpShowsItsLog(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	_, err := hatest.StartRedis(ctx, hatest.RedisOptions{Settings: map[string]string{"no-such-directive": "1"}})
	if err == nil {
		t.Fatal("Redis with a bad directive started")
	}
	if !strings.Contains(err.Error(), "exited before it was ready") || !strings.Contains(err.Error(), "no-such-directive") {
		t.Errorf("Redis error does not say it exited and show the log line:\n%v", err)
	}

	_, err = hatest.StartPostgres(ctx, hatest.PostgresOptions{Settings: map[string]string{"shared_buffers": "'lots'"}})
	if err == nil {
		t.Fatal("PostgreSQL with a bad setting started")
	}
	if !strings.Contains(err.Error(), `invalid value for parameter "shared_buffers"`) {
		t.Errorf("PostgreSQL error does not show the log line:\n%v", err)
	}

	if _, err := hatest.StartPostgres(ctx, hatest.PostgresOptions{Replicas: -1}); err == nil {
		t.Error("negative replicas accepted")
	}
	if _, err := hatest.StartRedis(ctx, hatest.RedisOptions{Sentinels: -1}); err == nil {
		t.Error("negative Sentinels accepted")
	}
	if _, err := hatest.StartMinIO(ctx, hatest.MinIOOptions{SecretKey: "short"}); err == nil {
		t.Error("a 5-character MinIO secret accepted")
	}
}
