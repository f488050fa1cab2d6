package jobs_test

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/redis/go-redis/v9"

	"hakit.dev/dbrouter"
	"hakit.dev/hatest"
	"hakit.dev/jobs"
)

type welcomeMail struct {
	UserID int64  `json:"user_id"`
	Email  string `json:"email"`
}

// A sign-up writes the user and the welcome mail task in one transaction:
// no mail for a sign-up that rolled back, no sign-up without its mail.
func Example() {
	ctx := context.Background()
	pg, err := hatest.StartPostgres(ctx, hatest.PostgresOptions{})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer pg.Close()
	rd, err := hatest.StartRedis(ctx, hatest.RedisOptions{})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer rd.Close()
	db, err := dbrouter.New(ctx, dbrouter.Config{Nodes: pg.DSNs(), Logger: quiet()})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer db.Close()
	rdb := redis.NewClient(&redis.Options{Addr: rd.Addr()})
	defer rdb.Close()

	outbox := jobs.NewOutbox("")
	if err := outbox.CreateTables(ctx, db); err != nil { // hakit.App needs no call: it applies jobs.Migrations()
		fmt.Println(err)
		return
	}
	// One Redis server, no replica; the app's queues in a namespace of
	// their own (with hakit.App: HAKIT_JOBS_NAMESPACE).
	client := jobs.NewClient(rdb, jobs.ClientConfig{Namespace: "signup", NoReplicas: true, Logger: quiet()})
	defer client.Close()
	relay, _ := jobs.NewRelay(jobs.RelayConfig{DB: db, Client: client, Outbox: outbox, Logger: quiet()})
	worker := jobs.NewWorker(rdb, jobs.WorkerConfig{Namespace: "signup", Logger: quiet()})
	sent := make(chan string, 1)
	jobs.Handle(worker, "mail:welcome", func(ctx context.Context, m welcomeMail) error {
		sent <- m.Email
		return nil
	})
	for _, c := range []interface{ Start(context.Context) error }{relay, worker} {
		if err := c.Start(ctx); err != nil {
			fmt.Println(err)
			return
		}
	}
	defer relay.Stop(ctx)
	defer worker.Stop(ctx)

	err = db.Write(ctx, func(tx pgx.Tx) error {
		// … INSERT INTO users …
		_, err := outbox.EnqueueTx(ctx, tx, "mail:welcome", welcomeMail{UserID: 7, Email: "ann@example.com"}, jobs.Options{})
		return err
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	select {
	case email := <-sent:
		fmt.Println("welcome mail to", email)
	case <-time.After(10 * time.Second):
		fmt.Println("no mail")
	}
	// Output: welcome mail to ann@example.com
}
