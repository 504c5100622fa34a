package caddymodule

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/credgate/credgate/report"
	"github.com/credgate/credgate/secret"
	"github.com/credgate/credgate/vault"
	"github.com/credgate/credgate/webhook"
)

// WebhookConfig is where credgate tells the app about its users'
// accounts (docs/webhooks.md): signed POSTs from an outbox in
// PostgreSQL, at least once, in order per account.
type WebhookConfig struct {
	// URL receives the events (http or https). Required.
	URL string `json:"url,omitempty"`
	// Secret signs every delivery (HMAC-SHA256), at least 24
	// characters; use a placeholder such as {env.CREDGATE_WEBHOOK_SECRET}.
	// Required.
	Secret string `json:"secret,omitempty"`
	// PreviousSecrets sign each delivery too, while the app moves to a
	// new secret (one v1= signature per secret). Default none.
	PreviousSecrets []string `json:"previous_secrets,omitempty"`
	// Events are the kinds sent ("connected" or "account.connected", …).
	// Default: all six. Kinds not listed are never written.
	Events []string `json:"events,omitempty"`
	// Timeout bounds one delivery attempt. Default 10s.
	Timeout caddy.Duration `json:"timeout,omitempty"`
	// RetryFor is how long after an event it is still retried; then it
	// is kept as failed. Default 24h.
	RetryFor caddy.Duration `json:"retry_for,omitempty"`
	// FirstRetry and MaxRetry bound the backoff between attempts (it
	// doubles from the first to the max). Default 5s and 1m.
	FirstRetry caddy.Duration `json:"first_retry,omitempty"`
	MaxRetry   caddy.Duration `json:"max_retry,omitempty"`
	// PollInterval is how often each instance looks for due events.
	// Default 1s.
	PollInterval caddy.Duration `json:"poll_interval,omitempty"`
}

// parseWebhook reads the webhook option:
//
//	webhook <url> {
//		secret          <secret>          # required, 24+ characters
//		previous_secret <secret>          # also signed with, during a rotation (repeatable)
//		events          <kind…>           # default all: connected disconnected expiring needs_reauth revoked refresh_failed
//		timeout         <duration>        # default 10s
//		retry_for       <duration>        # default 24h, then kept as failed
//		retry_backoff   <first> <max>     # default 5s 1m
//		poll_interval   <duration>        # default 1s
//	}
func parseWebhook(d *caddyfile.Dispenser) (*WebhookConfig, error) {
	w := new(WebhookConfig)
	if !d.AllArgs(&w.URL) {
		return nil, d.Err("credgate: webhook takes the URL that receives the events, then a block with its secret")
	}
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		opt := d.Val()
		switch opt {
		case "secret":
			if !d.AllArgs(&w.Secret) {
				return nil, d.ArgErr()
			}
		case "previous_secret":
			var s string
			if !d.AllArgs(&s) {
				return nil, d.ArgErr()
			}
			w.PreviousSecrets = append(w.PreviousSecrets, s)
		case "events":
			w.Events = d.RemainingArgs()
			if len(w.Events) == 0 {
				return nil, d.ArgErr()
			}
			for _, e := range w.Events {
				if _, err := vault.ParseAccountEventKind(e); err != nil {
					return nil, d.Errf("credgate: webhook events: %v", err)
				}
			}
		case "timeout", "retry_for", "poll_interval":
			dur, err := parseDurationArg(d, "webhook "+opt)
			if err != nil {
				return nil, err
			}
			*map[string]*caddy.Duration{"timeout": &w.Timeout, "retry_for": &w.RetryFor, "poll_interval": &w.PollInterval}[opt] = caddy.Duration(dur)
		case "retry_backoff":
			var first, most string
			if !d.AllArgs(&first, &most) {
				return nil, d.Err("credgate: webhook retry_backoff takes the first wait and the longest, e.g. `retry_backoff 5s 1m`")
			}
			f, err1 := caddy.ParseDuration(first)
			m, err2 := caddy.ParseDuration(most)
			if err1 != nil || err2 != nil || f <= 0 || m < f {
				return nil, d.Errf("credgate: webhook retry_backoff needs two positive durations, the second at least the first; got %q %q", first, most)
			}
			w.FirstRetry, w.MaxRetry = caddy.Duration(f), caddy.Duration(m)
		default:
			return nil, d.Errf("credgate: unrecognized webhook option %q", opt)
		}
	}
	return w, nil
}

// webhookRun is a configured webhook, ready to deliver.
type webhookRun struct {
	cfg       *WebhookConfig
	deliverer *webhook.Deliverer
	// target is the URL without its query or credentials, for
	// service-health and logs.
	target string
}

// provisionWebhook checks the webhook option and makes the account store
// write the events it subscribes to.
func (a *App) provisionWebhook(ctx caddy.Context, repl *caddy.Replacer) error {
	if a.Webhook == nil {
		return nil
	}
	w := a.Webhook
	a.warnLiteral("credgate webhook", "secret", w.Secret)
	for _, s := range w.PreviousSecrets {
		a.warnLiteral("credgate webhook", "previous_secret", s)
	}
	raw := repl.ReplaceKnown(w.URL, "")
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		// Not the URL itself: its query may hold a key of the app's.
		return fmt.Errorf("credgate: webhook: the URL is not an absolute http or https URL (scheme %q)", schemeOf(raw))
	}
	secrets := []secret.Value{}
	for i, s := range append([]string{w.Secret}, w.PreviousSecrets...) {
		option := "secret"
		if i > 0 {
			option = "previous_secret"
		}
		v := repl.ReplaceKnown(s, "")
		switch {
		case v == "" && i == 0:
			return fmt.Errorf("credgate: webhook: secret is required (the app verifies each delivery with it); e.g. secret {env.CREDGATE_WEBHOOK_SECRET}, 24 characters or more")
		case len(v) < webhook.MinSecretLength:
			return fmt.Errorf("credgate: webhook: %s is shorter than %d characters", option, webhook.MinSecretLength)
		}
		a.run.exposure.NoteSecret("credgate webhook", option, v, 0)
		secrets = append(secrets, secret.New(v))
	}
	kinds := []vault.AccountEventKind{}
	for _, e := range w.Events {
		k, err := vault.ParseAccountEventKind(e)
		if err != nil {
			return fmt.Errorf("credgate: webhook events: %w", err)
		}
		kinds = append(kinds, k)
	}
	outbox := vault.NewOutbox(kinds...)
	a.accounts.UseOutbox(outbox)
	events := make([]string, len(vault.AccountEventKinds))
	for i, k := range vault.AccountEventKinds {
		events[i] = string(k)
	}
	outcomes := make([]string, len(webhook.Outcomes))
	for i, o := range webhook.Outcomes {
		outcomes[i] = string(o)
	}
	a.metrics.PrepareWebhooks(events, outcomes)
	target := *u
	target.User, target.RawQuery, target.Fragment = nil, "", ""
	a.webhook = &webhookRun{cfg: w, target: target.String(), deliverer: &webhook.Deliverer{
		Outbox: outbox, DB: a.pool, URL: raw, Secrets: secrets,
		Timeout: time.Duration(w.Timeout), RetryFor: time.Duration(w.RetryFor),
		FirstRetry: time.Duration(w.FirstRetry), MaxRetry: time.Duration(w.MaxRetry),
		Name: instanceName(),
		Observe: func(kind vault.AccountEventKind, outcome webhook.Outcome, took time.Duration) {
			a.metrics.WebhookDelivery(string(kind), string(outcome), took)
		},
	}}
	if registry := ctx.GetMetricsRegistry(); registry != nil {
		if err := registry.Register(webhook.OutboxGauges(a.webhook.deliverer.Outbox, a.pool, a.now, a.Available)); err != nil {
			if _, ok := errors.AsType[prometheus.AlreadyRegisteredError](err); !ok {
				return fmt.Errorf("credgate: webhook metrics: %w", err)
			}
		}
	}
	return nil
}

// checkWebhookOutbox refuses a webhook whose outbox table is missing:
// every connect would fail on it (migration 009 not applied yet).
func (a *App) checkWebhookOutbox(ctx context.Context) error {
	if a.webhook == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	if err := vault.CheckOutbox(ctx, a.pool); err != nil {
		return fmt.Errorf("webhook: %w", err)
	}
	return nil
}

// webhookHealth is the webhook's part of service-health
// (report.WebhookHealth).
func (a *App) webhookHealth(ctx context.Context, dbOK bool) map[string]any {
	if a.webhook == nil {
		return map[string]any{"configured": false}
	}
	return report.WebhookHealth(ctx, a.pool, a.webhook.deliverer.Outbox, a.webhook.target, a.now(), dbOK)
}

// schemeOf is what comes before "://" in raw, if that is short and
// plain, for an error that must not repeat the rest.
func schemeOf(raw string) string {
	scheme, _, ok := strings.Cut(raw, "://")
	if !ok || len(scheme) > 10 || strings.ContainsAny(scheme, "?#@/ ") {
		return ""
	}
	return scheme
}
