package session_test

import (
	"context"

	"github.com/jackc/pgx/v5/pgxpool"
)

// poolHolder gives a fixed pool as the store's primary.
type poolHolder struct{ p *pgxpool.Pool }

func (h poolHolder) primary() (*pgxpool.Pool, error) { return h.p, nil }
func (h poolHolder) Close()                          { h.p.Close() }

func pgxpoolNew(ctx context.Context, dsn string) (poolHolder, error) {
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		return poolHolder{}, err
	}
	cfg.ConnConfig.ConnectTimeout = 2e9
	p, err := pgxpool.NewWithConfig(ctx, cfg)
	return poolHolder{p}, err
}
