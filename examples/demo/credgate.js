/*
 * credgate.js: the browser side of credgate's front-end contract
 * (docs/frontend.md), with no framework and no build step. Load it with
 * <script src="/credgate.js"></script>; it defines window.credgate:
 *
 *   credgate.landing(show, alsoRemove)  after a connect: show the outcome, then clean the URL
 *   credgate.message(code, platform)    what to tell the user for an oauth_error code
 *   credgate.connect(platform, opts)    go where the rollout says (asking it, unless the page just did)
 *   credgate.decide(platform, opts)     the rollout's decision for the signed-in user
 *   credgate.lastDecision(platform)     the decision the last connect went by (after the return)
 *   credgate.status()                   the user's accounts
 *   credgate.reconnectPrompts(accounts) the accounts that need the user, and what to say
 *   credgate.disconnect(platform)       disconnect an account
 *
 * Every call is same-origin: credgate sits in front of the app, on the
 * app's own origin, and reads the app's session cookie.
 */
(function (global) {
  "use strict";

  const NAMES = { twitter: "X (Twitter)", linkedin: "LinkedIn", facebook: "Facebook", instagram: "Instagram" };

  // What to tell the user for each code credgate puts in ?oauth_error=
  // (docs/frontend.md has the table and when each happens).
  const MESSAGES = {
    access_denied: "You cancelled connecting {platform}. Nothing was changed.",
    invalid_grant: "The sign-in with {platform} expired or was already used. Please connect again.",
    invalid_request: "{platform} refused the sign-in. Please connect again; if it keeps failing, contact support.",
    invalid_client: "{platform} did not accept this app's registration. This is on our side: please contact support.",
    invalid_scope: "{platform} refused a permission this app asks for. This is on our side: please contact support.",
    insufficient_scope: "{platform} did not grant every permission this app needs. Please connect again and allow them all.",
    rate_limited: "{platform} is limiting requests right now. Please try again in a minute.",
    provider_unavailable: "{platform} is not answering right now. Please try again in a few minutes.",
    server_error: "{platform} had a problem on its side. Please try again in a few minutes.",
    invalid_response: "{platform} answered in a way we did not expect. Please try again later.",
    needs_reauth: "{platform} needs you to sign in again. Please connect again.",
    unsupported: "{platform} does not support this. Please contact support.",
    storage_unavailable: "Your {platform} connection could not be saved, and nothing was kept. Please try again in a minute.",
    new_flow_disabled: "Connecting {platform} this way is switched off right now. Please connect again.",
    new_flow_halted: "Connecting {platform} this way is paused right now. Please connect again.",
  };

  // Why the rollout sent a user where it did (the decision's reason).
  const REASONS = {
    rollout: "the rollout's split for this user",
    no_identity: "credgate did not recognise the session: everyone it does not recognise stays on the app's flow",
    kill_switch: "the new flow is switched off (kill switch)",
    guard_halted: "the rollout guard paused the new flow on this platform",
    store_unavailable: "credgate's storage is unavailable, so the app's flow serves the connect",
    provider_not_ready: "the flag source is still starting",
    provider_error: "the flag source failed",
    flag_not_found: "the rollout flag is missing",
    flag_disabled: "the rollout flag is disabled",
    invalid_variant: "the rollout flag named no known flow",
    timeout: "the flag source did not answer in time",
    legacy_off: "the app's own flow is retired: everyone takes the new one",
  };

  const name = (platform) => NAMES[platform] || platform || "the account";

  // CredgateError is a failed call: the HTTP status and credgate's code.
  class CredgateError extends Error {
    constructor(status, code, message) {
      super(message || code || "HTTP " + status);
      this.status = status;
      this.code = code || "http_" + status;
    }
  }

  // failure reads credgate's {"error":{"code","message"}} from a response.
  async function failure(resp) {
    const body = await resp.json().catch(() => ({}));
    const e = body.error || {};
    return new CredgateError(resp.status, e.code, e.message);
  }

  async function call(method, path) {
    const resp = await fetch(path, { method, credentials: "same-origin", headers: { Accept: "application/json" } });
    if (!resp.ok) throw await failure(resp);
    return resp.json();
  }

  function message(code, platform) {
    const text = MESSAGES[code] || "Connecting {platform} failed (" + code + "). Please try again.";
    return text.replace("{platform}", name(platform));
  }

  // landing reads where a connect left the browser, calls show(outcome)
  // once, then removes the parameters (and alsoRemove, the app's own)
  // from the address bar, so that a reload or a shared link does not show
  // it again. outcome is null, {kind: "connected", platform, message} or
  // {kind: "error", platform, code, message}.
  function landing(show, alsoRemove) {
    const url = new URL(global.location.href);
    const q = url.searchParams;
    let outcome = null;
    if (q.get("oauth_error")) {
      const code = q.get("oauth_error"), platform = q.get("platform") || "";
      outcome = { kind: "error", platform, code, message: message(code, platform) };
    } else if (q.get("connected")) {
      const platform = q.get("connected");
      outcome = { kind: "connected", platform, message: name(platform) + " is connected." };
    }
    if (outcome && show) show(outcome);
    const names = ["connected", "oauth_error", "platform"].concat(alsoRemove || []);
    const before = url.search + url.hash;
    names.forEach((n) => q.delete(n));
    // Facebook's #_=_ and Instagram's #_ ride along from the platform's redirect.
    if (url.hash === "#_=_" || url.hash === "#_") url.hash = "";
    if (url.search + url.hash !== before) {
      global.history.replaceState(global.history.state, "", url.pathname + url.search + url.hash);
    }
    return outcome;
  }

  // decide asks the rollout which flow the signed-in user gets on platform:
  // {platform, flow: "new"|"legacy", reason, percentage, location}, plus
  // asked_at (this browser's clock, for connect). Each call is a decision,
  // counted as a connect's is.
  async function decide(platform, opts) {
    const q = opts && opts.returnTo ? "?return_to=" + encodeURIComponent(opts.returnTo) : "";
    const d = await call("GET", "/api/credentials/rollout/" + encodeURIComponent(platform) + q);
    d.asked_at = Date.now();
    return d;
  }

  // A decision a page already has is followed for this long: the legacy
  // location's mark is good for two minutes, after which the app's
  // connect route would decide (and count) again.
  const DECISION_REUSE_MS = 60 * 1000;

  const remembered = (platform) => "credgate:decision:" + platform;

  // connect sends the browser where the rollout says (credgate's start,
  // or the app's own connect route): opts.decision, when the page already
  // asked (decide) less than a minute ago, else a fresh decision; then
  // opts.fallback (the app's connect route) when credgate does not answer
  // or gives no location. The decision is kept for lastDecision, after
  // the platform sends the browser back.
  async function connect(platform, opts) {
    opts = opts || {};
    let decision = opts.decision && opts.decision.location && Date.now() - opts.decision.asked_at < DECISION_REUSE_MS ? opts.decision : null;
    try {
      decision = decision || await decide(platform, opts);
    } catch (e) {
      if (!opts.fallback) throw e;
    }
    const to = (decision && decision.location) || opts.fallback;
    if (!to) throw new CredgateError(0, "no_location", "no way to connect " + name(platform));
    try {
      global.sessionStorage.setItem(remembered(platform), JSON.stringify(decision));
    } catch (e) { /* storage off: the notice just says less */ }
    global.location.assign(to);
    return decision;
  }

  // lastDecision is the decision the last connect on platform went by,
  // once (null when there is none).
  function lastDecision(platform) {
    try {
      const v = JSON.parse(global.sessionStorage.getItem(remembered(platform)) || "null");
      global.sessionStorage.removeItem(remembered(platform));
      return v;
    } catch (e) {
      return null;
    }
  }

  // status is the signed-in user's accounts: [{platform, status, username,
  // expires_at, last_refreshed_at, connected_via}], disconnected ones left out.
  async function status() {
    const { accounts } = await call("GET", "/api/credentials/status");
    return accounts.filter((a) => a.status !== "disconnected");
  }

  // reconnectPrompts are the accounts that need the user, most urgent
  // first: {platform, status, urgent, message}. needs_reauth and revoked
  // no longer work; expiring works until expires_at (Facebook's 60 days
  // cannot be renewed without the user).
  function reconnectPrompts(accounts) {
    const out = [];
    for (const a of accounts) {
      const n = name(a.platform);
      if (a.status === "needs_reauth") {
        out.push({ platform: a.platform, status: a.status, urgent: true, message: "Your " + n + " connection stopped working. Reconnect it to keep posting." });
      } else if (a.status === "revoked") {
        out.push({ platform: a.platform, status: a.status, urgent: true, message: "Access to your " + n + " account was withdrawn. Reconnect it to keep posting." });
      } else if (a.status === "expiring") {
        const when = a.expires_at ? new Date(a.expires_at).toLocaleDateString() : "soon";
        out.push({ platform: a.platform, status: a.status, urgent: false, message: "Your " + n + " connection expires on " + when + ". Reconnect it before then to keep posting." });
      }
    }
    return out.sort((x, y) => Number(y.urgent) - Number(x.urgent));
  }

  // disconnect revokes the account at the platform where it can and wipes
  // it: {platform, disconnected: true, revoked}. The browser sends the
  // Origin header credgate requires on a DELETE by itself.
  function disconnect(platform) {
    return call("DELETE", "/api/credentials/" + encodeURIComponent(platform) + "/disconnect");
  }

  global.credgate = {
    landing, message, connect, decide, lastDecision, status, reconnectPrompts, disconnect,
    name, reasons: REASONS, messages: MESSAGES, CredgateError,
  };
})(window);
