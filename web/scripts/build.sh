#!/usr/bin/env bash
# Builds the demo pages into web/dist (served by `voicewatch demo`).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
if [[ ! -d node_modules || package-lock.json -nt node_modules/.package-lock.json ]]; then
  npm ci --no-audit --no-fund --loglevel=error
fi
npx vite build --logLevel warn
echo "built $(pwd)/dist"
