package hakit_test

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"log/slog"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"hakit.dev/hakit"
)

// Every new variable with a bad value, and the app's own bad variables,
// are listed in one error, each by name, in a stable order; the password
// in a bad Redis URL is not.
func TestEnvEveryBadVariableInOneError(t *testing.T) {
	t.Parallel()
	bad := map[string]string{
		"HAKIT_REDIS_URL":         "redis://user:s3kr1t@host:port:6379",
		"HAKIT_REDIS_SENTINELS":   "10.0.0.1,10.0.0.2:26379",
		"HAKIT_REDIS_CLUSTER":     "10.0.0.3:6379",
		"HAKIT_REDIS_TLS":         "maybe",
		"HAKIT_REDIS_NO_REPLICAS": "sometimes",
		"HAKIT_S3_ENDPOINT":       "ftp://minio:9000",
		"HAKIT_S3_BUCKET":         "media/uploads",
		"HAKIT_S3_ACCESS_KEY_ID":  "AKIA",
		"HAKIT_S3_PATH_STYLE":     "perhaps",
		"HAKIT_DRAIN_DELAY":       "soon", // an old one, in the same list
		"SHOP_PER_PAGE":           "many",
		"SHOP_DEBUG":              "yes please",
		"SHOP_CART_TTL":           "1 day",
		"SHOP_THEME":              "purple",
	}
	read := func() error {
		env := hakit.NewEnv(envOf(bad))
		env.Config()
		env.Int("SHOP_PER_PAGE", 20, "products per page")
		env.Bool("SHOP_DEBUG", false, "debug pages")
		env.Duration("SHOP_CART_TTL", time.Hour, "how long a cart is kept")
		env.Required("SHOP_SECRET", "the key that signs download links")
		if theme := env.String("SHOP_THEME", "light", "light or dark"); theme != "light" && theme != "dark" {
			env.Invalid("SHOP_THEME", fmt.Errorf("want light or dark"))
		}
		return env.Err()
	}
	err := read()
	if err == nil {
		t.Fatal("no error")
	}
	msg := err.Error()
	t.Log(msg)
	for _, name := range []string{
		"HAKIT_REDIS_URL", "HAKIT_REDIS_SENTINELS", "HAKIT_REDIS_MASTER", "HAKIT_REDIS_CLUSTER", "HAKIT_REDIS_TLS",
		"HAKIT_REDIS_NO_REPLICAS", "HAKIT_S3_ENDPOINT", "HAKIT_S3_BUCKET", "HAKIT_S3_ACCESS_KEY_ID", "HAKIT_S3_SECRET_ACCESS_KEY",
		"HAKIT_S3_PATH_STYLE", "HAKIT_DRAIN_DELAY", "SHOP_PER_PAGE", "SHOP_DEBUG", "SHOP_CART_TTL", "SHOP_SECRET", "SHOP_THEME",
	} {
		if !regexp.MustCompile(`\b` + name + `\b`).MatchString(msg) {
			t.Errorf("the error does not name %s", name)
		}
	}
	if strings.Contains(msg, "s3kr1t") {
		t.Errorf("the error shows the Redis password: %s", msg)
	}
	if !strings.HasPrefix(msg, "hakit: bad environment: ") {
		t.Errorf("the error does not start with hakit: bad environment: %q", msg)
	}
	if again := read(); again.Error() != msg {
		t.Errorf("a second read lists them otherwise:\n%s\n%s", again, msg)
	}
	// The HAKIT_* problems come first, in the order of the table, then
	// the app's, in the order read.
	if i, j := strings.Index(msg, "HAKIT_DRAIN_DELAY"), strings.Index(msg, "HAKIT_REDIS_TLS"); i > j {
		t.Errorf("HAKIT_DRAIN_DELAY after HAKIT_REDIS_TLS")
	}
	if i, j := strings.Index(msg, "HAKIT_S3_PATH_STYLE"), strings.Index(msg, "SHOP_PER_PAGE"); i > j {
		t.Errorf("an app variable before a HAKIT_* one")
	}
}

// A good environment fills Config.Redis and Config.S3; the app's getters
// return their values, or their defaults when unset.
func TestEnvConfigReadsRedisAndS3(t *testing.T) {
	t.Parallel()
	env := hakit.NewEnv(envOf(map[string]string{
		"HAKIT_REDIS_SENTINELS":         " 10.0.0.1:26379, 10.0.0.2:26379 ,",
		"HAKIT_REDIS_MASTER":            "main",
		"HAKIT_REDIS_USERNAME":          "app",
		"HAKIT_REDIS_PASSWORD":          "pw",
		"HAKIT_REDIS_SENTINEL_PASSWORD": "spw",
		"HAKIT_REDIS_TLS":               "true",
		"HAKIT_REDIS_NO_REPLICAS":       "false",
		"HAKIT_S3_ENDPOINT":             "http://127.0.0.1:9000",
		"HAKIT_S3_REGION":               "eu-west-1",
		"HAKIT_S3_BUCKET":               "media",
		"HAKIT_S3_ACCESS_KEY_ID":        "id",
		"HAKIT_S3_SECRET_ACCESS_KEY":    "secret",
		"HAKIT_S3_PATH_STYLE":           "1",
		"HAKIT_S3_PREFIX":               "uploads/",
		"SHOP_PER_PAGE":                 "50",
		"SHOP_ADMINS":                   "ann, bob",
	}))
	cfg := env.Config()
	perPage := env.Int("SHOP_PER_PAGE", 20, "products per page")
	ttl := env.Duration("SHOP_CART_TTL", time.Hour, "how long a cart is kept")
	admins := env.List("SHOP_ADMINS", nil, "admin user ids")
	debug := env.Bool("SHOP_DEBUG", true, "debug pages")
	if err := env.Err(); err != nil {
		t.Fatal(err)
	}
	wantRedis := hakit.RedisConfig{SentinelAddrs: []string{"10.0.0.1:26379", "10.0.0.2:26379"}, MasterName: "main",
		Username: "app", Password: "pw", SentinelPassword: "spw", TLS: true}
	if fmt.Sprintf("%+v", cfg.Redis) != fmt.Sprintf("%+v", wantRedis) {
		t.Errorf("Redis = %+v\nwant    %+v", cfg.Redis, wantRedis)
	}
	wantS3 := hakit.S3Config{Endpoint: "http://127.0.0.1:9000", Region: "eu-west-1", Bucket: "media", AccessKeyID: "id",
		SecretAccessKey: "secret", PathStyle: true, Prefix: "uploads/"}
	if cfg.S3 != wantS3 {
		t.Errorf("S3 = %+v\nwant %+v", cfg.S3, wantS3)
	}
	if perPage != 50 || ttl != time.Hour || !slices.Equal(admins, []string{"ann", "bob"}) || !debug {
		t.Errorf("app values: %d %s %q %v", perPage, ttl, admins, debug)
	}
}

// Vars lists hakit's variables (EnvVars, with their fields) and then the
// app's, each once; docs/configuration.md has a row for each of hakit's.
func TestEnvVarsDocumentEveryVariable(t *testing.T) {
	t.Parallel()
	env := hakit.NewEnv(envOf(map[string]string{"HAKIT_DATABASE_URL_1": "postgres://a", "HAKIT_DATABASE_URL_2": "postgres://b"}))
	env.Config()
	env.String("SHOP_TITLE", "Shop", "the site's name")
	env.String("SHOP_TITLE", "Shop", "the site's name")
	var names []string
	for _, v := range env.Vars() {
		names = append(names, v.Name)
	}
	var want []string
	for _, v := range hakit.EnvVars() {
		want = append(want, v.Name)
	}
	want = append(want, "SHOP_TITLE")
	slices.Sort(names[:len(names)-1])
	slices.Sort(want[:len(want)-1])
	if !slices.Equal(names, want) {
		t.Errorf("Vars = %q\nwant %q", names, want)
	}
	if last := env.Vars()[len(env.Vars())-1]; last != (hakit.EnvVar{Name: "SHOP_TITLE", Default: "Shop", Help: "the site's name"}) {
		t.Errorf("the app's variable: %+v", last)
	}
	doc, err := os.ReadFile("../docs/configuration.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range hakit.EnvVars() {
		if !strings.Contains(string(doc), "| `"+v.Name+"` | `"+v.Field+"` |") {
			t.Errorf("docs/configuration.md has no row for %s (%s)", v.Name, v.Field)
		}
	}
}

// Redis and S3 settings that do not fit together are refused by New too,
// named by field, when the Config is made in code.
func TestConfigRedisAndS3Problems(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		cfg  hakit.Config
		want []string
	}{
		{hakit.Config{Redis: hakit.RedisConfig{URL: "redis://h:1", SentinelAddrs: []string{"h:2"}}},
			[]string{"Redis.URL, Redis.SentinelAddrs and Redis.ClusterAddrs are exclusive", "Redis.SentinelAddrs needs Redis.MasterName"}},
		{hakit.Config{Redis: hakit.RedisConfig{MasterName: "m", Password: "p"}},
			[]string{"Redis.MasterName is set without Redis.SentinelAddrs", "Redis.Password set but no Redis"}},
		{hakit.Config{Redis: hakit.RedisConfig{ClusterAddrs: []string{"h:1", "h"}}},
			[]string{`Redis.ClusterAddrs: entry 2 of 2: want host:port (value hidden)`}},
		{hakit.Config{Redis: hakit.RedisConfig{URL: "http://h:1"}}, []string{"Redis.URL", "invalid URL scheme"}},
		{hakit.Config{Redis: hakit.RedisConfig{URL: "redis://u:pw@cache:port"}}, []string{`Redis.URL=(value hidden): invalid port`}},
		{hakit.Config{S3: hakit.S3Config{Bucket: "b"}}, []string{"S3.Bucket needs S3.AccessKeyID and S3.SecretAccessKey"}},
		{hakit.Config{S3: hakit.S3Config{Prefix: "p/", SecretAccessKey: "s"}},
			[]string{"S3.AccessKeyID and S3.SecretAccessKey go together", "S3 settings without S3.Bucket"}},
		{hakit.Config{S3: hakit.S3Config{Bucket: "b", AccessKeyID: "i", SecretAccessKey: "s", Endpoint: "minio:9000"}},
			[]string{`S3.Endpoint=(value hidden): want an http:// or https:// URL`}},
		// A secret is shown only as part of a well-formed URL, and then
		// with the user information and query values removed.
		{hakit.Config{Redis: hakit.RedisConfig{URL: "s3cretpassword"}}, []string{`Redis.URL=(value hidden): `}},
		{hakit.Config{Redis: hakit.RedisConfig{URL: "redis:s3cretpassword"}}, []string{`Redis.URL=(value hidden): `}},
		{hakit.Config{Redis: hakit.RedisConfig{URL: "redis://u:s3cretpassword@cache:6379/x?password=s3cretpassword"}},
			[]string{`Redis.URL="redis://xxxxx@cache:6379/x?password=xxxxx": redis: invalid database number`}},
		{hakit.Config{Redis: hakit.RedisConfig{SentinelAddrs: []string{"s1:26379", "u:s3cretpassword@s2:26379"}, MasterName: "m"}},
			[]string{`Redis.SentinelAddrs: entry 2 of 2: want host:port (value hidden)`}},
		{hakit.Config{S3: hakit.S3Config{Bucket: "b", AccessKeyID: "i", SecretAccessKey: "s", Endpoint: "ftp://AKIA:s3cretpassword@minio:9000"}},
			[]string{`S3.Endpoint="ftp://xxxxx@minio:9000": want an http:// or https:// URL`}},
	} {
		_, err := hakit.New(context.Background(), tc.cfg)
		for _, w := range tc.want {
			if err == nil || !strings.Contains(err.Error(), w) {
				t.Errorf("%+v: %v; want %q", tc.cfg, err, w)
			}
		}
		if err != nil && strings.Contains(err.Error(), "s3cretpassword") {
			t.Errorf("the error shows the secret: %v", err)
		}
	}
}

// The App makes the client the configuration names, and none without.
func TestAppRedisClientKinds(t *testing.T) {
	t.Parallel()
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	for _, tc := range []struct {
		redis hakit.RedisConfig
		check func(redis.UniversalClient) error
	}{
		{hakit.RedisConfig{}, func(c redis.UniversalClient) error {
			if c != nil {
				return fmt.Errorf("a client without Redis: %T", c)
			}
			return nil
		}},
		{hakit.RedisConfig{URL: "redis://u:p@127.0.0.1:1/3", Password: "q"}, func(c redis.UniversalClient) error {
			o := c.(*redis.Client).Options()
			if o.Addr != "127.0.0.1:1" || o.DB != 3 || o.Username != "u" || o.Password != "q" || o.TLSConfig != nil {
				return fmt.Errorf("options %+v", o)
			}
			return nil
		}},
		{hakit.RedisConfig{URL: "rediss://127.0.0.1:1"}, func(c redis.UniversalClient) error {
			if c.(*redis.Client).Options().TLSConfig == nil {
				return fmt.Errorf("rediss:// without TLS")
			}
			return nil
		}},
		{hakit.RedisConfig{URL: "redis://127.0.0.1:1", TLS: true, TLSConfig: &tls.Config{ServerName: "cache"}}, func(c redis.UniversalClient) error {
			if tc := c.(*redis.Client).Options().TLSConfig; tc == nil || tc.ServerName != "cache" {
				return fmt.Errorf("TLSConfig not used: %+v", tc)
			}
			return nil
		}},
		{hakit.RedisConfig{SentinelAddrs: []string{"127.0.0.1:1"}, MasterName: "main"}, func(c redis.UniversalClient) error {
			if _, ok := c.(*redis.Client); !ok {
				return fmt.Errorf("a Sentinel client is a %T", c)
			}
			return nil
		}},
		{hakit.RedisConfig{ClusterAddrs: []string{"127.0.0.1:1"}, NoReplicas: true}, func(c redis.UniversalClient) error {
			if _, ok := c.(*redis.ClusterClient); !ok {
				return fmt.Errorf("a cluster client is a %T", c)
			}
			return nil
		}},
	} {
		app, err := hakit.New(context.Background(), hakit.Config{Redis: tc.redis, Logger: quiet})
		if err != nil {
			t.Fatalf("%+v: %v", tc.redis, err)
		}
		if err := tc.check(app.Redis()); err != nil {
			t.Errorf("%+v: %v", tc.redis, err)
		}
		if c := app.Redis(); c != nil {
			c.Close()
		}
	}
}
