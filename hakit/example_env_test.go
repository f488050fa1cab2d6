package hakit_test

import (
	"errors"
	"fmt"
	"time"

	"hakit.dev/hakit"
)

// An app reads its own variables with the Env that reads hakit's, so a
// bad SHOP_* value is reported with the HAKIT_* ones, all at once.
func ExampleEnv() {
	environment := map[string]string{ // os.Getenv in a real main: hakit.NewEnv(nil)
		"HAKIT_REDIS_URL":   "redis://127.0.0.1:6379",
		"HAKIT_REDIS_TLS":   "maybe",
		"HAKIT_S3_ENDPOINT": "minio:9000",
		"SHOP_PER_PAGE":     "0",
		"SHOP_CART_TTL":     "1 day",
	}
	env := hakit.NewEnv(func(k string) string { return environment[k] })
	cfg := env.Config()
	perPage := env.Int("SHOP_PER_PAGE", 20, "products per page")
	cartTTL := env.Duration("SHOP_CART_TTL", 24*time.Hour, "how long a cart is kept")
	if perPage < 1 {
		env.Invalid("SHOP_PER_PAGE", errors.New("want at least 1"))
	}
	fmt.Println(cfg.Redis.URL, cartTTL)
	fmt.Println(env.Err())
	// Output:
	// redis://127.0.0.1:6379 24h0m0s
	// hakit: bad environment: HAKIT_REDIS_TLS="maybe": want true or false
	// HAKIT_S3_ENDPOINT=(value hidden): want an http:// or https:// URL
	// S3 settings without HAKIT_S3_BUCKET: set it too
	// SHOP_CART_TTL="1 day": want a duration such as 5s or 500ms
	// SHOP_PER_PAGE="0": want at least 1
}
