package vault

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/credgate/credgate/internal/appschema"
)

// Settings are the operator's decisions about sharing social_accounts
// with the unchanged app (credgate_settings, migration 006). They live in
// the database, not in the Caddyfile, because every replica and every
// command must act on the same answer: two replicas that disagreed on
// who renews the app's tokens would be the fight the settings prevent.
type Settings struct {
	// TransitionMode: connects and renewals through credgate also write
	// the app's plaintext columns (and its expiry column), so a back end
	// that still reads its own table keeps working for moved users. Off
	// by default: it puts tokens back in plaintext.
	TransitionMode bool
	// AppRefreshOff: the operator has said the app no longer renews the
	// tokens it stored, so credgate renews them too. Until then credgate
	// never renews a row the app owns: two renewers of one Twitter grant
	// lose it (X rotates refresh tokens).
	AppRefreshOff bool
	// AppExpiryColumn is the app's own column for when its access token
	// expires ("" when it has none), read wherever credgate takes a token
	// from the plaintext columns and written wherever it writes them.
	AppExpiryColumn string
	// PlatformNames are the app's own names for credgate's platforms,
	// where they differ (twitter → "x"): social_accounts.platform holds
	// the app's name, everything else of credgate's (providers, the
	// audit log, metrics, the blob's binding) the provider's.
	PlatformNames map[string]string
	// Columns are the names credgate's own columns have on the app's
	// table: expires_at, status and scopes are credgate_expires_at … where
	// the app had its own (migration 001). Not a setting but a fact of the
	// schema, read off the catalog with the settings, in the same round
	// trip, by every statement path that reads them.
	Columns appschema.Columns
}

// AppPlatform is the name the app stores for credgate's platform.
func (s Settings) AppPlatform(platform string) string {
	if name, ok := s.PlatformNames[platform]; ok {
		return name
	}
	return platform
}

// Platform is credgate's platform for a name the app stores.
func (s Settings) Platform(appName string) string {
	for platform, name := range s.PlatformNames {
		if name == appName {
			return platform
		}
	}
	return appName
}

// ParsePlatformNames reads "twitter=x,linkedin=li".
func ParsePlatformNames(value string) (map[string]string, error) {
	out := map[string]string{}
	seen := map[string]bool{}
	for _, pair := range strings.Split(value, ",") {
		if strings.TrimSpace(pair) == "" {
			continue
		}
		platform, name, ok := strings.Cut(pair, "=")
		platform, name = strings.TrimSpace(platform), strings.TrimSpace(name)
		if !ok || platform == "" || name == "" {
			return nil, fmt.Errorf("app platform names: %q is not platform=name", pair)
		}
		if seen[name] {
			return nil, fmt.Errorf("app platform names: %q names two platforms", name)
		}
		seen[name] = true
		out[platform] = name
	}
	return out, nil
}

// FormatPlatformNames writes names as ParsePlatformNames reads them, in
// a fixed order.
func FormatPlatformNames(names map[string]string) string {
	parts := make([]string, 0, len(names))
	for _, platform := range slices.Sorted(maps.Keys(names)) {
		parts = append(parts, platform+"="+names[platform])
	}
	return strings.Join(parts, ",")
}

// The setting names, as stored.
const (
	SettingTransitionMode   = "transition_mode"
	SettingAppRefresh       = "app_refresh"
	SettingAppExpiryColumn  = "app_expiry_column"
	SettingAppPlatformNames = "app_platform_names"
)

// ActionSetting: an operator changed a setting (details: name, value, by).
const ActionSetting Action = "setting_changed"

// movedColumn marks, in LoadSettings' answer, a row that names one of
// credgate's columns moved aside (not a setting: no setting has spaces).
const movedColumn = "moved column"

// LoadSettings reads the settings. Unset ones keep their defaults.
func LoadSettings(ctx context.Context, db DB) (Settings, error) {
	var s Settings
	var moved []string
	rows, err := db.Query(ctx, `SELECT name, value FROM credgate_settings
		UNION ALL SELECT '`+movedColumn+`', moved FROM (`+appschema.LoadSQL+`) AS m (moved)`)
	if err != nil {
		return s, fmt.Errorf("reading credgate_settings: %w", settingsErr(err))
	}
	defer rows.Close()
	for rows.Next() {
		var name, value string
		if err := rows.Scan(&name, &value); err != nil {
			return s, fmt.Errorf("reading credgate_settings: %w", err)
		}
		switch name {
		case movedColumn:
			moved = append(moved, value)
		case SettingTransitionMode:
			s.TransitionMode = value == "on"
		case SettingAppRefresh:
			s.AppRefreshOff = value == "off"
		case SettingAppExpiryColumn:
			s.AppExpiryColumn = value
		case SettingAppPlatformNames:
			names, err := ParsePlatformNames(value)
			if err != nil {
				return s, err
			}
			s.PlatformNames = names
		}
	}
	s.Columns = appschema.Of(moved)
	return s, rows.Err()
}

// settingsErr explains a missing table: the schema predates 006.
func settingsErr(err error) error {
	if pgErr, ok := errors.AsType[*pgconn.PgError](err); ok && pgErr.Code == "42P01" {
		return errors.New("credgate_settings does not exist: run `caddy credgate migrate up`")
	}
	return err
}

// SetSetting records one setting and its audit row, together.
func SetSetting(ctx context.Context, db DB, name, value, by string) error {
	return InTx(ctx, db, func(tx pgx.Tx) error {
		_, err := tx.Exec(ctx, `INSERT INTO credgate_settings (name, value, updated_by) VALUES ($1, $2, $3)
			ON CONFLICT (name) DO UPDATE SET value = EXCLUDED.value, updated_by = EXCLUDED.updated_by, updated_at = now()`,
			name, value, by)
		if err != nil {
			return fmt.Errorf("writing credgate_settings: %w", settingsErr(err))
		}
		return AppendAudit(ctx, tx, Event{Action: ActionSetting, Status: Success,
			Details: map[string]any{"name": name, "value": value, "by": by}})
	})
}

// CheckExpiryColumn verifies that social_accounts has column with a
// timestamp type, and that it is the app's (credgate's expires_at is
// not), so a setting can never name a column the statements would then
// fail on or write twice.
func CheckExpiryColumn(ctx context.Context, db DB, column string) error {
	var typ string
	var credgates bool
	err := db.QueryRow(ctx, `SELECT format_type(a.atttypid, a.atttypmod),
			coalesce(col_description(a.attrelid, a.attnum), '') LIKE 'credgate:%'
		FROM pg_attribute a
		WHERE a.attrelid = 'social_accounts'::regclass AND a.attname = $1 AND a.attnum > 0 AND NOT a.attisdropped`, column).Scan(&typ, &credgates)
	if errors.Is(err, pgx.ErrNoRows) {
		return fmt.Errorf("social_accounts has no column %q", column)
	}
	if err != nil {
		return fmt.Errorf("reading social_accounts' columns: %w", err)
	}
	if credgates {
		return fmt.Errorf("social_accounts.%s is credgate's own column, not the app's: name the column the app writes its token expiry to", column)
	}
	switch typ {
	case "timestamp with time zone", "timestamp without time zone":
		return nil
	}
	return fmt.Errorf("social_accounts.%s is %s; the app's expiry column must be a timestamp (timestamptz or timestamp)", column, typ)
}

// SettingsCache is LoadSettings for the request path: read at most once
// per TTL, and the last value read kept while the database does not
// answer, so a blip does not flip a replica's behaviour.
type SettingsCache struct {
	DB  DB
	TTL time.Duration

	mu      sync.Mutex
	val     Settings
	read    time.Time
	ok      bool
	reading bool
}

// DefaultSettingsTTL is how soon a replica acts on a changed setting.
const DefaultSettingsTTL = 2 * time.Second

// Get returns the settings, at most TTL old (older while a read is in
// flight or the database does not answer). An error is returned only
// when no value was ever read. The lock is not held across the query:
// a hung database must not queue every request behind it.
func (c *SettingsCache) Get(ctx context.Context) (Settings, error) {
	ttl := c.TTL
	if ttl <= 0 {
		ttl = DefaultSettingsTTL
	}
	c.mu.Lock()
	if c.ok && (time.Since(c.read) < ttl || c.reading) {
		v := c.val
		c.mu.Unlock()
		return v, nil
	}
	c.reading = true
	c.mu.Unlock()
	s, err := LoadSettings(ctx, c.DB)
	c.mu.Lock()
	defer c.mu.Unlock()
	c.reading = false
	if err != nil {
		if c.ok {
			return c.val, nil
		}
		return Settings{}, err
	}
	c.val, c.read, c.ok = s, time.Now(), true
	return s, nil
}

// Fixed returns a settings source that always answers s: for commands
// that load the settings once, and for tests.
func Fixed(s Settings) SettingsSource {
	return fixedSettings(s)
}

type fixedSettings Settings

func (f fixedSettings) Get(context.Context) (Settings, error) { return Settings(f), nil }

// SettingsSource is where the stores read the settings from.
type SettingsSource interface {
	Get(ctx context.Context) (Settings, error)
}
