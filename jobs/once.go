package jobs

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"
)

// OnceSchema creates the table Once records keys in, hakit_jobs_once, if
// it does not exist. hakit.App creates it with [Migrations]; OnceSchema
// is for apps that create tables their own way ([Outbox.Schema] includes
// it).
const OnceSchema = `CREATE TABLE IF NOT EXISTS hakit_jobs_once (
	key     text PRIMARY KEY,
	done_at timestamptz NOT NULL DEFAULT now()
);
`

// Once records key in tx and reports whether it is the first time: the
// building block of an idempotent handler. Tasks are delivered at least
// once (a worker that dies mid-run leaves its task to run again), so a
// handler whose effect must happen once does it in the same transaction:
//
//	err := db.Write(ctx, func(tx pgx.Tx) error {
//		first, err := jobs.Once(ctx, tx, "order-mail:"+orderID)
//		if err != nil || !first {
//			return err // already done
//		}
//		return markMailSent(ctx, tx, orderID) // …and send it after commit
//	})
//
// If tx rolls back, the key is not recorded. Old keys can be deleted from
// hakit_jobs_once once a task with them can no longer be redelivered.
func Once(ctx context.Context, tx pgx.Tx, key string) (bool, error) {
	tag, err := tx.Exec(ctx, `INSERT INTO hakit_jobs_once (key) VALUES ($1) ON CONFLICT (key) DO NOTHING`, key)
	if err != nil {
		return false, fmt.Errorf("jobs: once %q: %w", key, err)
	}
	return tag.RowsAffected() == 1, nil
}
