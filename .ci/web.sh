#!/usr/bin/env bash
# The browser side (clients/ts, README "The browser client"): the committed build of the chat
# page is current, the client's tests pass against a real `roomcast serve`, and the page and
# the React hook work in Debian's Chromium (driven by playwright-core; no downloaded browsers).
set -euo pipefail
cd "$(dirname "$0")/.."

if [ ! -x /usr/bin/chromium ]; then
  echo "installing Debian's chromium"
  export DEBIAN_FRONTEND=noninteractive
  if ! apt-get install -y -q chromium >/dev/null; then
    apt-get update -q >/dev/null
    apt-get install -y -q chromium >/dev/null
  fi
fi

# The tests start target/debug/roomcast, which embeds the committed page.
cargo build -p roomcast-server --locked

# The servers these tests start are single nodes: REDIS_URL (exported by .ci/run for the
# cluster tests) would join them to one another through Redis.
unset REDIS_URL

cd clients/ts
npm ci --no-audit --no-fund
npm run build:web
assets=../../crates/roomcast-server/src/web/assets
if ! git diff --exit-code -- "$assets" || [ -n "$(git status --porcelain -- "$assets")" ]; then
  echo "ci: the committed chat page ($assets) is stale: run 'npm run build:web' in clients/ts and commit the result" >&2
  exit 1
fi
npm test
npm run test:browser
