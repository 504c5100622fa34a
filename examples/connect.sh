#!/usr/bin/env bash
# examples/connect.sh [platform] [user-uuid]: one complete connect through
# examples/sandbox.Caddyfile with curl, printing each hop. The README's
# walkthrough, as a script; `make test` runs it against the built binary.
set -euo pipefail
platform=${1:-twitter}
user=${2:-11111111-1111-4111-8111-111111111111}
caddy=${CADDY_BIN:-bin/caddy}
jar=$(mktemp) body=$(mktemp)
trap 'rm -f "$jar" "$body"' EXIT

token=$("$caddy" credgate devtoken --user "$user" --secret development-only-jwt-secret-do-not-use-in-production \
  --issuer http://localhost:8080/auth/v1)

# redirect_of URL CURL-ARGS…: where URL redirects to; a non-redirect
# answer (a 503 while the database is down, a 401…) is printed with its
# body and ends the script, instead of passing an empty URL on.
redirect_of() {
  local url=$1 answer
  shift
  answer=$(curl -sS "$@" -o "$body" -w '%{http_code} %{redirect_url}' "$url")
  case "$answer" in
    30[12378]\ ?*) echo "${answer#* }" ;;
    *) echo "$url answered ${answer%% *}: $(head -c 500 "$body")" >&2; return 1 ;;
  esac
}

# 1. Start: credgate stores a single-use state, sets the binding cookie and
#    sends the browser to the provider (the sandbox's consent page).
authorize=$(redirect_of "http://localhost:8080/api/auth/oauth/$platform?return_to=/settings" \
  -c "$jar" -b "$jar" -H "Authorization: Bearer $token")
echo "1. provider authorize URL: ${authorize%%\?*}?…"

# 2. Consent: approve at the sandbox (a browser would click "Authorize app").
callback=$(redirect_of "$authorize&sandbox_decision=approve")
echo "2. provider redirects to:  ${callback%%\?*}?code=…&state=… (the app's legacy callback; credgate knows its state)"

# 3. Callback: credgate consumes the state, exchanges the code, stores the
#    encrypted tokens and sends the browser back to the app.
final=$(redirect_of "${callback%%#*}" -b "$jar" -H "Authorization: Bearer $token")
echo "3. back to the app:        $final"

# 4. The user's connections.
echo "4. status: $(curl -sS -H "Authorization: Bearer $token" http://localhost:8080/api/credentials/status)"
case "$final" in *"connected=$platform"*) ;; *) echo "connect failed" >&2; exit 1 ;; esac

# 5. What the app's back end does instead of reading
#    social_accounts.access_token: ask the token API on the internal
#    listener (the token itself is not printed here).
answer=$(curl -sS -H 'Authorization: Bearer development-service-token-do-not-use' \
  "http://127.0.0.1:8081/api/internal/credentials/$user/$platform/token")
grep -q '"access_token":"[^"]' <<<"$answer" || { echo "5. token API: no token: $answer"; exit 1; }
echo "5. token API: a $(grep -o '"token_type":"[^"]*"' <<<"$answer"), $(grep -o '"expires_at":[^,]*' <<<"$answer")"
