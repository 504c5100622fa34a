package vault

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/credgate/credgate/secret"
)

// Status is the lifecycle of a connected account (social_accounts.status).
type Status string

// The statuses the migration allows.
const (
	StatusConnected    Status = "connected"
	StatusExpiring     Status = "expiring"
	StatusNeedsReauth  Status = "needs_reauth"
	StatusRevoked      Status = "revoked"
	StatusDisconnected Status = "disconnected"
)

// Flow is the rollout arm a credential came through.
type Flow string

// The two arms.
const (
	FlowLegacy   Flow = "legacy"
	FlowCredgate Flow = "credgate"
)

// Credentials is the token set that is encrypted into
// social_accounts.credentials_encrypted.
type Credentials struct {
	AccessToken  secret.Value
	RefreshToken secret.Value
	TokenType    string
	Expiry       time.Time
	// IssuedAt is when the access token was issued; zero when unknown
	// (legacy rows). Instagram renews only tokens at least a day old.
	IssuedAt time.Time
}

// sealedCredentials is the plaintext inside the blob. It exists so that
// revealing the secrets happens here and nowhere else.
type sealedCredentials struct {
	AccessToken  string     `json:"access_token"`
	RefreshToken string     `json:"refresh_token,omitempty"`
	TokenType    string     `json:"token_type,omitempty"`
	Expiry       *time.Time `json:"expiry,omitempty"`
	IssuedAt     *time.Time `json:"issued_at,omitempty"`
}

// Account is a social_accounts row without any secret: safe to list, log
// and return from an API.
type Account struct {
	ID              string     `json:"id"`
	UserID          string     `json:"user_id"`
	Platform        string     `json:"platform"`
	PlatformUserID  string     `json:"platform_user_id,omitempty"`
	Username        string     `json:"username,omitempty"`
	Status          Status     `json:"status"`
	ExpiresAt       *time.Time `json:"expires_at"`
	Scopes          []string   `json:"scopes,omitempty"`
	LastRefreshedAt *time.Time `json:"last_refreshed_at"`
	ConnectedVia    Flow       `json:"connected_via"`
	// Version is credentials_version, the compare-and-swap guard.
	Version int64 `json:"-"`
	// KeyID is the key the blob is sealed with; nil without a blob.
	KeyID *uint32 `json:"-"`
	// Encrypted reports whether the account has a credential blob.
	Encrypted bool      `json:"-"`
	CreatedAt time.Time `json:"created_at"`
	UpdatedAt time.Time `json:"updated_at"`
}

// Connection is what a finished OAuth flow stores.
type Connection struct {
	UserID         string
	Platform       string
	PlatformUserID string
	Username       string
	Credentials    Credentials
	Scopes         []string
	ConnectedVia   Flow
	// KnownID is the id the account row had when last seen
	// (ConsumedState.AccountID), or "" for none: StoreConnect seals for
	// it, or for a new id, without reading the row first.
	KnownID string
}

// Accounts stores credentials in social_accounts, encrypted with keys.
type Accounts struct {
	keys *Keyring
}

// NewAccounts returns the account store.
func NewAccounts(keys *Keyring) *Accounts { return &Accounts{keys: keys} }

const accountColumns = `id::text, user_id::text, platform, coalesce(platform_user_id, ''), coalesce(username, ''),
	status, expires_at, coalesce(scopes, '{}'), last_refreshed_at, connected_via, credentials_version,
	credentials_key_id, credentials_encrypted IS NOT NULL, created_at, updated_at`

func scanAccount(row pgx.Row) (Account, error) { return scanAccountWith(row) }

// scanAccountWith scans accountColumns followed by extra columns.
func scanAccountWith(row pgx.Row, extra ...any) (Account, error) {
	var a Account
	var keyID *int64
	err := row.Scan(append([]any{&a.ID, &a.UserID, &a.Platform, &a.PlatformUserID, &a.Username, &a.Status, &a.ExpiresAt,
		&a.Scopes, &a.LastRefreshedAt, &a.ConnectedVia, &a.Version, &keyID, &a.Encrypted, &a.CreatedAt, &a.UpdatedAt}, extra...)...)
	if keyID != nil {
		id := uint32(*keyID)
		a.KeyID = &id
	}
	return a, err
}

func accountBinding(id, userID, platform string) Binding {
	return Binding{Table: "social_accounts", Column: "credentials_encrypted", RowID: id, UserID: userID, Platform: platform}
}

func (s *Accounts) seal(c Credentials, id, userID, platform string) ([]byte, error) {
	p := sealedCredentials{AccessToken: c.AccessToken.Reveal(), RefreshToken: c.RefreshToken.Reveal(), TokenType: c.TokenType}
	if !c.Expiry.IsZero() {
		p.Expiry = &c.Expiry
	}
	if !c.IssuedAt.IsZero() {
		p.IssuedAt = &c.IssuedAt
	}
	plain, err := json.Marshal(p)
	if err != nil {
		return nil, err
	}
	return s.keys.Seal(PurposeCredentials, plain, accountBinding(id, userID, platform))
}

func (s *Accounts) open(blob []byte, id, userID, platform string) (Credentials, uint32, error) {
	plain, keyID, err := s.keys.Open(PurposeCredentials, blob, accountBinding(id, userID, platform))
	if err != nil {
		return Credentials{}, keyID, err
	}
	var p sealedCredentials
	if err := json.Unmarshal(plain, &p); err != nil {
		return Credentials{}, keyID, ErrMalformedBlob
	}
	c := Credentials{AccessToken: secret.New(p.AccessToken), RefreshToken: secret.New(p.RefreshToken), TokenType: p.TokenType}
	if p.Expiry != nil {
		c.Expiry = *p.Expiry
	}
	if p.IssuedAt != nil {
		c.IssuedAt = *p.IssuedAt
	}
	return c, keyID, nil
}

// Upsert stores a freshly connected credential for (user, platform),
// encrypted and bound to its row, and bumps credentials_version. Legacy
// plaintext tokens on the row are left alone: the unchanged app may still
// use them until they expire, and plaintext is cleared only by an explicit
// purge (DESIGN §4). Backfill never touches rows credgate connected.
// StoreConnect is the same write with the connect's refresh job and audit
// row.
func (s *Accounts) Upsert(ctx context.Context, db DB, c Connection) (Account, error) {
	return s.store(ctx, db, c, time.Time{}, nil)
}

// StoreConnect stores what a finished connect keeps, all or nothing: the
// credential on the (user, platform) row, as Upsert does; the refresh job
// for the version it wrote, due at jobAt (none when jobAt is zero); and
// the audit row audit returns for the row's id.
func (s *Accounts) StoreConnect(ctx context.Context, db DB, c Connection, jobAt time.Time, audit func(accountID string) Event) (Account, error) {
	return s.store(ctx, db, c, jobAt, audit)
}

// store is Upsert and StoreConnect. The write is one statement, so one
// round trip and its own transaction: the blob is sealed for c.KnownID,
// or for a new id when the row did not exist, and the statement writes
// only if the row has that id. When it does not (the row appeared, or was
// replaced, since it was seen, or a trigger of the app's gave a new row an
// id of its own), the row is locked or created first, in a transaction,
// to learn its id, and the same statement writes for it: more round
// trips, the same all or nothing. Inside a caller's transaction (db a
// pgx.Tx), where a failed statement would abort the caller's work, it
// locks first at once, without a savepoint of its own.
func (s *Accounts) store(ctx context.Context, db DB, c Connection, jobAt time.Time, audit func(accountID string) Event) (Account, error) {
	if c.ConnectedVia == "" {
		c.ConnectedVia = FlowCredgate
	}
	tx, inCallersTx := db.(pgx.Tx)
	if !inCallersTx {
		id := c.KnownID
		if id == "" {
			id = uuid.NewString()
		}
		acct, err := s.write(ctx, db, c, id, jobAt, audit)
		if !errors.Is(err, errAnotherID) {
			return acct, err
		}
	}
	locked := func(tx pgx.Tx) (acct Account, err error) {
		// The blob is bound to the row id, which a new row only has once
		// inserted.
		var id string
		err = tx.QueryRow(ctx, `INSERT INTO social_accounts (user_id, platform) VALUES ($1, $2)
			ON CONFLICT (user_id, platform) DO UPDATE SET updated_at = social_accounts.updated_at
			RETURNING id::text`, c.UserID, c.Platform).Scan(&id)
		if err != nil {
			return Account{}, fmt.Errorf("storing credentials: locking account: %w", err)
		}
		return s.write(ctx, tx, c, id, jobAt, audit)
	}
	if inCallersTx {
		return locked(tx)
	}
	var acct Account
	err := InTx(ctx, db, func(tx pgx.Tx) (err error) {
		acct, err = locked(tx)
		return err
	})
	return acct, err
}

// errAnotherID is write's answer when the row does not have the id the
// blob was sealed for; nothing was written.
var errAnotherID = errors.New("the account row has another id than the one sealed for")

// write seals c's credentials for row id and runs the store statement.
func (s *Accounts) write(ctx context.Context, db DB, c Connection, id string, jobAt time.Time, audit func(accountID string) Event) (Account, error) {
	blob, err := s.seal(c.Credentials, id, c.UserID, c.Platform)
	if err != nil {
		return Account{}, fmt.Errorf("storing credentials: %w", err)
	}
	args := make([]any, 0, 20)
	args = append(args, id, c.UserID, c.Platform, blob, int64(s.keys.PrimaryID()), nullTime(c.Credentials.Expiry),
		c.Scopes, c.PlatformUserID, c.Username, c.ConnectedVia)
	withJob := !jobAt.IsZero()
	if withJob {
		args = append(args, jobAt)
	}
	if audit != nil {
		e := audit(id)
		if e.TraceID == "" {
			e.TraceID = TraceID(ctx)
		}
		args = append(args, e.args()...)
	}
	acct, err := scanAccount(db.QueryRow(ctx, storeSQL[storeVariant{withJob, audit != nil}], args...))
	if errors.Is(err, pgx.ErrNoRows) || tookAnotherID(err) {
		return Account{}, errAnotherID
	}
	if err != nil {
		return Account{}, fmt.Errorf("storing credentials: %w", err)
	}
	return acct, nil
}

// storeVariant is which of the store statement's parts are in.
type storeVariant struct{ job, audit bool }

// storeSQL is the store statement, built once per variant: credentialUpsert's
// ten parameters, then the job's run time (with the job), then the audit
// event's (with the audit row). The job and the audit row are written
// from the upserted row, so all three are written or none.
var storeSQL = func() map[storeVariant]string {
	out := map[storeVariant]string{}
	for _, v := range []storeVariant{{false, false}, {true, false}, {false, true}, {true, true}} {
		sql := `WITH account AS (` + credentialUpsert + `)`
		next := 11
		if v.job {
			sql += `, job AS (` + scheduleFrom(fmt.Sprintf("SELECT id, credentials_version, $%d::timestamptz FROM account", next)) + `)`
			next++
		}
		if v.audit {
			sql += `, audited AS (` + auditInsertFrom("account", next) + `)`
		}
		// The row must have the id the blob was sealed for. A trigger of
		// the app's could give a new row another one; then the cast
		// below raises (at run time only, as it depends on the row) and
		// the statement writes nothing.
		out[v] = sql + ` SELECT ` + accountColumns + ` FROM account
			WHERE CASE WHEN id = $1::uuid THEN true ELSE (id::text || '` + anotherIDMark + `')::boolean END`
	}
	return out
}()

// anotherIDMark is in the error of a store whose row took another id.
const anotherIDMark = " credgate: the row took another id"

// tookAnotherID reports whether err is the store's refusal of a row that
// took another id than the one sealed for.
func tookAnotherID(err error) bool {
	pgErr, ok := errors.AsType[*pgconn.PgError](err)
	return ok && pgErr.Code == "22P02" && strings.Contains(pgErr.Message, strings.TrimSpace(anotherIDMark))
}

// credentialUpsert writes a credential on the (user, platform) row (a new
// row with id $1, or the existing one if its id is $1) and returns the
// row; nothing, when a row with another id holds (user, platform).
const credentialUpsert = `INSERT INTO social_accounts AS s (id, user_id, platform,
		credentials_encrypted, credentials_key_id, credentials_version, status, expires_at, scopes,
		platform_user_id, username, connected_via, last_refreshed_at, updated_at)
	VALUES ($1, $2, $3, $4, $5, 1, 'connected', $6, $7, $8, $9, $10, NULL, now())
	ON CONFLICT (user_id, platform) DO UPDATE SET
		credentials_encrypted = EXCLUDED.credentials_encrypted, credentials_key_id = EXCLUDED.credentials_key_id,
		credentials_version = s.credentials_version + 1, status = 'connected', expires_at = EXCLUDED.expires_at,
		scopes = EXCLUDED.scopes, platform_user_id = EXCLUDED.platform_user_id, username = EXCLUDED.username,
		connected_via = EXCLUDED.connected_via, last_refreshed_at = NULL, updated_at = now()
	WHERE s.id = $1::uuid
	RETURNING s.*`

// Get returns the account and its decrypted credentials. An account with no
// blob, or a disconnected one, is ErrNotConnected.
func (s *Accounts) Get(ctx context.Context, db DB, userID, platform string) (Account, Credentials, error) {
	return s.get(ctx, db, `WHERE user_id = $1 AND platform = $2`, []any{userID, platform}, "")
}

// GetByID is Get by social_accounts.id, for the refresh worker.
func (s *Accounts) GetByID(ctx context.Context, db DB, id string) (Account, Credentials, error) {
	return s.get(ctx, db, `WHERE id = $1`, []any{id}, "")
}

// Renewable is an account locked for renewal.
type Renewable struct {
	Account     Account
	Credentials Credentials
	// AppReadsPlaintext marks a row the legacy app wrote and still reads
	// (plaintext access_token present): a renewal writes its new tokens
	// to the plaintext columns too.
	AppReadsPlaintext bool
}

// LockForRenewal reads an account and locks its row until tx ends, so two
// renewals of one token never run at once. The lock is FOR NO KEY UPDATE:
// it still lets another transaction insert a refresh job referencing the
// row (a foreign-key check takes KEY SHARE), which FOR UPDATE would block
// for the whole platform call — and deadlock against this transaction's
// own job insert.
//
// On a legacy row whose plaintext the app changed since backfill sealed
// it (the app refreshed the token itself), the plaintext tokens are the
// current ones and are returned instead of the blob's.
func (s *Accounts) LockForRenewal(ctx context.Context, tx pgx.Tx, id string) (Renewable, error) {
	var access, refresh *string
	a, c, err := s.get(ctx, tx, `WHERE id = $1 FOR NO KEY UPDATE`, []any{id},
		`CASE WHEN connected_via = 'legacy' THEN access_token END, CASE WHEN connected_via = 'legacy' THEN refresh_token END`,
		&access, &refresh)
	r := Renewable{Account: a, Credentials: c, AppReadsPlaintext: access != nil && *access != ""}
	if err != nil || !r.AppReadsPlaintext {
		return r, err
	}
	plain := plaintextRow{access: access, refresh: refresh}
	if !plain.matches(c) {
		r.Credentials.AccessToken, r.Credentials.RefreshToken = secretOf(access), secretOf(refresh)
	}
	return r, nil
}

func (s *Accounts) get(ctx context.Context, db DB, where string, args []any, extraColumns string, extra ...any) (Account, Credentials, error) {
	var blob []byte
	columns := accountColumns + `, credentials_encrypted`
	if extraColumns != "" {
		columns += ", " + extraColumns
	}
	a, err := scanAccountWith(db.QueryRow(ctx, `SELECT `+columns+` FROM social_accounts `+where, args...), append([]any{&blob}, extra...)...)
	if errors.Is(err, pgx.ErrNoRows) {
		return Account{}, Credentials{}, ErrNotConnected
	}
	if err != nil {
		return Account{}, Credentials{}, fmt.Errorf("reading account: %w", err)
	}
	if blob == nil || a.Status == StatusDisconnected {
		return a, Credentials{}, ErrNotConnected
	}
	c, _, err := s.open(blob, a.ID, a.UserID, a.Platform)
	if err != nil {
		return a, Credentials{}, fmt.Errorf("decrypting credentials of account %s: %w", a.ID, err)
	}
	return a, c, nil
}

// LegacyToken returns the access token the legacy app stored in plaintext
// for (user, platform), for a token API that may serve rows not yet
// backfilled. ErrNotConnected when the row has none or is disconnected.
func (s *Accounts) LegacyToken(ctx context.Context, db DB, userID, platform string) (Account, secret.Value, error) {
	var token *string
	a, err := scanAccountWith(db.QueryRow(ctx, `SELECT `+accountColumns+`, access_token FROM social_accounts
		WHERE user_id = $1 AND platform = $2`, userID, platform), &token)
	if errors.Is(err, pgx.ErrNoRows) {
		return Account{}, secret.Value{}, ErrNotConnected
	}
	if err != nil {
		return Account{}, secret.Value{}, fmt.Errorf("reading account: %w", err)
	}
	if token == nil || *token == "" || a.Status == StatusDisconnected {
		return a, secret.Value{}, ErrNotConnected
	}
	return a, secretOf(token), nil
}

// List returns a user's accounts, including rows the legacy app wrote,
// without any secret.
func (s *Accounts) List(ctx context.Context, db DB, userID string) ([]Account, error) {
	rows, err := db.Query(ctx, `SELECT `+accountColumns+` FROM social_accounts WHERE user_id = $1 ORDER BY platform`, userID)
	if err != nil {
		return nil, fmt.Errorf("listing accounts: %w", err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (Account, error) { return scanAccount(r) })
	if err != nil {
		return nil, fmt.Errorf("listing accounts: %w", err)
	}
	return out, nil
}

// MarkStatus sets an account's status (needs_reauth after a dead refresh
// token, expiring ahead of a Facebook re-auth …).
func (s *Accounts) MarkStatus(ctx context.Context, db DB, id string, status Status) error {
	tag, err := db.Exec(ctx, `UPDATE social_accounts SET status = $2, updated_at = now() WHERE id = $1`, id, status)
	if err != nil {
		return fmt.Errorf("marking account %s: %w", id, err)
	}
	if tag.RowsAffected() == 0 {
		return ErrNotConnected
	}
	return nil
}

// Disconnect wipes the account's credentials, the legacy plaintext columns
// included (the app must not keep using a token the user withdrew), and
// sets status disconnected. The row stays, so history and the audit trail
// keep their subject.
func (s *Accounts) Disconnect(ctx context.Context, db DB, userID, platform string) (Account, error) {
	acct, err := scanAccount(db.QueryRow(ctx, `UPDATE social_accounts SET
			credentials_encrypted = NULL, credentials_key_id = NULL, access_token = NULL, refresh_token = NULL,
			credentials_version = credentials_version + 1, status = 'disconnected', expires_at = NULL, updated_at = now()
		WHERE user_id = $1 AND platform = $2 AND status <> 'disconnected'
		RETURNING `+accountColumns, userID, platform))
	if errors.Is(err, pgx.ErrNoRows) {
		return Account{}, ErrNotConnected
	}
	if err != nil {
		return Account{}, fmt.Errorf("disconnecting: %w", err)
	}
	return acct, nil
}

// Refreshed is the result of a token refresh, applied with CompareAndSwap.
type Refreshed struct {
	Credentials Credentials
	Scopes      []string
	// WritePlaintext also writes the tokens to the plaintext columns of
	// a legacy row whose plaintext the app still reads (see
	// Renewable.AppReadsPlaintext); otherwise the tokens never leave
	// this process unencrypted.
	WritePlaintext bool
}

// CompareAndSwap replaces an account's credentials only if
// credentials_version still equals version, so a refresh never overwrites
// a newer token (Twitter rotates refresh tokens: the newest must win).
// It returns ErrVersionConflict when the row moved.
//
// With r.WritePlaintext, a row the legacy app wrote and still reads
// (connected_via legacy, its plaintext access_token not yet purged) gets
// the new tokens in its plaintext columns too, in the same statement:
// otherwise the unchanged app would keep using a superseded token, and
// replaying a rotated Twitter refresh token revokes the whole grant for
// both of them.
func (s *Accounts) CompareAndSwap(ctx context.Context, db DB, a Account, version int64, r Refreshed) (Account, error) {
	return s.swap(ctx, db, a, version, r, nil)
}

// QueueCompareAndSwapAudited queues on b a CompareAndSwap that also
// appends e to the audit log in the same statement, only if the swap
// happened, so that a renewal can send everything it writes in one round
// trip. The swapped account lands in *out when b runs; a moved version
// is ErrVersionConflict from the batch.
func (s *Accounts) QueueCompareAndSwapAudited(b *pgx.Batch, a Account, version int64, r Refreshed, e Event, out *Account) error {
	sql, args, err := s.swapStatement(a, version, r, &e)
	if err != nil {
		return err
	}
	b.Queue(sql, args...).QueryRow(func(row pgx.Row) error {
		acct, err := scanSwapped(row)
		*out = acct
		return err
	})
	return nil
}

func (s *Accounts) swap(ctx context.Context, db DB, a Account, version int64, r Refreshed, e *Event) (Account, error) {
	sql, args, err := s.swapStatement(a, version, r, e)
	if err != nil {
		return Account{}, err
	}
	return scanSwapped(db.QueryRow(ctx, sql, args...))
}

func scanSwapped(row pgx.Row) (Account, error) {
	acct, err := scanAccount(row)
	if errors.Is(err, pgx.ErrNoRows) {
		return Account{}, ErrVersionConflict
	}
	if err != nil {
		return Account{}, fmt.Errorf("swapping credentials: %w", err)
	}
	return acct, nil
}

// swapStatement builds the compare-and-swap, with the audit insert when e
// is set.
func (s *Accounts) swapStatement(a Account, version int64, r Refreshed, e *Event) (string, []any, error) {
	blob, err := s.seal(r.Credentials, a.ID, a.UserID, a.Platform)
	if err != nil {
		return "", nil, err
	}
	scopes := r.Scopes
	if scopes == nil {
		scopes = a.Scopes
	}
	// The plaintext goes to the server only for a row that gets it: bind
	// parameters can end up in the server's statement log.
	var plainAccess, plainRefresh *string
	if r.WritePlaintext {
		plainAccess, plainRefresh = nullString(r.Credentials.AccessToken.Reveal()), nullString(r.Credentials.RefreshToken.Reveal())
	}
	args := []any{a.ID, version, blob, int64(s.keys.PrimaryID()), nullTime(r.Credentials.Expiry), scopes, plainAccess, plainRefresh}
	update := `UPDATE social_accounts SET
			credentials_encrypted = $3, credentials_key_id = $4, credentials_version = credentials_version + 1,
			expires_at = $5, scopes = $6, status = 'connected', last_refreshed_at = now(), updated_at = now(),
			access_token = CASE WHEN $7::text IS NOT NULL AND connected_via = 'legacy' AND access_token IS NOT NULL
			                    THEN $7 ELSE access_token END,
			refresh_token = CASE WHEN $7::text IS NOT NULL AND connected_via = 'legacy' AND access_token IS NOT NULL
			                          AND $8::text IS NOT NULL THEN $8 ELSE refresh_token END
		WHERE id = $1 AND credentials_version = $2
		RETURNING ` + accountColumns
	sql := update
	if e != nil {
		// The audit row is inserted from the swap's result, so it exists
		// exactly when the swap happened.
		sql = `WITH swapped AS (` + update + `), audited AS (
				INSERT INTO credential_audit_log ` + auditColumns + `
				SELECT $9::uuid, $10::text, $11::text, $12::text, $13::text, $14::integer, $15::text, $16::text, $17::jsonb FROM swapped)
			SELECT * FROM swapped`
		args = append(args, e.args()...)
	}
	return sql, args, nil
}

func nullTime(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	return &t
}

func secretOf(s *string) secret.Value {
	if s == nil {
		return secret.Value{}
	}
	return secret.New(*s)
}
