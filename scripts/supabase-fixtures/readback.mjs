#!/usr/bin/env node
// Reads back a Supabase session from a browser Cookie header with the REAL
// @supabase/ssr library, the way a Supabase app's server code would.
//
// stdin:  {"project_url": "https://<ref>.supabase.co", "cookie_header": "name=value; ..."}
// stdout: one JSON line {"access_token", "refresh_token", "user_id", "expires_at"}
// Exits non-zero, with a message on stderr, when the library finds no session
// or tries to make ANY network request (e.g. to refresh an expired token).
//
// credgate's Go tests pipe cookies credgate wrote into this script to check
// that a real Supabase app would accept them.

import { createServerClient, parseCookieHeader } from "@supabase/ssr";

function die(code, msg) {
  process.stderr.write(`readback.mjs: ${msg}\n`);
  process.exit(code);
}

// supabase-js builds a RealtimeClient eagerly, and realtime-js 2.119 throws on
// Node < 22 without a WebSocket constructor; realtime is never used here.
class NoWebSocket {
  constructor() {
    die(3, "the library tried to open a realtime WebSocket");
  }
}

// Any fetch at all is a failure. Exit at once: auth-js would otherwise turn
// the error into a retryable one and back off for up to ~30 s.
function noNetwork(input) {
  const url = typeof input === "string" ? input : input?.url ?? String(input);
  die(3, `the library tried a network request: ${url}`);
}

async function readStdin() {
  const chunks = [];
  for await (const c of process.stdin) chunks.push(c);
  return Buffer.concat(chunks).toString("utf8");
}

async function main() {
  let input;
  try {
    input = JSON.parse(await readStdin());
  } catch (e) {
    die(2, `stdin is not JSON: ${e.message}`);
  }
  const { project_url: projectUrl, cookie_header: cookieHeader } = input ?? {};
  if (typeof projectUrl !== "string" || !projectUrl) die(2, "project_url missing");
  if (typeof cookieHeader !== "string") die(2, "cookie_header missing");

  const parse =
    typeof parseCookieHeader === "function"
      ? parseCookieHeader
      : (header) =>
          header
            .split(/;\s*/)
            .filter(Boolean)
            .map((p) => {
              const i = p.indexOf("=");
              return { name: p.slice(0, i), value: decodeURIComponent(p.slice(i + 1)) };
            });

  const supabase = createServerClient(projectUrl, "sb_publishable_readback", {
    global: { fetch: noNetwork },
    auth: { fetch: noNetwork },
    realtime: { transport: NoWebSocket },
    cookies: {
      getAll: () => parse(cookieHeader),
      setAll: () => {
        // Reading a valid, unexpired session writes nothing; a refresh would
        // have been caught by noNetwork first.
      },
    },
  });
  // We only echo the user id; don't let auth-js warn on stderr that
  // getSession()'s user object is unverified on the server (we know).
  supabase.auth.suppressGetSessionWarning = true;

  const { data, error } = await supabase.auth.getSession();
  if (error) die(1, `getSession error: ${error.message}`);
  const session = data?.session;
  if (!session) die(1, "no session found in cookie_header");
  process.stdout.write(
    JSON.stringify({
      access_token: session.access_token,
      refresh_token: session.refresh_token,
      user_id: session.user?.id ?? null,
      expires_at: session.expires_at ?? null,
    }) + "\n",
  );
}

main().catch((err) => die(1, err?.stack ?? String(err)));
