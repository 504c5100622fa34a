package vault

import (
	"cmp"
	"context"
	"fmt"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/credgate/credgate/internal/flushloop"
)

// The app's back end reads tokens through credgate (the token API,
// egress) hundreds of times a second; a row per read made the audit log
// grow by gigabytes a day. ReadAudit counts the reads in memory and
// writes one row per account, caller and outcome per window, with the
// count in credential_audit_log.events (migration 007). Reads for user
// ids that have no account at all are not attributed: they are summed
// into one row per platform, caller and outcome with user_id NULL, so a
// client asking for random ids cannot grow the log by a row per id. The
// same rule keeps a user's id out of the log once `caddy credgate
// erase-user` has deleted their accounts: counts still held by a replica
// are written without it.

// DefaultReadWindow is how long token reads are counted before their
// row is written.
const DefaultReadWindow = time.Minute

// maxReadKeys bounds what one window holds in memory: past it, a read
// whose key is new is counted without its user id (the row says how
// many were). At one key per account, caller and outcome, it is more
// than 1,600 distinct accounts a second with the default window.
const maxReadKeys = 100_000

// TokenRead is one read of a user's token by the app's back end.
type TokenRead struct {
	UserID   string
	Platform string
	// Via is the way the back end read it: ViaTokenAPI or ViaEgress.
	Via string
	// Status and ErrorCode are the answer's outcome (ErrorCode empty on
	// success).
	Status    Outcome
	ErrorCode string
	// Source is where the token came from (credentials_encrypted,
	// legacy_plaintext), when known.
	Source string
	// Refreshed: the read renewed the token first. RenewalFailed: it
	// tried, failed for a reason that may pass, and served the token it
	// had.
	Refreshed, RenewalFailed bool
}

// tokenReadKey is what one row of a window stands for.
type tokenReadKey struct {
	user, platform, via, status, code, source string
}

type tokenReadCount struct {
	events, refreshed, renewalFailed int64
	// unattributed: reads counted without their user id because the
	// window was full.
	unattributed int64
	first, last  time.Time
}

// ReadAudit counts token reads until Flush. The zero value is ready.
type ReadAudit struct {
	// Window is how often Run flushes, recorded in each row (window_s);
	// default DefaultReadWindow.
	Window time.Duration

	mu     sync.Mutex
	counts map[tokenReadKey]*tokenReadCount
}

// Count records one read.
func (a *ReadAudit) Count(r TokenRead) {
	now := time.Now()
	k := tokenReadKey{r.UserID, r.Platform, r.Via, string(r.Status), r.ErrorCode, r.Source}
	if k.status == "" {
		k.status = string(Success)
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.counts == nil {
		a.counts = map[tokenReadKey]*tokenReadCount{}
	}
	c := a.counts[k]
	unattributed := false
	if c == nil && len(a.counts) >= maxReadKeys && k.user != "" {
		k.user, unattributed = "", true
		c = a.counts[k]
	}
	if c == nil {
		c = &tokenReadCount{first: now}
		a.counts[k] = c
	}
	c.events++
	c.last = now
	if r.Refreshed {
		c.refreshed++
	}
	if r.RenewalFailed {
		c.renewalFailed++
	}
	if unattributed {
		c.unattributed++
	}
}

// readAuditInsert writes one row per key, or, for keys whose user has no
// account at all, one row per platform, caller and outcome (user_id NULL,
// details.users the distinct ids). The account check takes KEY SHARE on
// the user's rows: an erasure that deletes them waits for this insert and
// then strips what it wrote, or has committed and the row is written
// without the id. Every parameter is typed, for transaction poolers.
const readAuditInsert = `WITH r AS (
		SELECT u.*, CASE WHEN EXISTS (SELECT 1 FROM social_accounts a
				WHERE a.user_id = nullif(u.user_id, '')::uuid FOR KEY SHARE) THEN u.user_id::uuid END AS subject
		FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[],
		            $7::bigint[], $8::bigint[], $9::bigint[], $10::bigint[], $11::timestamptz[], $12::timestamptz[])
			AS u(user_id, platform, via, status, error_code, source, events, refreshed, renewal_failed, unattributed, first_at, last_at))
	INSERT INTO credential_audit_log (user_id, platform, action, status, error_code, details, events)
	SELECT subject, platform, $13::text, status, nullif(error_code, ''),
		jsonb_strip_nulls(jsonb_build_object(
			'via', via, 'source', nullif(source, ''), 'window_s', $14::integer,
			'first_at', min(first_at), 'last_at', max(last_at),
			'refreshed', nullif(sum(refreshed), 0), 'renewal_failed', nullif(sum(renewal_failed), 0),
			'users', CASE WHEN subject IS NULL THEN count(DISTINCT nullif(user_id, '')) END,
			'unattributed', nullif(sum(unattributed), 0))),
		sum(events)::integer
	FROM r
	GROUP BY subject, platform, via, status, error_code, source`

// Flush writes the reads counted since the last flush, in one
// statement. On failure the counts are kept for the next flush.
func (a *ReadAudit) Flush(ctx context.Context, db DB) error {
	a.mu.Lock()
	counts := a.counts
	a.counts = nil
	a.mu.Unlock()
	if len(counts) == 0 {
		return nil
	}
	// A fixed order, so that replicas flushing at once lock alike.
	keys := slices.SortedFunc(maps.Keys(counts), func(x, y tokenReadKey) int {
		return cmp.Or(cmp.Compare(x.user, y.user), cmp.Compare(x.platform, y.platform), cmp.Compare(x.via, y.via),
			cmp.Compare(x.status, y.status), cmp.Compare(x.code, y.code), cmp.Compare(x.source, y.source))
	})
	// One statement, so that the reads of ids with no account become one
	// row however many ids there were (at most maxReadKeys, a few MB).
	_, err := db.Exec(ctx, readAuditInsert, readArgs(keys, counts, a.window())...)
	if err != nil {
		a.restore(counts)
		return fmt.Errorf("writing token read audit rows: %w", err)
	}
	return nil
}

// readArgs are readAuditInsert's parameters for keys.
func readArgs(keys []tokenReadKey, counts map[tokenReadKey]*tokenReadCount, window time.Duration) []any {
	n := len(keys)
	users, platforms, vias, statuses, codes, sources := make([]string, n), make([]string, n), make([]string, n),
		make([]string, n), make([]string, n), make([]string, n)
	events, refreshed, failed, unattributed := make([]int64, n), make([]int64, n), make([]int64, n), make([]int64, n)
	first, last := make([]time.Time, n), make([]time.Time, n)
	for i, k := range keys {
		c := counts[k]
		users[i], platforms[i], vias[i], statuses[i], codes[i], sources[i] = k.user, k.platform, k.via, k.status, k.code, k.source
		events[i], refreshed[i], failed[i], unattributed[i] = c.events, c.refreshed, c.renewalFailed, c.unattributed
		first[i], last[i] = c.first, c.last
	}
	return []any{users, platforms, vias, statuses, codes, sources, events, refreshed, failed, unattributed, first, last,
		string(ActionTokenRead), int(window.Round(time.Second) / time.Second)}
}

// restore adds counts that could not be written back to the current
// window, within the same bound as Count: while the database does not
// take them, a key beyond maxReadKeys keeps its count without its user.
func (a *ReadAudit) restore(counts map[tokenReadKey]*tokenReadCount) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.counts == nil {
		a.counts = counts
		return
	}
	for k, c := range counts {
		cur := a.counts[k]
		if cur == nil && len(a.counts) >= maxReadKeys && k.user != "" {
			k.user = ""
			c.unattributed = c.events
			cur = a.counts[k]
		}
		if cur == nil {
			a.counts[k] = c
			continue
		}
		cur.events += c.events
		cur.refreshed += c.refreshed
		cur.renewalFailed += c.renewalFailed
		cur.unattributed += c.unattributed
		if c.first.Before(cur.first) {
			cur.first = c.first
		}
		if c.last.After(cur.last) {
			cur.last = c.last
		}
	}
}

// Run flushes every Window (DefaultReadWindow when unset) until ctx
// ends, and once more then; failed reports each failed flush (its counts
// are kept for the next).
func (a *ReadAudit) Run(ctx context.Context, db DB, failed func(error)) {
	flushloop.Run(ctx, a.window(), 5*time.Second, func(ctx context.Context) error {
		err := a.Flush(ctx, db)
		if err != nil && failed != nil {
			failed(err)
		}
		return err
	})
}

// window is Window, or DefaultReadWindow when unset.
func (a *ReadAudit) window() time.Duration {
	if a.Window <= 0 {
		return DefaultReadWindow
	}
	return a.Window
}
