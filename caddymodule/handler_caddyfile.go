package caddymodule

import (
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
)

func init() {
	httpcaddyfile.RegisterHandlerDirective("credgate", parseHandlerDirective)
	// Right after the auth directives (basic_auth, forward_auth: an
	// identity placeholder such as {http.auth.user.id} is set by then)
	// and before templates, handle, route, respond and reverse_proxy, so
	// that no catch-all in the site block shadows credgate's routes.
	httpcaddyfile.RegisterDirectiveOrder("credgate", httpcaddyfile.After, "forward_auth")
}

// UnmarshalCaddyfile reads the credgate directive, for a site
// (parseHandlerDirective) and for caddyfile.UnmarshalModule alike:
//
//	credgate {
//		public_origin   <origin>                 # required: https://app.example.com
//		identity {
//			supabase    <project_url> {          # the session cookie @supabase/ssr writes
//				publishable_key <key>            # (or anon_key) lets credgate refresh an expired session
//				auth_url        <url>            # default <project_url>/auth/v1
//				cookie          <name>           # default sb-<ref>-auth-token
//				refuse_anonymous                 # anonymous sign-ins are no user
//				cookie_domain   <domain>         # the app's cookieOptions.domain; default host-only
//				cookie_secure                    # the app's cookieOptions.secure; default off
//			}
//			jwt_secret  <secret>                 # HS256, and/or:
//			jwks_url    <url>                    # RS256/ES256 by key id (default with supabase: the project's), or:
//			placeholder {http.auth.user.id}      # another Caddy auth module
//			cookie      <name>                   # default sb-access-token (none with supabase)
//			no_header                            # do not read Authorization: Bearer
//			claim       <name>                   # default sub
//			issuer      <iss>
//			audience    <aud>
//		}
//		return_to_allow <path prefix…>           # default /
//		login_url       <url>
//		admin_token     <token>
//		legacy          on|off                    # off = cutover: credgate answers the legacy routes
//		legacy_callback /api/{platform}/callback  # the app's callback (default)
//		legacy_start    /api/{platform}/connect   # the app's connect route: the rollout splits here
//		legacy_return_to <path>                   # default: same-origin Referer path, else /
//		legacy_error_pattern <regexp>             # the app's failure redirect; default [?&](error|oauth_error)=
//		start_limit     <n>/<duration>|off        # starts per user and platform; default 10/1m
//		server_errors   json|caddy                # who answers credgate's 5xx; default json (server_errors.go)
//	}
func (handler *Handler) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next()
	if d.NextArg() {
		return d.ArgErr()
	}
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		switch opt := d.Val(); opt {
		case "public_origin", "login_url", "admin_token", "legacy", "legacy_callback", "legacy_start", "legacy_return_to", "start_limit",
			"legacy_error_pattern", "server_errors":
			target := map[string]*string{"public_origin": &handler.PublicOrigin, "login_url": &handler.LoginURL,
				"admin_token": &handler.AdminToken, "legacy": &handler.Legacy, "legacy_callback": &handler.LegacyCallback,
				"legacy_start": &handler.LegacyStart, "legacy_return_to": &handler.LegacyReturnTo, "start_limit": &handler.StartLimit,
				"legacy_error_pattern": &handler.LegacyErrorPattern, "server_errors": &handler.ServerErrors}[opt]
			if !d.AllArgs(target) {
				return d.ArgErr()
			}
		case "return_to_allow":
			handler.ReturnToAllow = d.RemainingArgs()
			if len(handler.ReturnToAllow) == 0 {
				return d.ArgErr()
			}
		case "identity":
			id, err := parseIdentity(d)
			if err != nil {
				return err
			}
			handler.Identity = id
		default:
			return d.Errf("credgate: unrecognized option %q", opt)
		}
	}
	return nil
}

func parseHandlerDirective(h httpcaddyfile.Helper) (caddyhttp.MiddlewareHandler, error) {
	handler := new(Handler)
	if err := handler.UnmarshalCaddyfile(h.Dispenser); err != nil {
		return nil, err
	}
	return handler, nil
}

func parseIdentity(d *caddyfile.Dispenser) (*Identity, error) {
	id := new(Identity)
	if d.NextArg() {
		return nil, d.ArgErr()
	}
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		opt := d.Val()
		target := map[string]*string{
			"jwt_secret": &id.JWTSecret, "jwks_url": &id.JWKSURL, "placeholder": &id.Placeholder,
			"cookie": &id.Cookie, "claim": &id.Claim, "issuer": &id.Issuer, "audience": &id.Audience,
		}[opt]
		switch {
		case target != nil:
			if !d.AllArgs(target) {
				return nil, d.ArgErr()
			}
		case opt == "no_header":
			if d.NextArg() {
				return nil, d.ArgErr()
			}
			id.NoHeader = true
		case opt == "supabase":
			sb, err := parseSupabaseIdentity(d)
			if err != nil {
				return nil, err
			}
			id.Supabase = sb
		default:
			return nil, d.Errf("credgate: unrecognized identity option %q", opt)
		}
	}
	return id, nil
}

func parseSupabaseIdentity(d *caddyfile.Dispenser) (*SupabaseIdentity, error) {
	sb := new(SupabaseIdentity)
	if !d.NextArg() {
		return nil, d.Err("credgate: identity supabase needs the project URL, such as https://<ref>.supabase.co")
	}
	sb.ProjectURL = d.Val()
	if d.NextArg() {
		return nil, d.ArgErr()
	}
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		opt := d.Val()
		target := map[string]*string{
			"publishable_key": &sb.PublishableKey, "anon_key": &sb.PublishableKey,
			"auth_url": &sb.AuthURL, "cookie": &sb.Cookie, "cookie_domain": &sb.CookieDomain,
		}[opt]
		switch {
		case target != nil:
			if !d.AllArgs(target) {
				return nil, d.ArgErr()
			}
		case opt == "refuse_anonymous" || opt == "cookie_secure":
			if d.NextArg() {
				return nil, d.ArgErr()
			}
			if opt == "cookie_secure" {
				sb.CookieSecure = true
			} else {
				sb.RefuseAnonymous = true
			}
		default:
			return nil, d.Errf("credgate: unrecognized identity supabase option %q", opt)
		}
	}
	return sb, nil
}
