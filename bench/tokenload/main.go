// Command tokenload reads tokens from concurrent workers for a fixed time
// and prints one JSON line (bench/internal/loadrun): reads per second,
// latency percentiles and, when asked, the CPU named processes spent per
// read. bench/tokenapi.sh runs it two ways in alternating rounds:
//
//   - -api: credgate's token API, GET /api/internal/credentials/{user}/{platform}/token
//     with the service token, over keep-alive connections;
//   - -select: the floor the token API is compared with, a prepared SELECT
//     of the same row (the sealed blob and what the answer carries) over a
//     pool of -c connections: what reading a stored token costs with no
//     HTTP, no decryption and no checks.
//
// Both cycle through the same users, the first -users accounts of the
// platform with a sealed token, each worker from its own offset.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"time"

	"github.com/credgate/credgate/bench/internal/loadrun"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

func main() {
	dbURL := flag.String("database-url", "", "the database whose accounts are read (required: it lists the users)")
	platform := flag.String("platform", "twitter", "the platform whose tokens are read")
	users := flag.Int("users", 1000, "how many accounts to cycle through")
	api := flag.String("api", "", "read through credgate's token API at this base URL")
	serviceToken := flag.String("service-token", "", "with -api: the service token")
	floor := flag.Bool("select", false, "read with a prepared SELECT of the same rows instead (the floor)")
	conc := flag.Int("c", 8, "concurrent readers")
	dur := flag.Duration("d", 10*time.Second, "how long to measure")
	cpu := flag.String("cpu", "", "processes whose CPU to report per read: name=pid,… (pid may be a pid file); name=postgres sums every process named postgres")
	label := flag.String("label", "", "a label copied into the output")
	summarize := flag.String("summarize", "", "instead of measuring: summarize this file of result lines")
	baseline := flag.String("baseline", "", "with -summarize: the label the others are compared with")
	flag.Parse()

	if *summarize != "" {
		if err := loadrun.SummarizeFile(*summarize, *baseline, os.Stdout); err != nil {
			fail(err)
		}
		return
	}
	if *dbURL == "" || (*api == "") == !*floor {
		fmt.Fprintln(os.Stderr, "tokenload: need -database-url and one of -api or -select")
		os.Exit(2)
	}
	ctx := context.Background()
	cfg, err := pgxpool.ParseConfig(*dbURL)
	if err != nil {
		fail(err)
	}
	cfg.MaxConns, cfg.MinConns = int32(*conc), int32(*conc)
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		fail(err)
	}
	defer pool.Close()
	ids, err := listUsers(ctx, pool, *platform, *users)
	if err != nil {
		fail(err)
	}
	meters, err := loadrun.ParseCPU(*cpu)
	if err != nil {
		fail(err)
	}

	// Each worker takes the next user of its own stride, so the readers
	// spread over the accounts instead of all reading one row.
	next := make(chan string, *conc)
	go func() {
		for i := 0; ; i++ {
			next <- ids[i%len(ids)]
		}
	}()
	var read func() error
	if *floor {
		read = func() error { return selectRow(ctx, pool, <-next, *platform) }
	} else {
		pool.Close() // the API reads through credgate's own pool
		client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: *conc, MaxConnsPerHost: *conc}, Timeout: 10 * time.Second}
		read = func() error { return readAPI(client, *api, *serviceToken, <-next, *platform) }
	}
	// One read that must work before anything is measured.
	if err := read(); err != nil {
		fail(fmt.Errorf("warm-up read: %w", err))
	}
	res := loadrun.Measure(read, *conc, *dur, 0, meters)
	res.Label, res.Unit = *label, "reads"
	if err := json.NewEncoder(os.Stdout).Encode(res); err != nil {
		fail(err)
	}
	if res.Flows == 0 {
		os.Exit(1)
	}
}

func listUsers(ctx context.Context, pool *pgxpool.Pool, platform string, n int) ([]string, error) {
	rows, err := pool.Query(ctx, `SELECT user_id::text FROM social_accounts
		WHERE platform = $1 AND credentials_encrypted IS NOT NULL ORDER BY user_id LIMIT $2`, platform, n)
	if err != nil {
		return nil, err
	}
	ids, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err == nil && len(ids) == 0 {
		err = errors.New("no account of " + platform + " holds a sealed token: connect some first")
	}
	return ids, err
}

// selectRow is the floor: the row the token API reads, by the same key,
// as a prepared statement (pgx prepares and caches it per connection).
func selectRow(ctx context.Context, pool *pgxpool.Pool, user, platform string) error {
	var blob []byte
	var expires *time.Time
	var platformUser *string
	var scopes []string
	return pool.QueryRow(ctx, `SELECT credentials_encrypted, expires_at, platform_user_id, scopes
		FROM social_accounts WHERE user_id = $1 AND platform = $2`, user, platform).Scan(&blob, &expires, &platformUser, &scopes)
}

func readAPI(c *http.Client, base, token, user, platform string) error {
	req, err := http.NewRequest(http.MethodGet, base+"/api/internal/credentials/"+user+"/"+platform+"/token", nil)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := c.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	head, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("status %d: %q", resp.StatusCode, head)
	}
	return nil
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "tokenload:", err)
	os.Exit(1)
}
