package vault

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// The batch jobs between the app's plaintext columns and credgate's blob:
// backfill (plaintext → blob), purge (clear plaintext the blob holds) and
// write-back (blob → plaintext, the way back). All three follow one rule:
// the newest token wins. A plaintext the app wrote after credgate's last
// write (appNewerSQL) is the current token: backfill takes it, purge
// keeps it, write-back leaves it.

// ActionWriteBack: a credgate-held token was written back into the app's
// plaintext columns (caddy credgate writeback).
const ActionWriteBack Action = "writeback"

// BackfillPlan is what a dry run finds.
type BackfillPlan struct {
	// ToEncrypt counts legacy rows with plaintext tokens and no blob.
	ToEncrypt int64
	// ToVerify counts rows with both; backfill re-encrypts those whose
	// plaintext changed since (the legacy app refreshed the token).
	ToVerify int64
}

// PlanBackfill counts without changing anything (--dry-run).
func (s *Accounts) PlanBackfill(ctx context.Context, db DB) (BackfillPlan, error) {
	var p BackfillPlan
	err := db.QueryRow(ctx, `SELECT
			count(*) FILTER (WHERE credentials_encrypted IS NULL),
			count(*) FILTER (WHERE credentials_encrypted IS NOT NULL)
		FROM social_accounts WHERE (access_token IS NOT NULL OR refresh_token IS NOT NULL)
		  AND (connected_via = 'legacy' OR `+appNewerSQL+`)`).Scan(&p.ToEncrypt, &p.ToVerify)
	if err != nil {
		return p, fmt.Errorf("planning backfill: %w", err)
	}
	return p, nil
}

// Backfill seals the app's plaintext access_token/refresh_token (and its
// expiry, from the app's expiry column when one is set) into
// credentials_encrypted, leaving the plaintext in place for the unchanged
// app. It writes only credgate's columns: never the app's, not even
// updated_at. Legacy rows whose blob already holds their plaintext are
// skipped; legacy rows the app changed since are sealed again; rows
// credgate connected whose plaintext the app wrote since (a reconnect
// through the legacy flow after a rollback) are taken as the app's again.
// One audit row per batch.
func (s *Accounts) Backfill(ctx context.Context, db DB, opt BatchOptions) (Progress, error) {
	settings, err := s.settings.Get(ctx)
	if err != nil {
		return Progress{}, err
	}
	return s.walk(ctx, db, opt, ActionBackfill, settings, `(access_token IS NOT NULL OR refresh_token IS NOT NULL)`, nil,
		func(r plaintextRow) (rowChange, error) {
			if r.via != ViaLegacy && !r.appNewer {
				// credgate's token is newer than any plaintext here.
				return skip, nil
			}
			if c, ok := s.opens(r); ok && r.matches(c) {
				if r.inSync && !r.appNewer {
					return skip, nil
				}
				// The blob holds it already (sealed before migration
				// 006 kept a fingerprint): record it as seen.
				return rowChange{set: `app_token_fingerprint = credgate_app_token_fingerprint(access_token, refresh_token),
					app_token_current = true`, skip: true}, nil
			}
			c := r.credentials()
			if r.appExpiry != nil {
				c.Expiry = *r.appExpiry
			}
			blob, err := s.seal(c, r.id, r.user, r.platform)
			if err != nil {
				return fail, err
			}
			set := `credentials_encrypted = $2, credentials_key_id = $3, connected_via = 'legacy',
				app_token_fingerprint = credgate_app_token_fingerprint(access_token, refresh_token), app_token_current = true`
			args := []any{blob, int64(s.keys.PrimaryID())}
			if r.via != ViaLegacy {
				// The app's token replaces credgate's: the account is
				// connected again, whatever credgate had recorded.
				set += `, {status} = 'connected'`
			}
			if settings.AppExpiryColumn != "" {
				set += `, {expires_at} = $4`
				args = append(args, r.appExpiry)
			}
			return rowChange{set: set, args: args, bump: true}, nil
		})
}

// PurgePlaintext clears access_token/refresh_token, but only on rows whose
// blob has just been read back, decrypted and found to hold the current
// token: equal to the plaintext, or newer than a plaintext credgate has
// seen (a connect through credgate superseded it). A plaintext the app
// wrote after credgate's last write is never cleared: those rows are
// counted in Progress.Newer (run backfill to take them, then purge
// again). Rows whose blob is missing or unreadable keep their plaintext
// and count as failed. Do this only after the app has stopped reading the
// plaintext columns (guide Phase 5).
func (s *Accounts) PurgePlaintext(ctx context.Context, db DB, opt BatchOptions) (Progress, error) {
	settings, err := s.settings.Get(ctx)
	if err != nil {
		return Progress{}, err
	}
	return s.walk(ctx, db, opt, ActionPurge, settings, `(access_token IS NOT NULL OR refresh_token IS NOT NULL)`, nil,
		func(r plaintextRow) (rowChange, error) {
			c, ok := s.opens(r)
			switch {
			case !ok:
				return fail, nil
			case r.matches(c):
			case r.appNewer || r.via == ViaLegacy:
				return newer, nil
			}
			return rowChange{set: `access_token = NULL, refresh_token = NULL, app_token_fingerprint = NULL, app_token_current = false`, bump: true}, nil
		})
}

// WriteBackFilter narrows a write-back; empty fields match everything.
type WriteBackFilter struct {
	Platform string
	UserID   string
}

// WriteBackPlan is what a write-back dry run finds.
type WriteBackPlan struct {
	// ToWrite counts live accounts whose current token only the blob
	// holds.
	ToWrite int64
	// Newer counts rows whose plaintext the app wrote after credgate's
	// last write: they keep it.
	Newer int64
}

// writeBackCandidates are the rows a write-back looks at: live ones with
// a blob whose plaintext is not known to equal it.
const writeBackCandidates = `credentials_encrypted IS NOT NULL AND {status} IN ('connected', 'expiring')
	AND (access_token IS NULL OR NOT app_token_current)`

func (f WriteBackFilter) where(first int, settings Settings) (string, []any) {
	where, args := writeBackCandidates, []any{}
	if f.Platform != "" {
		args = append(args, settings.AppPlatform(f.Platform))
		where += fmt.Sprintf(` AND platform = $%d`, first+len(args)-1)
	}
	if f.UserID != "" {
		args = append(args, f.UserID)
		where += fmt.Sprintf(` AND user_id = $%d::uuid`, first+len(args)-1)
	}
	return where, args
}

// PlanWriteBack counts without changing anything (--dry-run). Legacy
// rows from before migration 006 whose plaintext may equal the blob are
// counted as to write; the write-back itself compares them.
func (s *Accounts) PlanWriteBack(ctx context.Context, db DB, f WriteBackFilter) (WriteBackPlan, error) {
	var p WriteBackPlan
	settings, err := s.settings.Get(ctx)
	if err != nil {
		return p, err
	}
	where, args := f.where(1, settings)
	err = db.QueryRow(ctx, settings.Columns.SQL(`SELECT count(*) FILTER (WHERE NOT (`+appNewerSQL+` AND app_token_fingerprint IS NOT NULL)),
			count(*) FILTER (WHERE `+appNewerSQL+` AND app_token_fingerprint IS NOT NULL)
		FROM social_accounts WHERE `+where), args...).Scan(&p.ToWrite, &p.Newer)
	if err != nil {
		return p, fmt.Errorf("planning write-back: %w", err)
	}
	return p, nil
}

// WriteBack writes each live account's current token from the blob into
// the app's plaintext columns (and the app's expiry column, when set),
// so that the legacy app works for the users credgate moved: the way
// back. It changes no credential: the blob stays, so credgate keeps
// serving and renewing the account (and writes its renewals to the
// plaintext too from now on). A plaintext the app wrote after credgate's
// last write is the newest token and is left (Progress.Newer). Safe to
// run again (rows already written back are not looked at) and from
// several processes at once (each batch locks its rows, and a row
// another process wrote back meanwhile no longer qualifies). One audit
// row per account written, one per batch.
func (s *Accounts) WriteBack(ctx context.Context, db DB, f WriteBackFilter, opt BatchOptions) (Progress, error) {
	settings, err := s.settings.Get(ctx)
	if err != nil {
		return Progress{}, err
	}
	where, whereArgs := f.where(3, settings)
	return s.walk(ctx, db, opt, ActionWriteBack, settings, where, whereArgs, func(r plaintextRow) (rowChange, error) {
		c, ok := s.opens(r)
		switch {
		case !ok:
			return fail, nil
		case r.access != nil && r.matches(c):
			// Equal already (a legacy row from before 006): record it.
			return rowChange{set: `app_token_fingerprint = credgate_app_token_fingerprint(access_token, refresh_token),
				app_token_current = true`, skip: true}, nil
		case r.appNewer && (r.fingerprinted || r.via == ViaLegacy):
			return newer, nil
		}
		set := `access_token = $2::text, refresh_token = $3::text,
			app_token_fingerprint = credgate_app_token_fingerprint($2::text, $3::text), app_token_current = true`
		args := []any{nullString(c.AccessToken.Reveal()), nullString(c.RefreshToken.Reveal())}
		if settings.AppExpiryColumn != "" {
			set += `, ` + pgx.Identifier{settings.AppExpiryColumn}.Sanitize() + ` = $4`
			args = append(args, nullTime(c.Expiry))
		}
		return rowChange{set: set, args: args, audit: true}, nil
	})
}

// plaintextRow is a row as the batch jobs see it.
type plaintextRow struct {
	id, user, platform string
	via                ConnectedVia
	access, refresh    *string
	blob               []byte
	version            int64
	// appNewer: appNewerSQL; fingerprinted: credgate has recorded a
	// fingerprint (so appNewer is the app's write, not a legacy row from
	// before 006); inSync: app_token_current.
	appNewer, fingerprinted, inSync bool
	appExpiry                       *time.Time
}

func (r plaintextRow) credentials() Credentials {
	return Credentials{AccessToken: secretOf(r.access), RefreshToken: secretOf(r.refresh)}
}

func (r plaintextRow) matches(c Credentials) bool {
	return c.AccessToken.Equal(secretOf(r.access)) && c.RefreshToken.Equal(secretOf(r.refresh))
}

// opens decrypts the row's blob; false when there is none or it does not
// open.
func (s *Accounts) opens(r plaintextRow) (Credentials, bool) {
	if r.blob == nil {
		return Credentials{}, false
	}
	c, _, err := s.open(r.blob, r.id, r.user, r.platform)
	return c, err == nil
}

// rowChange is what a batch job does to one row: set (parameters from
// $2, the row id being $1), bumping credentials_version when the
// credential changed; skip counts it as needing nothing (a set is still
// applied), fail and newer count it without a change.
type rowChange struct {
	set   string
	args  []any
	bump  bool
	audit bool
	skip  bool
	fail  bool
	newer bool
}

var (
	skip  = rowChange{skip: true}
	fail  = rowChange{fail: true}
	newer = rowChange{newer: true}
)

// walk visits the rows matching where (its parameters from $3, after the
// keyset cursor and the batch size) in id order, a batch per
// transaction, locking each batch, and applies decide's change to each
// row.
func (s *Accounts) walk(ctx context.Context, db DB, opt BatchOptions, action Action, settings Settings, where string, whereArgs []any,
	decide func(plaintextRow) (rowChange, error)) (Progress, error) {
	start := time.Now()
	var p Progress
	last := zeroUUID
	// where and each change's set may name credgate's columns by their
	// placeholders (internal/appschema).
	query := settings.Columns.SQL(`SELECT id::text, user_id::text, platform, connected_via, access_token, refresh_token,
			credentials_encrypted, credentials_version, ` + appNewerSQL + `, app_token_fingerprint IS NOT NULL,
			app_token_current, ` + appExpirySQL(settings.AppExpiryColumn) + `
		FROM social_accounts
		WHERE id > $1 AND ` + where + `
		ORDER BY social_accounts.id LIMIT $2 FOR UPDATE`)
	for {
		var seen int
		var batch Progress
		err := InTx(ctx, db, func(tx pgx.Tx) error {
			rows, err := tx.Query(ctx, query, append([]any{last, opt.size()}, whereArgs...)...)
			if err != nil {
				return err
			}
			list, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (plaintextRow, error) {
				var x plaintextRow
				err := r.Scan(&x.id, &x.user, &x.platform, &x.via, &x.access, &x.refresh, &x.blob, &x.version,
					&x.appNewer, &x.fingerprinted, &x.inSync, &x.appExpiry)
				// The blob is bound to the provider's platform name.
				x.platform = settings.Platform(x.platform)
				return x, err
			})
			if err != nil {
				return err
			}
			seen = len(list)
			for _, r := range list {
				last = r.id
				change, err := decide(r)
				if err != nil {
					return err
				}
				change.set = settings.Columns.SQL(change.set)
				if err := s.apply(ctx, tx, action, r, change, &batch); err != nil {
					return err
				}
			}
			if seen == 0 {
				return nil
			}
			return AppendAudit(ctx, tx, Event{Action: action, Status: Success, Details: map[string]any{
				"rows": batch.Done, "skipped": batch.Skipped, "failed": batch.Failed, "newer": batch.Newer, "worker": opt.Worker}})
		})
		if err != nil {
			return p, fmt.Errorf("%s: %w", action, err)
		}
		if seen == 0 {
			break
		}
		p.Done += batch.Done
		p.Skipped += batch.Skipped
		p.Failed += batch.Failed
		p.Newer += batch.Newer
		p.Batches++
		p.Elapsed = time.Since(start)
		if opt.Progress != nil {
			opt.Progress(p)
		}
	}
	p.Elapsed = time.Since(start)
	return p, nil
}

// apply does change to row r inside the batch's transaction and counts it.
func (s *Accounts) apply(ctx context.Context, tx pgx.Tx, action Action, r plaintextRow, change rowChange, batch *Progress) error {
	switch {
	case change.fail:
		batch.Failed++
		return AppendAudit(ctx, tx, Event{UserID: r.user, Platform: r.platform, Action: action,
			Status: Failed, ErrorCode: "blob_mismatch", Details: map[string]any{"account_id": r.id}})
	case change.newer:
		batch.Newer++
		return nil
	case change.set == "":
		batch.Skipped++
		return nil
	}
	set := change.set
	if change.bump {
		set += `, credentials_version = credentials_version + 1`
	}
	args := append([]any{r.id}, change.args...)
	tag, err := tx.Exec(ctx, `UPDATE social_accounts SET `+set+` WHERE id = $1`, args...)
	if err != nil {
		return err
	}
	if change.skip {
		batch.Skipped++
		return nil
	}
	batch.Done += tag.RowsAffected()
	if change.audit {
		return AppendAudit(ctx, tx, Event{UserID: r.user, Platform: r.platform, Action: action, Status: Success,
			Details: map[string]any{"account_id": r.id}})
	}
	return nil
}
