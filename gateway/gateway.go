// Package gateway serves the routes credgate owns on the app's public
// origin: the new flow's start and callback, a user's status, disconnect
// and health check, the rollout's decision for a connect, and the admin
// cleanup and rollout routes (Route lists them all). It also makes the
// decisions the app's own routes need (DecideConnect, DecidedLegacy,
// LegacyOutcome) while caddymodule's credgate handler stands in front of
// them. The handlers are plain net/http; caddymodule provisions a Gateway
// from the Caddyfile and the credgate app, and serves service-health,
// which reads the instance's own state (ServiceHealth).
package gateway

import (
	"context"
	"maps"
	"net/http"
	"regexp"
	"slices"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"go.opentelemetry.io/otel/trace"
	"go.uber.org/zap"

	"github.com/credgate/credgate/answer"
	"github.com/credgate/credgate/connect"
	"github.com/credgate/credgate/flags"
	"github.com/credgate/credgate/guard"
	"github.com/credgate/credgate/identity"
	"github.com/credgate/credgate/internal/ratelimit"
	"github.com/credgate/credgate/oauth"
	"github.com/credgate/credgate/secret"
	"github.com/credgate/credgate/telemetry"
	"github.com/credgate/credgate/vault"
)

// Gateway is one credgate handler's routes. Its fields are set once,
// before the first request, and not changed after.
type Gateway struct {
	// The handler's options (caddymodule.Handler documents each).
	PublicOrigin    string
	ReturnToAllow   []string // at least one prefix
	LoginURL        string
	LegacyOff       bool
	LegacyReturnTo  string
	LegacyError     *regexp.Regexp
	StateTTL        time.Duration
	DecisionTimeout time.Duration
	StartLimit      *ratelimit.Limiter // nil when off
	AdminToken      secret.Value

	// Providers are the configured platforms, with their callbacks on
	// PublicOrigin; LegacyStarts are the app's connect routes credgate
	// stands in front of, by path.
	Providers    map[string]*oauth.Provider
	LegacyStarts map[string]*oauth.Provider

	Flows    *connect.Flows
	Accounts *vault.Accounts
	Keys     *vault.Keyring
	DB       *pgxpool.Pool
	Rollout  *flags.Rollout
	Metrics  *telemetry.Metrics
	Tracer   trace.Tracer
	Answers  answer.Tracker
	Logger   *zap.Logger
	// IdentityWatch is the connect route's last minute of identity
	// results (the warning, service-health).
	IdentityWatch *identity.Watch

	// ReadIdentity reads the request's user; nil when no identity is
	// configured (every request is then signed out).
	ReadIdentity func(w http.ResponseWriter, r *http.Request, mode identity.Mode) identity.Identity
	// Available says the credential storage can be used now.
	Available func() bool
	// Now is credgate's clock.
	Now func() time.Time
	// Halted says the rollout guard holds platform's new starts.
	Halted func(platform string) bool
	// InForceRecently is what the flags put in force for platform, read
	// at most every few seconds.
	InForceRecently func(ctx context.Context, platform string) flags.InForce

	// Guard is the rollout guard, nil when it is off.
	Guard *guard.Guard
	// ExactPercentages replaces sampled percentages in a rollout status
	// with the flag file's rule, when the source is a flag file.
	ExactPercentages func(ctx context.Context, status []guard.RolloutStatus)

	// ServiceHealth is GET /api/credentials/service-health, which reads
	// the instance's own state: the credgate handler serves it, behind
	// AdminAllowed.
	ServiceHealth http.HandlerFunc
}

// platforms are the configured platform names, sorted.
func (g *Gateway) platforms() []string { return slices.Sorted(maps.Keys(g.Providers)) }
