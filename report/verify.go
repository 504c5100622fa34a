package report

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/credgate/credgate/guard"
	"github.com/credgate/credgate/internal/appschema"
	"github.com/credgate/credgate/migrations"
	"github.com/credgate/credgate/oauth"
	"github.com/credgate/credgate/vault"
)

// Check is one line of the post-migration checklist.
type Check struct {
	Name   string `json:"name"`
	OK     bool   `json:"ok"`
	Detail string `json:"detail"`
	// TooFew: not judged, too few attempts to mean anything (fewer than
	// MinSamples). Not OK, and not a failure either: ⚠.
	TooFew bool `json:"too_few,omitempty"`
}

// VerifyOptions tune Verify.
type VerifyOptions struct {
	// MinSuccessRate is the lowest acceptable connection and refresh
	// success rate per platform. Default 0.95 (the guide's Day 1).
	MinSuccessRate float64
	// Window is how far back success rates and audit activity are
	// read. Default 24h.
	Window time.Duration
	// OverdueGrace: a due refresh job waiting longer is stuck. Default
	// DefaultOverdueGrace (5m), as service-health.
	OverdueGrace time.Duration
	// MinSamples is how many attempts (successes and failures; declines
	// are not attempts the flow can fail) a platform needs in the window
	// before its success rate is judged. Default: the guard's, 50.
	MinSamples int64
	// Platforms are judged each, whether or not they had traffic.
	// Default: the built-in four.
	Platforms []string
	// MaxGap is how far the new flow's success rate may fall below the
	// legacy flow's. Default: the guard's, 0.05.
	MaxGap float64
}

// Verify runs the guide's post-migration verification (Day 1 and Day 3,
// "Success Criteria", the weekly "verify encryption is working") and
// returns one Check per line, in order. keys is the keyring credgate runs
// with; databaseURL is used for the schema inspection.
func Verify(ctx context.Context, db vault.DB, databaseURL string, keys *vault.Keyring, now time.Time, opt VerifyOptions) ([]Check, error) {
	if opt.MinSuccessRate <= 0 {
		opt.MinSuccessRate = 0.95
	}
	if opt.Window <= 0 {
		opt.Window = 24 * time.Hour
	}
	if opt.OverdueGrace <= 0 {
		opt.OverdueGrace = DefaultOverdueGrace
	}
	if opt.MinSamples <= 0 {
		opt.MinSamples = guard.DefaultMinSamples
	}
	if len(opt.Platforms) == 0 {
		opt.Platforms = oauth.Platforms
	}
	if opt.MaxGap <= 0 {
		opt.MaxGap = guard.DefaultMaxGap
	}
	var checks []Check
	schema, err := migrations.Inspect(ctx, databaseURL)
	if err != nil {
		return nil, err
	}
	checks = append(checks, schemaChecks(schema)...)
	checks = append(checks, appTableCheck(schema))
	if !schemaComplete(schema) || len(schema.AppTable.Errors()) > 0 {
		// The other checks read tables and columns that are not there.
		return checks, nil
	}
	steps := []func(context.Context, vault.DB, *vault.Keyring, time.Time, VerifyOptions) ([]Check, error){
		encryptionChecks, keyChecks, auditChecks, rateChecks, queueChecks, appChecks,
	}
	for _, step := range steps {
		c, err := step(ctx, db, keys, now, opt)
		if err != nil {
			return checks, err
		}
		checks = append(checks, c...)
	}
	return checks, nil
}

// Passed reports whether every check passed.
func Passed(checks []Check) bool {
	return !slices.ContainsFunc(checks, func(c Check) bool { return !c.OK })
}

func schemaComplete(s migrations.Schema) bool {
	ok := s.SocialAccounts && !s.Dirty
	for _, group := range [][]migrations.Presence{s.Tables, s.Columns, s.RLS} {
		for _, p := range group {
			ok = ok && p.Present
		}
	}
	return ok
}

func missing(group []migrations.Presence) []string {
	var out []string
	for _, p := range group {
		if !p.Present {
			out = append(out, p.Name)
		}
	}
	return out
}

func schemaChecks(s migrations.Schema) []Check {
	tables := Check{Name: "schema: tables and columns in place", OK: true,
		Detail: fmt.Sprintf("version %d, %d tables, %d columns on social_accounts", s.Version, len(s.Tables), len(s.Columns))}
	if gone := append(missing(s.Tables), missing(s.Columns)...); len(gone) > 0 || s.Dirty || !s.SocialAccounts {
		tables.OK = false
		tables.Detail = "missing: " + strings.Join(gone, ", ") + "; run `caddy credgate migrate up`"
		if s.Dirty {
			tables.Detail = "a migration stopped part-way; run `caddy credgate migrate up`"
		}
	}
	rls := Check{Name: "schema: row level security on credgate's tables", OK: true, Detail: "enabled on every table"}
	if off := missing(s.RLS); len(off) > 0 {
		rls.OK = false
		rls.Detail = "off on: " + strings.Join(off, ", ") + "; run `caddy credgate migrate up`"
	}
	return []Check{tables, rls}
}

// appTableCheck is the preflight of the app's social_accounts: what
// credgate's statements need of it (migrations.Preflight). Its warnings
// do not fail it.
func appTableCheck(s migrations.Schema) Check {
	c := Check{Name: "app table: what credgate's statements need", OK: true,
		Detail: "social_accounts has the columns, types, uuid key and unique (user_id, platform) credgate's statements use"}
	if !s.SocialAccounts {
		c.Detail = "no social_accounts yet: `caddy credgate migrate up` creates it"
	}
	var parts []string
	if errs := s.AppTable.Errors(); len(errs) > 0 {
		c.OK = false
		for i, p := range errs {
			parts = append(parts, fmt.Sprintf("(%d) %s", i+1, p))
		}
		c.Detail = strings.Join(parts, "; ")
		parts = nil
	}
	for _, p := range s.AppTable.Warnings() {
		parts = append(parts, "warning: "+p.String())
	}
	if len(parts) > 0 {
		c.Detail += "; " + strings.Join(parts, "; ")
	}
	return c
}

func encryptionChecks(ctx context.Context, db vault.DB, _ *vault.Keyring, _ time.Time, _ VerifyOptions) ([]Check, error) {
	var live, sealed, plaintext int64
	cols, err := appschema.Load(ctx, db)
	if err != nil {
		return nil, fmt.Errorf("reading encryption coverage: %w", err)
	}
	err = db.QueryRow(ctx, cols.SQL(`SELECT
			count(*) FILTER (WHERE {status} IN ('connected', 'expiring')),
			count(*) FILTER (WHERE {status} IN ('connected', 'expiring') AND credentials_encrypted IS NOT NULL),
			count(*) FILTER (WHERE access_token IS NOT NULL OR refresh_token IS NOT NULL)
		FROM social_accounts`)).Scan(&live, &sealed, &plaintext)
	if err != nil {
		return nil, fmt.Errorf("reading encryption coverage: %w", err)
	}
	coverage := Check{Name: "encryption: every connected account has an encrypted blob", OK: sealed == live,
		Detail: fmt.Sprintf("%d of %d connected accounts encrypted", sealed, live)}
	if !coverage.OK {
		coverage.Detail += "; run `caddy credgate backfill`"
	}
	clear := Check{Name: "encryption: no plaintext tokens left", OK: plaintext == 0,
		Detail: fmt.Sprintf("%d rows hold plaintext tokens", plaintext)}
	if !clear.OK {
		clear.Detail += "; once the app reads tokens from credgate, run `caddy credgate backfill --purge-plaintext`"
	}
	return []Check{coverage, clear}, nil
}

func keyChecks(ctx context.Context, db vault.DB, keys *vault.Keyring, _ time.Time, _ VerifyOptions) ([]Check, error) {
	usage, err := vault.NewAccounts(keys).KeyUsage(ctx, db)
	if err != nil {
		return nil, err
	}
	have := keys.IDs()
	var unknown []string
	for id, n := range usage {
		if !slices.Contains(have, id) {
			unknown = append(unknown, fmt.Sprintf("key %d (%d rows)", id, n))
		}
	}
	slices.Sort(unknown)
	c := Check{Name: "keys: every blob's key is in the keyring", OK: len(unknown) == 0,
		Detail: fmt.Sprintf("keyring holds %v", have)}
	if !c.OK {
		c.Detail = "blobs under " + strings.Join(unknown, ", ") + " that the keyring lacks; add them to " + vault.EnvPreviousKeys
	}
	return []Check{c}, nil
}

func auditChecks(ctx context.Context, db vault.DB, _ *vault.Keyring, now time.Time, opt VerifyOptions) ([]Check, error) {
	var n int64
	if err := db.QueryRow(ctx, `SELECT coalesce(sum(events), 0) FROM credential_audit_log WHERE created_at > $1`, now.Add(-opt.Window)).Scan(&n); err != nil {
		return nil, fmt.Errorf("reading the audit log: %w", err)
	}
	return []Check{{Name: "audit: events recorded in the last " + opt.Window.String(), OK: n > 0,
		Detail: fmt.Sprintf("%d events", n)}}, nil
}

func rateChecks(ctx context.Context, db vault.DB, _ *vault.Keyring, now time.Time, opt VerifyOptions) ([]Check, error) {
	var checks []Check
	judge := func(kind, platform string, r Rate) Check {
		c := Check{Name: fmt.Sprintf("%s: %s success rate ≥ %.0f%%", kind, platform, opt.MinSuccessRate*100)}
		n := r.Success + r.Failed
		switch {
		case n == 0:
			c.TooFew, c.Detail = true, fmt.Sprintf("not judged: no attempts in the last %s", opt.Window)
		case n < opt.MinSamples:
			c.TooFew, c.Detail = true, fmt.Sprintf("not judged: %d of %d attempts needed (%.1f%% so far)", n, opt.MinSamples, r.Rate*100)
		default:
			c.OK, c.Detail = r.Rate >= opt.MinSuccessRate, fmt.Sprintf("%.1f%% (%d of %d)", r.Rate*100, r.Success, n)
		}
		if r.Declined > 0 {
			c.Detail += fmt.Sprintf("; %d declined at the consent screen, not counted", r.Declined)
		}
		return c
	}
	// Connections, both arms as the runbook compares them: every
	// configured platform's new flow is judged, traffic or not; its
	// legacy flow (the app's, counted from the flows credgate saw begin)
	// where it had any; and, where both are judged, the gap between them.
	rs, err := rates(ctx, db, vault.ActionConnect, true, now.Add(-opt.Window))
	if err != nil {
		return nil, err
	}
	arm := func(platform, flow string) Rate {
		var sum Rate
		for _, r := range rs {
			f := r.Flow
			if f == "" {
				f = "new" // a refused callback with no state behind it
			}
			if r.Platform == platform && f == flow {
				sum.Success, sum.Failed, sum.Declined = sum.Success+r.Success, sum.Failed+r.Failed, sum.Declined+r.Declined
			}
		}
		if n := sum.Success + sum.Failed; n > 0 {
			sum.Rate = float64(sum.Success) / float64(n)
		}
		return sum
	}
	for _, p := range opt.Platforms {
		newArm, legacy := arm(p, "new"), arm(p, "legacy")
		newCheck := judge("connections", p+" new flow", newArm)
		checks = append(checks, newCheck)
		if legacy.Success+legacy.Failed+legacy.Declined == 0 {
			continue
		}
		legacyCheck := judge("connections", p+" legacy flow", legacy)
		checks = append(checks, legacyCheck)
		if !newCheck.TooFew && !legacyCheck.TooFew {
			checks = append(checks, Check{
				Name:   fmt.Sprintf("connections: %s new flow within %.0f points of the legacy flow", p, opt.MaxGap*100),
				OK:     newArm.Rate >= legacy.Rate-opt.MaxGap,
				Detail: fmt.Sprintf("new %.1f%%, legacy %.1f%%", newArm.Rate*100, legacy.Rate*100),
			})
		}
	}
	// Renewals: the platforms that had any (a long-lived token may go
	// weeks without one).
	rs, err = rates(ctx, db, vault.ActionRefresh, false, now.Add(-opt.Window))
	if err != nil {
		return nil, err
	}
	if len(rs) == 0 {
		checks = append(checks, Check{Name: "token refresh: success rate", TooFew: true,
			Detail: "not judged: no renewals in the last " + opt.Window.String()})
	}
	for _, r := range rs {
		checks = append(checks, judge("token refresh", r.Platform, r))
	}
	return checks, nil
}

func queueChecks(ctx context.Context, db vault.DB, _ *vault.Keyring, now time.Time, opt VerifyOptions) ([]Check, error) {
	st, err := vault.ReadQueueStats(ctx, db, now, opt.OverdueGrace)
	if err != nil {
		return nil, err
	}
	c := Check{Name: "refresh: no account stuck (dead or overdue jobs)", OK: st.Dead == 0 && st.Overdue == 0,
		Detail: fmt.Sprintf("%d dead, %d overdue, %d pending", st.Dead, st.Overdue, st.Pending)}
	if !c.OK {
		c.Detail += "; see last_error in token_refresh_queue and failed refresh rows in credential_audit_log"
	}
	return []Check{c}, nil
}

// appChecks are the two ways the migration can leave the app behind:
// transition mode still writing plaintext tokens, and accounts whose
// token only credgate holds on a platform the back end does not read
// through credgate (their posts fail).
func appChecks(ctx context.Context, db vault.DB, _ *vault.Keyring, _ time.Time, opt VerifyOptions) ([]Check, error) {
	settings, err := vault.LoadSettings(ctx, db)
	if err != nil {
		return nil, err
	}
	transition := Check{Name: "app: transition mode off", OK: !settings.TransitionMode,
		Detail: "connects and renewals write tokens only encrypted"}
	if settings.TransitionMode {
		transition.Detail = "transition mode is on: connects and renewals also write plaintext tokens to the app's columns; once the back end reads through credgate, `caddy credgate transition off`, then purge"
	}
	// Accounts the unchanged app cannot post for: credgate holds their
	// current token and the app's columns do not.
	rows, err := db.Query(ctx, settings.Columns.SQL(`SELECT platform, count(*) FROM social_accounts
		WHERE `+migrations.TokenOnlyInCredgate+` GROUP BY platform ORDER BY platform`))
	if err != nil {
		return nil, fmt.Errorf("counting accounts only credgate holds: %w", err)
	}
	byAppName, err := pgxCollectCounts(rows)
	if err != nil {
		return nil, fmt.Errorf("counting accounts only credgate holds: %w", err)
	}
	// The rows hold the app's names for the platforms; the reads, the
	// providers'.
	held := map[string]int64{}
	for name, n := range byAppName {
		held[settings.Platform(name)] += n
	}
	reads, err := vault.BackendReadsIn(ctx, db, opt.Window)
	if err != nil {
		return nil, err
	}
	backend := Check{Name: "app: the back end reads tokens through credgate", OK: true}
	var unread, readParts []string
	for _, platform := range slices.Sorted(maps.Keys(held)) {
		r := reads[platform]
		if r.Total() == 0 {
			unread = append(unread, fmt.Sprintf("%s (%d accounts)", platform, held[platform]))
			continue
		}
		readParts = append(readParts, fmt.Sprintf("%s %d token API, %d egress", platform, r.TokenAPI, r.Egress))
	}
	switch {
	case len(unread) > 0:
		backend.OK = false
		backend.Detail = fmt.Sprintf("no token API or egress read in the last %s on %s, whose tokens only credgate holds: switch the back end to the token API or egress, or turn transition mode on", opt.Window, strings.Join(unread, ", "))
	case len(held) == 0:
		backend.Detail = "every connected account's token is in the app's columns too"
	default:
		backend.Detail = "last " + opt.Window.String() + ": " + strings.Join(readParts, "; ")
	}
	return []Check{transition, backend}, nil
}

// pgxCollectCounts reads (name, count) rows into a map.
func pgxCollectCounts(rows pgx.Rows) (map[string]int64, error) {
	out := map[string]int64{}
	var name string
	var n int64
	_, err := pgx.ForEachRow(rows, []any{&name, &n}, func() error {
		out[name] = n
		return nil
	})
	return out, err
}
