package hatest_test

import (
	"context"
	"fmt"

	"github.com/redis/go-redis/v9"

	"hakit.dev/hatest"
)

// Start a real Redis outside a test (in a test, use NewRedis, which stops
// it for you), then use it with any client.
func Example() {
	ctx := context.Background()
	r, err := hatest.StartRedis(ctx, hatest.RedisOptions{})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer r.Close()

	rdb := redis.NewClient(&redis.Options{Addr: r.Addr()})
	defer rdb.Close()
	if err := rdb.Set(ctx, "greeting", "hello", 0).Err(); err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(rdb.Get(ctx, "greeting").Val())
	// Output: hello
}
