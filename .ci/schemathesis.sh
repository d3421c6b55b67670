#!/usr/bin/env bash
# The HTTP API against its own OpenAPI document: schemathesis generates requests from
# /openapi.json and checks that none gets a server error, every status is documented, no
# schema-valid request is refused and every response matches its schema. Bounded: a fixed
# number of examples per operation, the whole step under a timeout. The seed is fixed so that a
# run is repeatable; another SCHEMATHESIS_SEED (a number) explores further by hand.
set -euo pipefail
cd "$(dirname "$0")/.."

VERSION=4.32.5
if ! schemathesis --version 2>/dev/null | grep -q "$VERSION"; then
  python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore \
    "schemathesis==$VERSION"
fi
cargo build --locked --quiet -p roomcast-server

work=$(mktemp -d)
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
base="http://127.0.0.1:$port"
# The per-address rates would answer a generator's burst with 429: they are tested on their own.
secret="$(head -c 32 /dev/urandom | base64)"
env -u REDIS_URL ROOMCAST_JWT_SECRET="$secret" ROOMCAST_LISTEN="127.0.0.1:$port" \
  DATABASE_URL="sqlite://$work/roomcast.db" ROOMCAST_AUTH_RATE=0 ROOMCAST_CONNECT_RATE=0 \
  RUST_LOG=warn target/debug/roomcast serve > "$work/server.log" 2>&1 &
server=$!
trap 'kill $server 2>/dev/null || true; wait $server 2>/dev/null || true; rm -rf "$work"' EXIT

for _ in $(seq 100); do
  curl -fs "$base/healthz" > /dev/null && break
  sleep 0.1
done
# An admin's token (a user like any other, plus `"role": "admin"`), so the admin API is
# exercised too rather than answering 403 to everything.
token=$(env ROOMCAST_JWT_SECRET="$secret" DATABASE_URL="sqlite://$work/roomcast.db" \
  target/debug/roomcast token --sub schemathesis --role admin --ttl 30m)

timeout 600 schemathesis run "$base/openapi.json" --url "$base" \
  -H "Authorization: Bearer $token" \
  --checks not_a_server_error,status_code_conformance,positive_data_acceptance,response_schema_conformance \
  --max-examples "${SCHEMATHESIS_EXAMPLES:-100}" --seed "${SCHEMATHESIS_SEED:-20261203}" --no-color
