#!/usr/bin/env node
// Generates Supabase session-cookie fixtures for credgate with the REAL
// Supabase client libraries (@supabase/ssr, @supabase/supabase-js,
// @supabase/auth-helpers-nextjs). Nothing about the cookie format is written
// by hand here: a tiny in-process stand-in for Supabase Auth (GoTrue) hands
// out GoTrue-shaped sessions, the libraries sign in against it, and we record
// exactly the cookies they ask the framework to set.
//
// Usage: node generate.mjs [outdir]
//   outdir defaults to ../../identity/testdata/supabase (relative to this file).
//
// TEST KEYS ONLY: the JWT signing keys in keys.json exist solely to sign these
// fixtures. They must never be used for anything real.

import crypto from "node:crypto";
import fs from "node:fs";
import http from "node:http";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { createRequire } from "node:module";

import { createServerClient } from "@supabase/ssr";
import { createMiddlewareClient } from "@supabase/auth-helpers-nextjs";
import { serialize } from "cookie";

const require = createRequire(import.meta.url);
const HERE = path.dirname(fileURLToPath(import.meta.url));
const DEFAULT_OUT = path.resolve(HERE, "../../identity/testdata/supabase");

const PROJECT_REF = "abcdefghijklmnopqrst";
const PROJECT_URL = `https://${PROJECT_REF}.supabase.co`;
const STORAGE_KEY = `sb-${PROJECT_REF}-auth-token`;
const ISSUER = `${PROJECT_URL}/auth/v1`;
const PUBLISHABLE_KEY = "sb_publishable_fixture";

// Non-expired fixtures are issued at a fixed time and expire 2100-01-01, so
// committed fixtures stay valid and (apart from ES256 signatures, which are
// randomized by ECDSA) regenerate byte-for-byte.
const FIXED_IAT = 1767225600; // 2026-01-01T00:00:00Z
const FAR_EXP = 4102444800; // 2100-01-01T00:00:00Z
const FIXED_TS = "2026-01-01T00:00:00Z";

function pkgVersion(name) {
  return JSON.parse(fs.readFileSync(require.resolve(`${name}/package.json`), "utf8")).version;
}

// ---------------------------------------------------------------- keys ----

function loadOrCreateKeys(outDir) {
  const keysPath = path.join(outDir, "keys.json");
  const canonical = path.join(DEFAULT_OUT, "keys.json");
  let keys;
  if (fs.existsSync(keysPath)) {
    keys = JSON.parse(fs.readFileSync(keysPath, "utf8"));
  } else if (fs.existsSync(canonical)) {
    // Regenerating into another directory (e.g. CI): reuse the committed keys.
    keys = JSON.parse(fs.readFileSync(canonical, "utf8"));
    fs.writeFileSync(keysPath, JSON.stringify(keys, null, 2) + "\n");
  } else {
    const { privateKey } = crypto.generateKeyPairSync("ec", { namedCurve: "P-256" });
    const jwk = privateKey.export({ format: "jwk" });
    keys = {
      note:
        "TEST KEYS ONLY. Used solely to sign credgate's Supabase cookie fixtures " +
        "(scripts/supabase-fixtures). Public, not secret, never use them for anything real.",
      hs256_secret: "credgate-fixture-hs256-secret-not-for-production-use",
      es256: { kty: jwk.kty, crv: jwk.crv, x: jwk.x, y: jwk.y, d: jwk.d, kid: "fixture-es256-1", alg: "ES256", use: "sig" },
    };
    fs.writeFileSync(keysPath, JSON.stringify(keys, null, 2) + "\n");
  }
  const { kty, crv, x, y, d } = keys.es256;
  return {
    raw: keys,
    hs256Secret: keys.hs256_secret,
    es256Kid: keys.es256.kid,
    es256Key: crypto.createPrivateKey({ key: { kty, crv, x, y, d }, format: "jwk" }),
  };
}

// ----------------------------------------------------------------- JWT ----

const b64url = (buf) => Buffer.from(buf).toString("base64url");

function signJWT(claims, alg, keys) {
  // GoTrue (golang-jwt) marshals the header map with sorted keys: alg, kid, typ.
  const header = alg === "ES256" ? { alg: "ES256", kid: keys.es256Kid, typ: "JWT" } : { alg: "HS256", typ: "JWT" };
  const input = `${b64url(JSON.stringify(header))}.${b64url(JSON.stringify(claims))}`;
  let sig;
  if (alg === "HS256") {
    sig = crypto.createHmac("sha256", keys.hs256Secret).update(input).digest();
  } else if (alg === "ES256") {
    sig = crypto.sign("sha256", Buffer.from(input), { key: keys.es256Key, dsaEncoding: "ieee-p1363" });
  } else {
    throw new Error(`unsupported alg ${alg}`);
  }
  return `${input}.${b64url(sig)}`;
}

function verifyJWT(token, keys) {
  const [h, p, s] = token.split(".");
  const header = JSON.parse(Buffer.from(h, "base64url").toString());
  const input = Buffer.from(`${h}.${p}`);
  let ok;
  if (header.alg === "HS256") {
    ok = crypto.timingSafeEqual(crypto.createHmac("sha256", keys.hs256Secret).update(input).digest(), Buffer.from(s, "base64url"));
  } else {
    ok = crypto.verify("sha256", input, { key: keys.es256Key, dsaEncoding: "ieee-p1363" }, Buffer.from(s, "base64url"));
  }
  if (!ok) throw new Error("bad signature");
  return JSON.parse(Buffer.from(p, "base64url").toString());
}

// ------------------------------------------------------------ fixtures ----

const bigMetadata = () => {
  // ~6 KB of user_metadata with non-ASCII text and emoji (incl. a ZWJ sequence
  // and a skin-tone modifier), so the base64url cookie must be chunked.
  const notes = [];
  for (let i = 0; i < 52; i += 1) {
    notes.push(`note ${String(i).padStart(2, "0")}: Zoë says héllo from the café 👋🏽 — naïve façade, 日本語 テキスト, 👩‍💻🚀`);
  }
  return {
    full_name: "Zoë Ünïcødé 🦊",
    avatar_url: "https://example.com/avatars/zoë.png",
    locale: "fr-CA",
    notes,
  };
};

// Each fixture: its user, how it signs in, how the token is signed.
const FIXTURES = [
  {
    fixture: "ssr-single",
    description:
      "@supabase/ssr createServerClient (default base64url cookie encoding) after signInWithPassword: HS256 access token, small metadata, one cookie with a base64- value.",
    writer: "ssr",
    alg: "HS256",
    user_id: "5f1a0001-7c2b-4d3e-8f40-000000000001",
    session_id: "5e550001-2a3b-4c5d-9e6f-000000000001",
    email: "single@example.com",
    refresh_token: "rtsingle0001",
    user_metadata: { full_name: "Ada Single" },
  },
  {
    fixture: "ssr-chunked",
    description:
      "@supabase/ssr createServerClient (base64url) after signInWithPassword for a user with ~6 KB of user_metadata including non-ASCII text and emoji, so the session is split into numbered chunk cookies (.0, .1, ...).",
    writer: "ssr",
    alg: "HS256",
    user_id: "5f1a0002-7c2b-4d3e-8f40-000000000002",
    session_id: "5e550002-2a3b-4c5d-9e6f-000000000002",
    email: "chunked@example.com",
    refresh_token: "rtchunked002",
    user_metadata: bigMetadata(),
  },
  {
    fixture: "ssr-es256",
    description:
      "@supabase/ssr createServerClient (base64url) after signInWithPassword, access token signed ES256 (P-256, kid fixture-es256-1) as projects using asymmetric JWT signing keys issue; one cookie.",
    writer: "ssr",
    alg: "ES256",
    user_id: "5f1a0003-7c2b-4d3e-8f40-000000000003",
    session_id: "5e550003-2a3b-4c5d-9e6f-000000000003",
    email: "es256@example.com",
    refresh_token: "rtes256x0003",
    user_metadata: { full_name: "Eve Elliptic" },
  },
  {
    fixture: "ssr-expired",
    description:
      "@supabase/ssr createServerClient (base64url) cookie holding a session whose HS256 access token expired an hour before generation (iat two hours before); the refresh token looks valid.",
    writer: "ssr",
    alg: "HS256",
    expired: true,
    user_id: "5f1a0004-7c2b-4d3e-8f40-000000000004",
    session_id: "5e550004-2a3b-4c5d-9e6f-000000000004",
    email: "expired@example.com",
    refresh_token: "rtexpired004",
    user_metadata: { full_name: "Old Timer" },
  },
  {
    fixture: "ssr-raw",
    description:
      '@supabase/ssr createServerClient with cookieEncoding "raw" after signInWithPassword: the cookie value is the plain session JSON, percent-encoded in Set-Cookie and Cookie (chunked if the encoded form exceeds 3180 bytes).',
    writer: "ssr",
    cookieEncoding: "raw",
    alg: "HS256",
    user_id: "5f1a0005-7c2b-4d3e-8f40-000000000005",
    session_id: "5e550005-2a3b-4c5d-9e6f-000000000005",
    email: "raw@example.com",
    refresh_token: "rtrawjson005",
    user_metadata: { full_name: "Zoë Raw" },
  },
  {
    fixture: "auth-helpers-0.10",
    description:
      "@supabase/auth-helpers-nextjs 0.10.0 createMiddlewareClient (cookie storage from @supabase/auth-helpers-shared 0.7.0) after signInWithPassword: URL-encoded JSON array [access_token, refresh_token, provider_token, provider_refresh_token, factors] under the same cookie name.",
    writer: "auth-helpers",
    alg: "HS256",
    user_id: "5f1a0006-7c2b-4d3e-8f40-000000000006",
    session_id: "5e550006-2a3b-4c5d-9e6f-000000000006",
    email: "helpers@example.com",
    refresh_token: "rthelpers006",
    user_metadata: { full_name: "Hal Helper" },
  },
  {
    fixture: "ssr-anonymous",
    description:
      "@supabase/ssr createServerClient (base64url) after signInAnonymously: HS256 token with is_anonymous true, role still authenticated, empty email; one cookie.",
    writer: "ssr",
    anonymous: true,
    alg: "HS256",
    user_id: "5f1a0007-7c2b-4d3e-8f40-000000000007",
    session_id: "5e550007-2a3b-4c5d-9e6f-000000000007",
    email: "",
    refresh_token: "rtanonymo007",
    user_metadata: {},
  },
];

// ------------------------------------------------- GoTrue stand-in ----

function makeUser(spec) {
  const anon = !!spec.anonymous;
  return {
    id: spec.user_id,
    aud: "authenticated",
    role: "authenticated",
    email: spec.email,
    ...(anon ? {} : { email_confirmed_at: FIXED_TS, confirmed_at: FIXED_TS }),
    phone: "",
    last_sign_in_at: FIXED_TS,
    app_metadata: anon ? {} : { provider: "email", providers: ["email"] },
    user_metadata: spec.user_metadata,
    identities: [],
    created_at: FIXED_TS,
    updated_at: FIXED_TS,
    is_anonymous: anon,
  };
}

function makeSession(spec, keys) {
  const now = Math.floor(Date.now() / 1000);
  const iat = spec.expired ? now - 7200 : FIXED_IAT;
  const exp = spec.expired ? now - 3600 : FAR_EXP;
  const user = makeUser(spec);
  // Claim order follows GoTrue's AccessTokenClaims struct.
  const claims = {
    iss: ISSUER,
    sub: user.id,
    aud: "authenticated",
    exp,
    iat,
    email: user.email,
    phone: "",
    app_metadata: user.app_metadata,
    user_metadata: user.user_metadata,
    role: "authenticated",
    aal: "aal1",
    amr: [{ method: spec.anonymous ? "anonymous" : "password", timestamp: iat }],
    session_id: spec.session_id,
    is_anonymous: !!spec.anonymous,
  };
  return {
    access_token: signJWT(claims, spec.alg, keys),
    token_type: "bearer",
    expires_in: exp - iat,
    expires_at: exp,
    refresh_token: spec.refresh_token,
    user,
  };
}

function startStandIn(keys) {
  const log = [];
  const byEmail = new Map(FIXTURES.filter((f) => !f.anonymous).map((f) => [f.email, f]));
  const byRefresh = new Map(FIXTURES.map((f) => [f.refresh_token, f]));
  let nextAnonymous = null; // spec for the next POST /signup without credentials

  const server = http.createServer((req, res) => {
    let body = "";
    req.setEncoding("utf8");
    req.on("data", (c) => (body += c));
    req.on("end", () => {
      const url = new URL(req.url, "http://stand-in");
      log.push(`${req.method} ${url.pathname}${url.search}`);
      const send = (status, obj) => {
        const text = JSON.stringify(obj);
        res.writeHead(status, { "content-type": "application/json", "content-length": Buffer.byteLength(text) });
        res.end(text);
      };
      const fail = (status, error_code, msg) => send(status, { code: status, error_code, msg });
      if (!req.headers.apikey) return fail(401, "no_api_key", "No API key found in request");
      let json = {};
      try {
        json = body ? JSON.parse(body) : {};
      } catch {
        return fail(400, "bad_json", "Could not parse request body as JSON");
      }
      const grant = url.searchParams.get("grant_type");
      if (req.method === "POST" && url.pathname === "/auth/v1/token" && grant === "password") {
        const spec = byEmail.get(json.email);
        if (!spec || json.password !== "fixture-password") return fail(400, "invalid_credentials", "Invalid login credentials");
        return send(200, makeSession(spec, keys));
      }
      if (req.method === "POST" && url.pathname === "/auth/v1/token" && grant === "refresh_token") {
        const spec = byRefresh.get(json.refresh_token);
        if (!spec) return fail(400, "refresh_token_not_found", "Invalid Refresh Token: Refresh Token Not Found");
        return send(200, makeSession({ ...spec, expired: false }, keys));
      }
      if (req.method === "POST" && url.pathname === "/auth/v1/signup" && !json.email && !json.phone) {
        if (!nextAnonymous) return fail(422, "anonymous_provider_disabled", "Anonymous sign-ins are disabled");
        const spec = nextAnonymous;
        nextAnonymous = null;
        return send(200, makeSession({ ...spec, user_metadata: json.data ?? {} }, keys));
      }
      if (req.method === "GET" && url.pathname === "/auth/v1/user") {
        const token = (req.headers.authorization ?? "").replace(/^Bearer /i, "");
        try {
          const claims = verifyJWT(token, keys);
          if (claims.exp < Date.now() / 1000) return fail(403, "bad_jwt", "invalid JWT: token is expired");
          return send(200, makeUser(FIXTURES.find((f) => f.user_id === claims.sub)));
        } catch (e) {
          return fail(403, "bad_jwt", `invalid JWT: ${e.message}`);
        }
      }
      if (req.method === "POST" && url.pathname === "/auth/v1/logout") {
        res.writeHead(204);
        return res.end();
      }
      return fail(404, "not_found", `stand-in has no route ${req.method} ${url.pathname}`);
    });
  });

  return new Promise((resolve) => {
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address();
      resolve({
        log,
        base: `http://127.0.0.1:${port}`,
        expectAnonymous: (spec) => (nextAnonymous = spec),
        close: () => new Promise((r) => server.close(r)),
      });
    });
  });
}

// fetch that sends requests for the Supabase project host to the stand-in
// and refuses anything else.
function redirectingFetch(standIn) {
  return async (input, init) => {
    const original = typeof input === "string" || input instanceof URL ? new URL(input) : new URL(input.url);
    if (original.origin !== PROJECT_URL) throw new Error(`fixture generator: refusing network request to ${original.href}`);
    const target = `${standIn.base}${original.pathname}${original.search}`;
    if (typeof input === "string" || input instanceof URL) return fetch(target, init);
    return fetch(new Request(target, input), init);
  };
}

// supabase-js builds a RealtimeClient eagerly, and realtime-js 2.119 throws on
// Node < 22 when no WebSocket constructor is available. Nothing here uses
// realtime, so hand it a transport that refuses to connect.
class NoWebSocket {
  constructor() {
    throw new Error("fixture generator: realtime is not used");
  }
}
const REALTIME = { transport: NoWebSocket };

// ------------------------------------------------------------- writers ----

function cookiePair(setCookie) {
  // "name=value; Path=/; ..." -> "name=value" exactly as it appears on the wire.
  return setCookie.split(";")[0].trim();
}

function maxAgeOf(setCookie) {
  const m = /;\s*max-age=(-?\d+)/i.exec(setCookie);
  return m ? Number(m[1]) : null;
}

async function viaSSR(spec, standIn) {
  const captured = [];
  const supabase = createServerClient(PROJECT_URL, PUBLISHABLE_KEY, {
    ...(spec.cookieEncoding ? { cookieEncoding: spec.cookieEncoding } : {}),
    global: { fetch: redirectingFetch(standIn) },
    realtime: REALTIME,
    cookies: {
      getAll: () => [], // a fresh browser: no cookies yet
      setAll: (cookies, headers) => {
        captured.push({ cookies: cookies.map((c) => ({ ...c, options: { ...c.options } })), headers });
      },
    },
  });
  let result;
  if (spec.anonymous) {
    standIn.expectAnonymous(spec);
    result = await supabase.auth.signInAnonymously();
  } else {
    result = await supabase.auth.signInWithPassword({ email: spec.email, password: "fixture-password" });
  }
  if (result.error) throw new Error(`${spec.fixture}: sign-in failed: ${result.error.message}`);
  // setAll is awaited inside onAuthStateChange; give pending callbacks a turn.
  await new Promise((r) => setTimeout(r, 50));
  if (captured.length === 0) throw new Error(`${spec.fixture}: setAll was never called`);
  const triples = captured.flatMap((c) => c.cookies);
  const setCookie = triples.map(({ name, value, options }) => serialize(name, value, options));
  return { setCookie, session: result.data.session, setAllCalls: captured };
}

async function viaAuthHelpers(spec, standIn) {
  // createMiddlewareClient only needs objects with a Fetch API `headers`
  // (what NextRequest / NextResponse expose), so `next` is not required.
  const req = { headers: new Headers() };
  const res = { headers: new Headers() };
  const supabase = createMiddlewareClient(
    { req, res },
    { supabaseUrl: PROJECT_URL, supabaseKey: PUBLISHABLE_KEY, options: { global: { fetch: redirectingFetch(standIn) }, realtime: REALTIME } },
  );
  const result = await supabase.auth.signInWithPassword({ email: spec.email, password: "fixture-password" });
  if (result.error) throw new Error(`${spec.fixture}: sign-in failed: ${result.error.message}`);
  await new Promise((r) => setTimeout(r, 50));
  const setCookie = res.headers.getSetCookie();
  if (setCookie.length === 0) throw new Error(`${spec.fixture}: no Set-Cookie written`);
  return { setCookie, session: result.data.session };
}

// --------------------------------------------------------- self-checks ----

function assert(cond, msg) {
  if (!cond) throw new Error(`self-check failed: ${msg}`);
}

function noNetwork(url) {
  throw new Error(`self-check: unexpected network request to ${url?.url ?? url}`);
}

async function readBackSSR(cookieHeader) {
  const { parseCookieHeader } = await import("@supabase/ssr");
  const supabase = createServerClient(PROJECT_URL, PUBLISHABLE_KEY, {
    global: { fetch: noNetwork },
    realtime: REALTIME,
    cookies: { getAll: () => parseCookieHeader(cookieHeader), setAll: () => {} },
  });
  const { data, error } = await supabase.auth.getSession();
  if (error) throw error;
  return data.session;
}

async function readBackAuthHelpers(cookieHeader) {
  const req = { headers: new Headers({ cookie: cookieHeader }) };
  const res = { headers: new Headers() };
  const supabase = createMiddlewareClient(
    { req, res },
    { supabaseUrl: PROJECT_URL, supabaseKey: PUBLISHABLE_KEY, options: { global: { fetch: noNetwork }, realtime: REALTIME } },
  );
  const { data, error } = await supabase.auth.getSession();
  if (error) throw error;
  return data.session;
}

// ---------------------------------------------------------------- main ----

async function main() {
  const outDir = path.resolve(process.argv[2] ?? DEFAULT_OUT);
  fs.mkdirSync(outDir, { recursive: true });
  const keys = loadOrCreateKeys(outDir);
  const standIn = await startStandIn(keys);
  const versions = {
    "@supabase/ssr": pkgVersion("@supabase/ssr"),
    "@supabase/supabase-js": pkgVersion("@supabase/supabase-js"),
    "@supabase/auth-js": pkgVersion("@supabase/auth-js"),
    cookie: pkgVersion("cookie"),
  };
  const helperVersions = {
    "@supabase/auth-helpers-nextjs": pkgVersion("@supabase/auth-helpers-nextjs"),
    "@supabase/auth-helpers-shared": pkgVersion("@supabase/auth-helpers-shared"),
    "@supabase/supabase-js": pkgVersion("@supabase/supabase-js"),
    "@supabase/auth-js": pkgVersion("@supabase/auth-js"),
  };

  try {
    for (const spec of FIXTURES) {
      const logStart = standIn.log.length;
      const out = spec.writer === "ssr" ? await viaSSR(spec, standIn) : await viaAuthHelpers(spec, standIn);
      const live = out.setCookie.filter((c) => maxAgeOf(c) !== 0);
      const cookieHeader = live.map(cookiePair).join("; ");
      const session = out.session;

      // Sanity checks on what the libraries produced.
      const names = live.map((c) => cookiePair(c).split("=")[0]);
      assert(names.every((n) => n === STORAGE_KEY || n.startsWith(`${STORAGE_KEY}.`)), `${spec.fixture}: unexpected cookie names ${names}`);
      assert(session.user.id === spec.user_id, `${spec.fixture}: user id`);
      if (spec.fixture === "ssr-chunked") assert(names.length >= 2 && names.every((n, i) => n === `${STORAGE_KEY}.${i}`), `${spec.fixture}: expected chunks .0..N, got ${names}`);
      if (spec.writer === "ssr" && !spec.expired) {
        const back = await readBackSSR(cookieHeader);
        assert(back && back.access_token === session.access_token, `${spec.fixture}: @supabase/ssr did not read the session back`);
      }
      if (spec.writer === "auth-helpers") {
        const back = await readBackAuthHelpers(cookieHeader);
        assert(back && back.access_token === session.access_token, `${spec.fixture}: auth-helpers did not read the session back`);
      }

      const fixture = {
        fixture: spec.fixture,
        description: spec.description,
        generated_by: { ...(spec.writer === "ssr" ? versions : helperVersions), node: process.version },
        project_url: PROJECT_URL,
        storage_key: STORAGE_KEY,
        set_cookie: out.setCookie,
        cookie_header: cookieHeader,
        user_id: spec.user_id,
        session_id: spec.session_id,
        access_token: session.access_token,
        refresh_token: session.refresh_token,
        expires_at: session.expires_at,
        alg: spec.alg,
        expired: !!spec.expired,
        anonymous: !!spec.anonymous,
      };
      fs.writeFileSync(path.join(outDir, `${spec.fixture}.json`), JSON.stringify(fixture, null, 2) + "\n");
      const calls = out.setAllCalls
        ? `; setAll called ${out.setAllCalls.length}x with extra headers ${JSON.stringify(out.setAllCalls.map((c) => c.headers))}`
        : "";
      process.stderr.write(
        `${spec.fixture}: ${live.length} cookie(s) [${names.join(", ")}]; stand-in saw: ${standIn.log.slice(logStart).join(", ")}${calls}\n`,
      );
    }
  } finally {
    await standIn.close();
  }
  process.stderr.write(`wrote ${FIXTURES.length} fixtures to ${outDir}\n`);
}

main().catch((err) => {
  process.stderr.write(`generate.mjs: ${err.stack ?? err}\n`);
  process.exit(1);
});
