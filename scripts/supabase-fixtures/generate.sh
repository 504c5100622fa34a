#!/usr/bin/env bash
# Regenerates credgate's Supabase cookie fixtures with the real Supabase
# libraries pinned in package-lock.json. Usage: generate.sh [outdir]
# (outdir defaults to identity/testdata/supabase in this repo).
set -euo pipefail
# Resolve a caller-relative outdir before changing directory.
out="${1:-}"
if [ -n "$out" ]; then
  case "$out" in /*) ;; *) out="$PWD/$out" ;; esac
fi
cd "$(dirname "${BASH_SOURCE[0]}")"
npm ci --no-audit --no-fund --loglevel=error
node generate.mjs "${out:-../../identity/testdata/supabase}"
