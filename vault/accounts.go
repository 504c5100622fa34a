package vault

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/credgate/credgate/secret"

	"github.com/credgate/credgate/internal/appschema"
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

// ConnectedVia is who connected an account (the connected_via column):
// the app's own flow or credgate's. It is the rollout arm the account's
// credentials last came through, in the database's words: flags.ArmLegacy
// is ViaLegacy, flags.ArmNew is ViaCredgate. (The audit log's flow column
// and the metrics' flow label use the arm's own words, new and legacy.)
type ConnectedVia string

// The two ways an account is connected.
const (
	ViaLegacy   ConnectedVia = "legacy"
	ViaCredgate ConnectedVia = "credgate"
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
	ID              string       `json:"id"`
	UserID          string       `json:"user_id"`
	Platform        string       `json:"platform"`
	PlatformUserID  string       `json:"platform_user_id,omitempty"`
	Username        string       `json:"username,omitempty"`
	Status          Status       `json:"status"`
	ExpiresAt       *time.Time   `json:"expires_at"`
	Scopes          []string     `json:"scopes,omitempty"`
	LastRefreshedAt *time.Time   `json:"last_refreshed_at"`
	ConnectedVia    ConnectedVia `json:"connected_via"`
	// Version is credentials_version, the compare-and-swap guard.
	Version int64 `json:"-"`
	// KeyID is the key the blob is sealed with; nil without a blob.
	KeyID *uint32 `json:"-"`
	// Encrypted reports whether the account has a credential blob.
	Encrypted bool `json:"-"`
	// AppOwned: the app wrote the current token (a legacy row, or one
	// the app wrote again since credgate's last write). credgate renews
	// it only once the operator says the app's own refresh is off.
	AppOwned bool `json:"-"`
	// AppNewer: the current token is the one in the app's plaintext
	// columns, written by the app since credgate last saw them; the blob
	// holds an older one (the newest token wins).
	AppNewer  bool      `json:"-"`
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
	ConnectedVia   ConnectedVia
	// KnownID is the id the account row had when last seen
	// (ConsumedState.AccountID), or "" for none: StoreConnect seals for
	// it, or for a new id, without reading the row first.
	KnownID string
}

// Accounts stores credentials in social_accounts, encrypted with keys.
type Accounts struct {
	keys     *Keyring
	settings SettingsSource
	// outbox announces the account events the app's webhook wants; nil
	// (no webhook) announces none.
	outbox *Outbox
}

// NewAccounts returns the account store, with the default settings
// (transition mode off, the app renews its own rows, no app expiry
// column) until UseSettings names where to read them.
func NewAccounts(keys *Keyring) *Accounts {
	return &Accounts{keys: keys, settings: Fixed(Settings{})}
}

// UseSettings makes the store act on the operator's settings read from
// src (a SettingsCache in a running instance).
func (s *Accounts) UseSettings(src SettingsSource) { s.settings = src }

// UseOutbox makes every change the app's webhook wants to hear of write
// its event to o, in the same statement or transaction as the change.
func (s *Accounts) UseOutbox(o *Outbox) { s.outbox = o }

// Announce writes e to the outbox (when the webhook wants its kind), in
// the caller's transaction: for events the account's own changes do not
// write (a renewal job that gave up).
func (s *Accounts) Announce(ctx context.Context, db DB, e AccountEvent) error {
	return s.outbox.Append(ctx, db, e)
}

// Settings returns the settings the store acts on.
func (s *Accounts) Settings(ctx context.Context) (Settings, error) { return s.settings.Get(ctx) }

// accountColumns is what every read of an account scans. Like every
// statement on social_accounts that names expires_at, status or scopes,
// the statements it is in go through Settings.Columns.SQL, which fills
// in the names those columns have on the app's table (internal/appschema).
const accountColumns = `id::text, user_id::text, platform, coalesce(platform_user_id, ''), coalesce(username, ''),
	{status}, {expires_at}, coalesce({scopes}, '{}'), last_refreshed_at, connected_via, credentials_version,
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
		c.ConnectedVia = ViaCredgate
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
		settings, err := s.settings.Get(ctx)
		if err != nil {
			return Account{}, fmt.Errorf("storing credentials: %w", err)
		}
		err = tx.QueryRow(ctx, `INSERT INTO social_accounts (user_id, platform) VALUES ($1, $2)
			ON CONFLICT (user_id, platform) DO UPDATE SET updated_at = social_accounts.updated_at
			RETURNING id::text`, c.UserID, settings.AppPlatform(c.Platform)).Scan(&id)
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
	settings, err := s.settings.Get(ctx)
	if err != nil {
		return Account{}, fmt.Errorf("storing credentials: %w", err)
	}
	args := make([]any, 0, 20)
	args = append(args, id, c.UserID, settings.AppPlatform(c.Platform), blob, int64(s.keys.PrimaryID()), nullTime(c.Credentials.Expiry),
		c.Scopes, c.PlatformUserID, c.Username, c.ConnectedVia)
	// A connect (it has its audit row) is announced to the app's webhook,
	// from the row it wrote, in the same statement; a backfill is not.
	v := storeVariant{job: !jobAt.IsZero(), audit: audit != nil, announce: audit != nil && s.outbox.Wants(EventConnected)}
	if settings.TransitionMode {
		// Transition mode: the unchanged app reads its own columns, so
		// they get the new token too (and so do bind parameters, which
		// can reach the server's statement log: one reason it is opt-in).
		v.plaintext, v.expiryColumn = true, settings.AppExpiryColumn
		args = append(args, nullString(c.Credentials.AccessToken.Reveal()), nullString(c.Credentials.RefreshToken.Reveal()))
		if v.expiryColumn != "" {
			args = append(args, nullTime(c.Credentials.Expiry))
		}
	}
	if v.job {
		args = append(args, jobAt)
	}
	if audit != nil {
		e := audit(id)
		if e.TraceID == "" {
			e.TraceID = TraceID(ctx)
		}
		args = append(args, e.args()...)
	}
	if v.announce {
		data := map[string]any{"connected_via": string(c.ConnectedVia), "scopes": c.Scopes}
		if c.Scopes == nil {
			data["scopes"] = []string{}
		}
		e := AccountEvent{Kind: EventConnected, Platform: c.Platform, Data: data}.args()
		args = append(args, e[0], e[3], e[4]) // kind, platform, data: the statement takes the rest from the row

	}
	acct, err := scanAccount(db.QueryRow(ctx, settings.Columns.SQL(storeStatement(v)), args...))
	if errors.Is(err, pgx.ErrNoRows) || tookAnotherID(err) {
		return Account{}, errAnotherID
	}
	if err != nil {
		return Account{}, fmt.Errorf("storing credentials: %w", err)
	}
	acct.Platform = c.Platform
	return acct, nil
}

// storeVariant is which of the store statement's parts are in.
type storeVariant struct {
	job, audit bool
	// announce: the connect's account.connected event is written too.
	announce bool
	// plaintext: transition mode, the app's plaintext columns (and its
	// expiry column, when named) are written too.
	plaintext    bool
	expiryColumn string
}

// storeStatements caches storeStatement's answers.
var storeStatements sync.Map

// storeStatement is the store statement for v, built once: credentialUpsert's
// ten parameters, then the plaintext pair and the app's expiry (in
// transition mode), then the job's run time (with the job), then the
// audit event's (with the audit row), then the account.connected event's
// kind, platform and data (when announced). The job, the audit row and
// the event are written from the upserted row, so all are written or
// none.
func storeStatement(v storeVariant) string {
	if sql, ok := storeStatements.Load(v); ok {
		return sql.(string)
	}
	next := 11
	sql := `WITH account AS (` + credentialUpsert(v, &next) + `)`
	if v.job {
		sql += `, job AS (` + scheduleFrom(fmt.Sprintf("SELECT id, credentials_version, $%d::timestamptz FROM account", next)) + `)`
		next++
	}
	if v.audit {
		sql += `, audited AS (` + auditInsertFrom("account", next) + `)`
		next += 9
	}
	if v.announce {
		// The event's kind, platform and data are parameters; its
		// account and user come from the row written.
		sql += fmt.Sprintf(`, announced AS (INSERT INTO credgate_webhook_outbox `+outboxColumns+`
			SELECT $%d::text, id, user_id, $%d::text, $%d::jsonb FROM account)`, next, next+1, next+2)
	}
	// The row must have the id the blob was sealed for. A trigger of
	// the app's could give a new row another one; then the cast
	// below raises (at run time only, as it depends on the row) and
	// the statement writes nothing.
	sql += ` SELECT ` + accountColumns + ` FROM account
		WHERE CASE WHEN id = $1::uuid THEN true ELSE (id::text || '` + anotherIDMark + `')::boolean END`
	storeStatements.Store(v, sql)
	return sql
}

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
// Without transition mode the app's plaintext stays as it is and is
// recorded as seen: superseded by this connect, so it never reads as a
// newer token of the app's. *next is the first parameter after its own.
func credentialUpsert(v storeVariant, next *int) string {
	insertCols, insertVals := "", ""
	update := `app_token_fingerprint = credgate_app_token_fingerprint(s.access_token, s.refresh_token), app_token_current = false`
	if v.plaintext {
		access, refresh := fmt.Sprintf("$%d::text", *next), fmt.Sprintf("$%d::text", *next+1)
		*next += 2
		insertCols = `, access_token, refresh_token, app_token_fingerprint, app_token_current`
		insertVals = `, ` + access + `, ` + refresh + `, credgate_app_token_fingerprint(` + access + `, ` + refresh + `), true`
		update = `access_token = EXCLUDED.access_token, refresh_token = EXCLUDED.refresh_token,
			app_token_fingerprint = EXCLUDED.app_token_fingerprint, app_token_current = true`
		if v.expiryColumn != "" {
			col := pgx.Identifier{v.expiryColumn}.Sanitize()
			insertCols += `, ` + col
			insertVals += fmt.Sprintf(`, $%d::timestamptz`, *next)
			*next++
			update += `, ` + col + ` = EXCLUDED.` + col
		}
	}
	return `INSERT INTO social_accounts AS s (id, user_id, platform,
		credentials_encrypted, credentials_key_id, credentials_version, {status}, {expires_at}, {scopes},
		platform_user_id, username, connected_via, last_refreshed_at, updated_at` + insertCols + `)
	VALUES ($1, $2, $3, $4, $5, 1, 'connected', $6, $7, $8, $9, $10, NULL, now()` + insertVals + `)
	ON CONFLICT (user_id, platform) DO UPDATE SET
		credentials_encrypted = EXCLUDED.credentials_encrypted, credentials_key_id = EXCLUDED.credentials_key_id,
		credentials_version = s.credentials_version + 1, {status} = 'connected', {expires_at} = EXCLUDED.{expires_at},
		{scopes} = EXCLUDED.{scopes}, platform_user_id = EXCLUDED.platform_user_id, username = EXCLUDED.username,
		connected_via = EXCLUDED.connected_via, last_refreshed_at = NULL, updated_at = now(), ` + update + `
	WHERE s.id = $1::uuid
	RETURNING s.*`
}

// appNewerSQL is true on a row whose plaintext columns hold tokens
// credgate has not seen: the app wrote them after credgate's last write
// (app_token_fingerprint, migration 006). On a legacy row from before
// 006 (no fingerprint yet) it is true whenever there is plaintext, and
// the caller compares the plaintext with the blob.
const appNewerSQL = `(access_token IS NOT NULL AND app_token_fingerprint IS DISTINCT FROM credgate_app_token_fingerprint(access_token, refresh_token))`

// appExpirySQL reads the app's expiry column, or NULL without one. The
// name was checked against the table when it was set (CheckExpiryColumn)
// and is quoted here all the same.
func appExpirySQL(column string) string {
	if column == "" {
		return `NULL::timestamptz`
	}
	return pgx.Identifier{column}.Sanitize() + `::timestamptz`
}

// currentColumns follow accountColumns in every read that decides which
// token is current: the blob, the app's plaintext when it is newer, the
// app's expiry, whether there is plaintext at all, and whether it equals
// the blob.
func currentColumns(expiryColumn string) string {
	return `credentials_encrypted, CASE WHEN ` + appNewerSQL + ` THEN access_token END,
		CASE WHEN ` + appNewerSQL + ` THEN refresh_token END, ` + appExpirySQL(expiryColumn) + `,
		access_token IS NOT NULL, app_token_current`
}

// currentRow is a row read with currentColumns.
type currentRow struct {
	acct                  Account
	blob                  []byte
	appAccess, appRefresh *string
	appExpiry             *time.Time
	hasPlaintext, inSync  bool
}

func (r *currentRow) targets() []any {
	return []any{&r.blob, &r.appAccess, &r.appRefresh, &r.appExpiry, &r.hasPlaintext, &r.inSync}
}

// current decides which token of the row is current: the app's newer
// plaintext, else the blob. A blob that does not open is an error unless
// the app's newer token replaces it.
func (s *Accounts) current(r currentRow) (Account, Credentials, error) {
	a := r.acct
	a.AppOwned = a.ConnectedVia == ViaLegacy
	var blobCreds Credentials
	var blobErr error
	if r.blob != nil {
		blobCreds, _, blobErr = s.open(r.blob, a.ID, a.UserID, a.Platform)
	}
	// A row credgate never sealed is the legacy flow's alone: served
	// only through LegacyToken (the token API's serve_legacy_plaintext).
	if r.blob != nil && r.appAccess != nil && *r.appAccess != "" {
		plain := plaintextRow{access: r.appAccess, refresh: r.appRefresh}
		if blobErr != nil || !plain.matches(blobCreds) {
			c := plain.credentials()
			if r.appExpiry != nil {
				c.Expiry = *r.appExpiry
			}
			a.AppOwned, a.AppNewer = true, true
			a.ExpiresAt = r.appExpiry
			// The app wrote a token: whatever credgate recorded before
			// (disconnected, needs_reauth), the app has it connected.
			a.Status = StatusConnected
			return a, c, nil
		}
	}
	if r.blob == nil || a.Status == StatusDisconnected {
		return a, Credentials{}, ErrNotConnected
	}
	if blobErr != nil {
		return a, Credentials{}, fmt.Errorf("decrypting credentials of account %s: %w", a.ID, blobErr)
	}
	return a, blobCreds, nil
}

// Get returns the account and its current credentials: the app's
// plaintext when the app wrote a newer token than the blob's (then
// Account.AppNewer), else the blob's. An account with no blob and no
// newer plaintext, or a disconnected one, is ErrNotConnected.
func (s *Accounts) Get(ctx context.Context, db DB, userID, platform string) (Account, Credentials, error) {
	settings, err := s.settings.Get(ctx)
	if err != nil {
		return Account{}, Credentials{}, err
	}
	a, c, _, err := s.get(ctx, db, settings, `WHERE user_id = $1 AND platform = $2`, userID, settings.AppPlatform(platform))
	return a, c, err
}

// GetByID is Get by social_accounts.id, for the refresh worker.
func (s *Accounts) GetByID(ctx context.Context, db DB, id string) (Account, Credentials, error) {
	settings, err := s.settings.Get(ctx)
	if err != nil {
		return Account{}, Credentials{}, err
	}
	a, c, _, err := s.get(ctx, db, settings, `WHERE id = $1`, id)
	return a, c, err
}

// Renewable is an account locked for renewal.
type Renewable struct {
	Account     Account
	Credentials Credentials
	// AppReadsPlaintext: the app's plaintext columns hold the current
	// token (a legacy row the app reads, a row written back or adopted)
	// or transition mode is on: a renewal writes its new tokens to the
	// plaintext columns too, or the unchanged app would go on with a
	// superseded one.
	AppReadsPlaintext bool
	// Settings are the settings the lock was taken under.
	Settings Settings
}

// LockForRenewal reads an account and locks its row until tx ends, so two
// renewals of one token never run at once. The lock is FOR NO KEY UPDATE:
// it still lets another transaction insert a refresh job referencing the
// row (a foreign-key check takes KEY SHARE), which FOR UPDATE would block
// for the whole platform call — and deadlock against this transaction's
// own job insert.
//
// When the app wrote a newer token than the blob's (it refreshed the
// token itself, or the user reconnected through the legacy flow), the
// app's token is the current one and is returned (Account.AppNewer).
func (s *Accounts) LockForRenewal(ctx context.Context, tx pgx.Tx, id string) (Renewable, error) {
	settings, err := s.settings.Get(ctx)
	if err != nil {
		return Renewable{}, err
	}
	a, c, row, err := s.get(ctx, tx, settings, `WHERE id = $1 FOR NO KEY UPDATE`, id)
	r := Renewable{Account: a, Credentials: c, Settings: row.settings}
	if err != nil {
		return r, err
	}
	r.AppReadsPlaintext = row.settings.TransitionMode || a.AppNewer ||
		(row.hasPlaintext && (row.inSync || a.ConnectedVia == ViaLegacy))
	return r, nil
}

// readRow is what get read besides the account and its credentials.
type readRow struct {
	currentRow
	settings Settings
}

// get reads the row where picks and decides its current token, under
// the caller's settings (read once per call).
func (s *Accounts) get(ctx context.Context, db DB, settings Settings, where string, args ...any) (Account, Credentials, readRow, error) {
	row := readRow{settings: settings}
	var err error
	row.acct, err = scanAccountWith(db.QueryRow(ctx, settings.Columns.SQL(`SELECT `+accountColumns+`, `+currentColumns(settings.AppExpiryColumn)+
		` FROM social_accounts `+where), args...), row.targets()...)
	if errors.Is(err, pgx.ErrNoRows) {
		return Account{}, Credentials{}, row, ErrNotConnected
	}
	if err != nil {
		return Account{}, Credentials{}, row, fmt.Errorf("reading account: %w", err)
	}
	// Everything of credgate's, the blob's binding included, names the
	// provider's platform; the row holds the app's name for it.
	row.acct.Platform = settings.Platform(row.acct.Platform)
	a, c, err := s.current(row.currentRow)
	return a, c, row, err
}

// LegacyToken returns the access token the legacy app stored in plaintext
// for (user, platform), for a token API that may serve rows not yet
// backfilled, with the app's expiry when its expiry column is set.
// ErrNotConnected when the row has none, or is disconnected and the app
// has not written a token since.
func (s *Accounts) LegacyToken(ctx context.Context, db DB, userID, platform string) (Account, secret.Value, error) {
	settings, err := s.settings.Get(ctx)
	if err != nil {
		return Account{}, secret.Value{}, err
	}
	var token *string
	var expiry *time.Time
	var newer bool
	a, err := scanAccountWith(db.QueryRow(ctx, settings.Columns.SQL(`SELECT `+accountColumns+`, access_token, `+appExpirySQL(settings.AppExpiryColumn)+
		`, `+appNewerSQL+` FROM social_accounts WHERE user_id = $1 AND platform = $2`), userID, settings.AppPlatform(platform)), &token, &expiry, &newer)
	if errors.Is(err, pgx.ErrNoRows) {
		return Account{}, secret.Value{}, ErrNotConnected
	}
	if err != nil {
		return Account{}, secret.Value{}, fmt.Errorf("reading account: %w", err)
	}
	if token == nil || *token == "" || (a.Status == StatusDisconnected && !newer) {
		return a, secret.Value{}, ErrNotConnected
	}
	a.Platform = settings.Platform(a.Platform)
	a.AppOwned, a.AppNewer, a.Status = true, newer, StatusConnected
	if expiry != nil {
		a.ExpiresAt = expiry
	}
	return a, secretOf(token), nil
}

// List returns a user's accounts, including rows the legacy app wrote,
// without any secret.
func (s *Accounts) List(ctx context.Context, db DB, userID string) ([]Account, error) {
	settings, err := s.settings.Get(ctx)
	if err != nil {
		return nil, err
	}
	rows, err := db.Query(ctx, settings.Columns.SQL(`SELECT `+accountColumns+` FROM social_accounts WHERE user_id = $1 ORDER BY platform`), userID)
	if err != nil {
		return nil, fmt.Errorf("listing accounts: %w", err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (Account, error) {
		a, err := scanAccount(r)
		a.Platform = settings.Platform(a.Platform)
		return a, err
	})
	if err != nil {
		return nil, fmt.Errorf("listing accounts: %w", err)
	}
	return out, nil
}

// Opened is an account as a token read finds it: the account its
// current token belongs to (Get's view: the app's newer plaintext, else
// the blob), and Err when there is no token to read: ErrNotConnected, or
// an error wrapping ErrDecryptionFailed, ErrUnknownKey or
// ErrMalformedBlob for a blob that does not open.
type Opened struct {
	Account Account
	Err     error
}

// ListOpened returns a user's accounts, each opened as Get opens it (the
// blob decrypted with the key id its header names, whatever the key id
// column says), in one statement; no secret leaves it. For the health
// check, which must report what a token read would find.
func (s *Accounts) ListOpened(ctx context.Context, db DB, userID string) ([]Opened, error) {
	settings, err := s.settings.Get(ctx)
	if err != nil {
		return nil, err
	}
	rows, err := db.Query(ctx, settings.Columns.SQL(`SELECT `+accountColumns+`, `+currentColumns(settings.AppExpiryColumn)+
		` FROM social_accounts WHERE user_id = $1 ORDER BY platform`), userID)
	if err != nil {
		return nil, fmt.Errorf("listing accounts: %w", err)
	}
	defer rows.Close()
	var out []Opened
	for rows.Next() {
		var r currentRow
		if r.acct, err = scanAccountWith(rows, r.targets()...); err != nil {
			return nil, fmt.Errorf("listing accounts: %w", err)
		}
		r.acct.Platform = settings.Platform(r.acct.Platform)
		a, _, err := s.current(r)
		out = append(out, Opened{Account: a, Err: err})
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("listing accounts: %w", err)
	}
	return out, nil
}

// CountByStatus counts the accounts of each of platforms (credgate's
// names for them) by status, in one statement; a platform or status with
// no rows is absent. The rows hold the app's names for the platforms
// (Settings.AppPlatform), mapped both ways here.
func (s *Accounts) CountByStatus(ctx context.Context, db DB, platforms []string) (map[string]map[Status]int64, error) {
	settings, err := s.settings.Get(ctx)
	if err != nil {
		return nil, err
	}
	appNames := make([]string, 0, len(platforms))
	for _, p := range platforms {
		appNames = append(appNames, settings.AppPlatform(p))
	}
	rows, err := db.Query(ctx, settings.Columns.SQL(`SELECT platform, {status}, count(*) FROM social_accounts
		WHERE platform = ANY($1) GROUP BY 1, 2`), appNames)
	if err != nil {
		return nil, fmt.Errorf("counting accounts: %w", err)
	}
	out := map[string]map[Status]int64{}
	_, err = pgx.CollectRows(rows, func(r pgx.CollectableRow) (struct{}, error) {
		var platform, status string
		var n int64
		if err := r.Scan(&platform, &status, &n); err != nil {
			return struct{}{}, err
		}
		platform = settings.Platform(platform)
		if out[platform] == nil {
			out[platform] = map[Status]int64{}
		}
		out[platform][Status(status)] += n
		return struct{}{}, nil
	})
	if err != nil {
		return nil, fmt.Errorf("counting accounts: %w", err)
	}
	return out, nil
}

// MarkExpiring sets status expiring on account a, whose token only the
// user can renew and which ends at expiresAt, and announces it
// (account.expiring) when the status changed: a second look at an
// account already expiring says nothing new.
func (s *Accounts) MarkExpiring(ctx context.Context, db DB, a Account, expiresAt time.Time) error {
	return s.markStatus(ctx, db, a, StatusExpiring, AccountEvent{Kind: EventExpiring,
		Data: map[string]any{"expires_at": expiresAt.UTC().Format(time.RFC3339)}})
}

// MarkNeedsReauth sets status needs_reauth on account a: only the user
// can make it work again, for reason (needs_reauth, or the platform's
// code). It announces account.revoked when the platform refused the
// grant (invalid_grant), account.needs_reauth otherwise, when the status
// changed.
func (s *Accounts) MarkNeedsReauth(ctx context.Context, db DB, a Account, reason string) error {
	kind := EventNeedsReauth
	if reason == "invalid_grant" {
		kind = EventRevoked
	}
	return s.markStatus(ctx, db, a, StatusNeedsReauth, AccountEvent{Kind: kind, Data: map[string]any{"reason": reason}})
}

// markStatus sets a's status and, when it was another, writes event e
// for a in the same transaction.
func (s *Accounts) markStatus(ctx context.Context, db DB, a Account, status Status, e AccountEvent) error {
	settings, err := s.settings.Get(ctx)
	if err != nil {
		return err
	}
	// Only a change is written, and only a change is announced. The
	// condition is on the updated row, which PostgreSQL checks again on
	// the newest version when the statement had to wait for a concurrent
	// change (a self-join's copy would keep the old one: two marks, or a
	// reconnect meanwhile, would then announce twice or not at all).
	tag, err := db.Exec(ctx, settings.Columns.SQL(`UPDATE social_accounts SET {status} = $2, updated_at = now()
		WHERE id = $1 AND {status} IS DISTINCT FROM $2`), a.ID, status)
	if err != nil {
		return fmt.Errorf("marking account %s: %w", a.ID, err)
	}
	if tag.RowsAffected() == 0 {
		var exists bool
		if err := db.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM social_accounts WHERE id = $1)`, a.ID).Scan(&exists); err != nil {
			return fmt.Errorf("marking account %s: %w", a.ID, err)
		}
		if !exists {
			return ErrNotConnected
		}
		return nil // already so: nothing new to say
	}
	e.AccountID, e.UserID, e.Platform = a.ID, a.UserID, a.Platform
	return s.outbox.Append(ctx, db, e)
}

// Disconnect wipes the account's credentials, the legacy plaintext columns
// included (the app must not keep using a token the user withdrew), and
// sets status disconnected. The row stays, so history and the audit trail
// keep their subject. It announces account.disconnected in a second
// statement: run it in the transaction of the disconnect's audit row.
func (s *Accounts) Disconnect(ctx context.Context, db DB, userID, platform string) (Account, error) {
	settings, err := s.settings.Get(ctx)
	if err != nil {
		return Account{}, err
	}
	acct, err := scanAccount(db.QueryRow(ctx, settings.Columns.SQL(`UPDATE social_accounts SET
			credentials_encrypted = NULL, credentials_key_id = NULL, access_token = NULL, refresh_token = NULL,
			app_token_fingerprint = NULL, app_token_current = false,
			credentials_version = credentials_version + 1, {status} = 'disconnected', {expires_at} = NULL, updated_at = now()
		WHERE user_id = $1 AND platform = $2 AND {status} <> 'disconnected'
		RETURNING `+accountColumns), userID, settings.AppPlatform(platform)))
	if errors.Is(err, pgx.ErrNoRows) {
		return Account{}, ErrNotConnected
	}
	if err != nil {
		return Account{}, fmt.Errorf("disconnecting: %w", err)
	}
	acct.Platform = platform
	if err := s.outbox.Append(ctx, db, AccountEvent{Kind: EventDisconnected, AccountID: acct.ID, UserID: acct.UserID, Platform: platform}); err != nil {
		return Account{}, fmt.Errorf("disconnecting: %w", err)
	}
	return acct, nil
}

// Refreshed is the result of a token refresh, applied with CompareAndSwap.
type Refreshed struct {
	Credentials Credentials
	Scopes      []string
	// WritePlaintext also writes the tokens to the app's plaintext
	// columns (see Renewable.AppReadsPlaintext), and to the app's expiry
	// column when ExpiryColumn names one; otherwise the tokens never
	// leave this process unencrypted.
	WritePlaintext bool
	ExpiryColumn   string
	// Columns are the names credgate's columns have on the table
	// (Settings.Columns, as the renewal's lock read them).
	Columns appschema.Columns
	// Adopted: the renewed token was the app's newer one (Account.AppNewer):
	// the row becomes the app's again (connected_via legacy), so that
	// credgate does not renew it while the app still does.
	Adopted bool
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
		acct, err := scanSwapped(row, a.Platform)
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
	return scanSwapped(db.QueryRow(ctx, sql, args...), a.Platform)
}

// scanSwapped reads a swapped row. Its platform column holds the app's
// name for it; the account gets the provider's, platform.
func scanSwapped(row pgx.Row, platform string) (Account, error) {
	acct, err := scanAccount(row)
	acct.Platform = platform
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
	args := []any{a.ID, version, blob, int64(s.keys.PrimaryID()), nullTime(r.Credentials.Expiry), scopes}
	// The plaintext goes to the server only for a row that gets it: bind
	// parameters can end up in the server's statement log. The decision
	// was made under the row lock (LockForRenewal), so it still holds.
	plaintext := `app_token_current = false`
	if r.WritePlaintext {
		args = append(args, nullString(r.Credentials.AccessToken.Reveal()), nullString(r.Credentials.RefreshToken.Reveal()))
		// A platform that keeps the refresh token leaves the app's.
		plaintext = `access_token = $7::text, refresh_token = coalesce($8::text, refresh_token),
			app_token_fingerprint = credgate_app_token_fingerprint($7::text, coalesce($8::text, refresh_token)), app_token_current = true`
		if r.ExpiryColumn != "" {
			args = append(args, nullTime(r.Credentials.Expiry))
			plaintext += `, ` + pgx.Identifier{r.ExpiryColumn}.Sanitize() + ` = $9::timestamptz`
		}
	}
	if r.Adopted {
		plaintext += `, connected_via = 'legacy'`
	}
	update := `UPDATE social_accounts SET
			credentials_encrypted = $3, credentials_key_id = $4, credentials_version = credentials_version + 1,
			{expires_at} = $5, {scopes} = $6, {status} = 'connected', last_refreshed_at = now(), updated_at = now(),
			` + plaintext + `
		WHERE id = $1 AND credentials_version = $2
		RETURNING ` + accountColumns
	sql := update
	if e != nil {
		// The audit row is inserted from the swap's result, so it exists
		// exactly when the swap happened.
		sql = `WITH swapped AS (` + update + `), audited AS (` + auditInsertFrom("swapped", len(args)+1) + `)
			SELECT * FROM swapped`
		args = append(args, e.args()...)
	}
	return r.Columns.SQL(sql), args, nil
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
