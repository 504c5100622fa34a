package vault

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/credgate/credgate/secret"
)

// DefaultStateTTL is how long an OAuth state stays usable.
const DefaultStateTTL = 10 * time.Minute

// NewState is an OAuth flow being started.
type NewState struct {
	// State is the raw state sent to the provider; only its SHA-256 is
	// stored.
	State    secret.Value
	UserID   string
	Platform string
	// Flow is the rollout arm decided at start ("new"); the callback is
	// routed by it, never by a fresh flag evaluation.
	Flow string
	// Verifier is the PKCE code verifier, stored encrypted; empty for
	// platforms without PKCE.
	Verifier secret.Value
	// BrowserBinding is the value of the cookie set at start; only its
	// SHA-256 is stored.
	BrowserBinding secret.Value
	ReturnTo       string
	RedirectURI    string
	// TTL defaults to DefaultStateTTL.
	TTL time.Duration
}

// ConsumedState is a state row taken out of the table by Consume.
type ConsumedState struct {
	UserID      string
	Platform    string
	Flow        string
	Verifier    secret.Value
	ReturnTo    string
	RedirectURI string
	CreatedAt   time.Time
	// AccountID is the id of the user's account row for the platform when
	// the state was consumed ("" when there was none), read in the same
	// statement: the store seals the credentials for it without a round
	// trip of its own (Accounts.StoreConnect).
	AccountID string
	binding   []byte
}

// MatchesBrowser reports, in constant time, whether cookie is the binding
// cookie set when the flow started.
func (c ConsumedState) MatchesBrowser(cookie secret.Value) bool {
	if len(c.binding) == 0 {
		return false
	}
	h := sha256.Sum256([]byte(cookie.Reveal()))
	return subtle.ConstantTimeCompare(h[:], c.binding) == 1
}

// States stores single-use OAuth states in oauth_states.
type States struct {
	keys *Keyring
}

// NewStates returns the state store.
func NewStates(keys *Keyring) *States { return &States{keys: keys} }

// HashState is the oauth_states primary key for a raw state.
func HashState(state secret.Value) []byte {
	h := sha256.Sum256([]byte(state.Reveal()))
	return h[:]
}

func verifierBinding(hash []byte, userID, platform string) Binding {
	return Binding{Table: "oauth_states", Column: "code_verifier_encrypted", RowID: hex.EncodeToString(hash), UserID: userID, Platform: platform}
}

// Create stores a state row.
func (s *States) Create(ctx context.Context, db DB, n NewState) error {
	return s.create(ctx, db, n, nil)
}

// CreateAudited stores a state row and its audit row in one statement: one
// round trip, and both or neither (a statement is its own transaction).
func (s *States) CreateAudited(ctx context.Context, db DB, n NewState, e Event) error {
	if e.TraceID == "" {
		e.TraceID = TraceID(ctx)
	}
	return s.create(ctx, db, n, &e)
}

// stateInsert is the state row's INSERT; with an audit event it feeds a
// data-modifying CTE whose outer INSERT appends the audit row.
const stateInsert = `INSERT INTO oauth_states
			(state_hash, user_id, platform, flow, code_verifier_encrypted, browser_binding, return_to, redirect_uri, expires_at)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, now() + $9::interval)`

// stateInsertAudited is stateInsert whose row feeds the audit row's
// INSERT; the event's values follow stateInsert's nine.
var stateInsertAudited = `WITH state AS (` + stateInsert + ` RETURNING 1) ` + auditInsertFrom("state", 10)

func (s *States) create(ctx context.Context, db DB, n NewState, audit *Event) error {
	if n.State.IsZero() || n.UserID == "" || n.Platform == "" || n.RedirectURI == "" {
		return errors.New("creating oauth state: state, user, platform and redirect URI are required")
	}
	if n.TTL <= 0 {
		n.TTL = DefaultStateTTL
	}
	if n.Flow == "" {
		n.Flow = "new"
	}
	hash := HashState(n.State)
	var verifier []byte
	if !n.Verifier.IsZero() {
		var err error
		verifier, err = s.keys.Seal(PurposeVerifier, []byte(n.Verifier.Reveal()), verifierBinding(hash, n.UserID, n.Platform))
		if err != nil {
			return err
		}
	}
	var binding []byte
	if !n.BrowserBinding.IsZero() {
		binding = HashState(n.BrowserBinding)
	}
	args := make([]any, 0, 18)
	args = append(args, hash, n.UserID, n.Platform, n.Flow, verifier, binding, n.ReturnTo, n.RedirectURI, n.TTL)
	sql := stateInsert
	if audit != nil {
		sql = stateInsertAudited
		args = append(args, audit.args()...)
	}
	if _, err := db.Exec(ctx, sql, args...); err != nil {
		return fmt.Errorf("creating oauth state: %w", err)
	}
	return nil
}

// Consume takes a state out of the table: a state is usable once. The
// DELETE is a single statement, so of many concurrent callers exactly one
// gets the row. An expired row is deleted as well and reported as
// ErrStateExpired, with what the row knew (user, platform, flow, times)
// for the audit, but no verifier; an unknown or reused one is
// ErrStateNotFound.
func (s *States) Consume(ctx context.Context, db DB, state secret.Value) (ConsumedState, error) {
	hash := HashState(state)
	var c ConsumedState
	var verifier []byte
	var live bool
	// The DELETE commits without waiting for its WAL to reach the disk
	// (synchronous_commit off, for this transaction only): a fsync is
	// the larger part of what a commit costs PostgreSQL. What a crash in
	// the next fraction of a second could lose is the removal of a state
	// whose callback already came: the row would come back, still bound
	// to that user and browser, until it expires (its code is usually
	// spent by then). The flow's next write (the store, or the failed
	// connect's audit row) commits durably and so flushes it first. Taking the state once stays exact: a commit,
	// synchronous or not, is visible to every other transaction at once.
	// Called inside a caller's transaction (db a pgx.Tx), it would make
	// that whole transaction's commit asynchronous: the callback calls it
	// on the pool, on its own.
	err := db.QueryRow(ctx, `DELETE FROM oauth_states s
		WHERE state_hash = $1 AND set_config('synchronous_commit', 'off', true) IS NOT NULL
		RETURNING user_id::text, platform, flow, code_verifier_encrypted, browser_binding,
			coalesce(return_to, ''), redirect_uri, created_at, expires_at > now(),
			coalesce((SELECT a.id::text FROM social_accounts a WHERE a.user_id = s.user_id AND a.platform = s.platform), '')`, hash).
		Scan(&c.UserID, &c.Platform, &c.Flow, &verifier, &c.binding, &c.ReturnTo, &c.RedirectURI, &c.CreatedAt, &live, &c.AccountID)
	if errors.Is(err, pgx.ErrNoRows) {
		return ConsumedState{}, ErrStateNotFound
	}
	if err != nil {
		return ConsumedState{}, fmt.Errorf("consuming oauth state: %w", err)
	}
	if !live {
		c.binding, c.AccountID = nil, ""
		return c, ErrStateExpired
	}
	if verifier != nil {
		plain, _, err := s.keys.Open(PurposeVerifier, verifier, verifierBinding(hash, c.UserID, c.Platform))
		if err != nil {
			return ConsumedState{}, fmt.Errorf("decrypting pkce verifier: %w", err)
		}
		c.Verifier = secret.New(string(plain))
	}
	return c, nil
}

// CleanupExpired deletes expired states and returns how many it deleted
// (the guide's cleanupExpiredStates).
func (s *States) CleanupExpired(ctx context.Context, db DB) (int64, error) {
	tag, err := db.Exec(ctx, `DELETE FROM oauth_states WHERE expires_at <= now()`)
	if err != nil {
		return 0, fmt.Errorf("cleaning up oauth states: %w", err)
	}
	return tag.RowsAffected(), nil
}
