package vault

import (
	"context"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/credgate/credgate/internal/dberr"
	"github.com/credgate/credgate/internal/pgurl"
)

// OpenPool opens a pool and checks that the server answers.
func OpenPool(ctx context.Context, databaseURL string) (*pgxpool.Pool, error) {
	cfg, err := pgurl.Parse(databaseURL)
	if err != nil {
		return nil, err
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, dberr.Explain("opening database pool", err)
	}
	if err := pool.Ping(ctx); err != nil {
		pool.Close()
		return nil, dberr.Explain("connecting to database \""+cfg.ConnConfig.Database+"\"", err)
	}
	return pool, nil
}
