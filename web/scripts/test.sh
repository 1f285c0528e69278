#!/usr/bin/env bash
# Full web test run: deps, typecheck, unit tests, build, browser tests.
# Browser tests need the `voicewatch` binary (VOICEWATCH_BIN, default
# ../target/debug/voicewatch relative to web/): missing binary = failure,
# unless VOICEWATCH_SKIP_BROWSER=1. VOICEWATCH_E2E_TARGET=mock runs the
# browser tests against the mock demo server instead.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
WEB_DIR=$(pwd)

step() { printf '\n==> %s\n' "$*"; }

step "npm ci"
npm ci --no-audit --no-fund --loglevel=error

step "typecheck (tsc --noEmit)"
npx tsc --noEmit

step "unit tests (vitest)"
npx vitest run

step "build (vite)"
npx vite build --logLevel warn

if [[ "${VOICEWATCH_SKIP_BROWSER:-}" == "1" ]]; then
  step "browser tests SKIPPED (VOICEWATCH_SKIP_BROWSER=1)"
  exit 0
fi

CHROMIUM_PATH=${CHROMIUM_PATH:-/usr/bin/chromium}
if [[ ! -x "$CHROMIUM_PATH" ]]; then
  step "installing Debian chromium"
  if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; }; then
    echo "FAIL: $CHROMIUM_PATH is missing and 'apt-get install chromium' failed" >&2
    exit 1
  fi
  if [[ ! -x "$CHROMIUM_PATH" ]]; then
    echo "FAIL: chromium installed but $CHROMIUM_PATH is still missing" >&2
    exit 1
  fi
fi
export CHROMIUM_PATH

if [[ "${VOICEWATCH_E2E_TARGET:-}" != "mock" ]]; then
  BIN=${VOICEWATCH_BIN:-../target/debug/voicewatch}
  case "$BIN" in /*) ;; *) BIN="$WEB_DIR/$BIN" ;; esac
  if [[ ! -x "$BIN" ]]; then
    echo "FAIL: voicewatch binary not found at $BIN (build it first, set VOICEWATCH_BIN, or VOICEWATCH_SKIP_BROWSER=1)" >&2
    exit 1
  fi
  export VOICEWATCH_BIN="$BIN"
fi

step "browser tests (node --test, chromium, ${VOICEWATCH_E2E_TARGET:-binary ${VOICEWATCH_BIN:-}})"
timeout --kill-after=10 240 npm run --silent e2e
