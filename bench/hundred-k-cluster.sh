#!/usr/bin/env bash
# 100,000 connections on one machine over six `roomcast serve` nodes sharing Redis and one
# PostgreSQL database (each process may hold at most 20,000 descriptors here). Every load
# generator spreads its connections round-robin over all six nodes, so every room spans every
# node: five hold 16,667 idle authenticated connections each (rooms of 100), the sixth runs a
# light fan-out in rooms of ROOM_SIZE (default 1,000) and reports loss and latency. Prints each
# node's connections and RSS before, after the set-up and during the fan-out, and the RSS
# growth per connection per node. Each load generator's report lands in
# /tmp/kc-idle{1..5}.txt and /tmp/kc-fanout.txt. About six minutes.
#
# Usage (from the repository root, after
#   cargo build --release -p roomcast-server -p roomcast-loadgen):
#   ROOMCAST_JWT_SECRET=$(head -c 32 /dev/urandom | base64) bench/hundred-k-cluster.sh
#
# Needs PostgreSQL at PG (default postgres://postgres@127.0.0.1:5432; a database
# `roomcast_100k` is dropped and made again) and Redis at REDIS_URL (keys under a prefix of
# this run's own, deleted at the end). Loopback only.
set -euo pipefail
: "${ROOMCAST_JWT_SECRET:?set ROOMCAST_JWT_SECRET}"
export ROOMCAST_JWT_SECRET
BIN=${BIN:-target/release}
PG=${PG:-postgres://postgres@127.0.0.1:5432}
REDIS_URL=${REDIS_URL:-redis://127.0.0.1:6379}
ROOM_SIZE=${ROOM_SIZE:-1000}     # members of each fan-out room
RATE=${RATE:-50}                 # fan-out messages per second, all rooms together
IDLE=${IDLE:-5}                  # idle load generators (0 for the fan-out alone)
NODES=6
IDLE_EACH=16667                  # five of these, plus the fan-out's ~16,700
FANOUT_ROOMS=$(((16700 + ROOM_SIZE - 1) / ROOM_SIZE))
PREFIX="rc100k:$$:"
DB=roomcast_100k
ulimit -n "$(ulimit -Hn)"

psql "$PG/postgres" -qAtc "DROP DATABASE IF EXISTS $DB" -c "CREATE DATABASE $DB" >/dev/null

wait_port() {
  for _ in $(seq 1 200); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.1
  done
  echo "port $1 did not open" >&2
  return 1
}

SERVERS=()
LOADGENS=()
cleanup() {
  kill "${LOADGENS[@]}" 2>/dev/null || true
  kill "${SERVERS[@]}" 2>/dev/null || true
  wait 2>/dev/null || true
  redis-cli -u "$REDIS_URL" --scan --pattern "${PREFIX}*" | xargs -r -n 500 redis-cli -u "$REDIS_URL" del >/dev/null || true
}
trap cleanup EXIT

# The abuse limits protect a server from exactly what a load generator does; the run turns
# them off, each by its setting (docs/PERFORMANCE.md).
LIMITS_OFF=(ROOMCAST_CONNECT_RATE=0 ROOMCAST_AUTH_RATE=0 ROOMCAST_MESSAGE_RATE=0
  ROOMCAST_MAX_ROOM_MEMBERS=0 ROOMCAST_MAX_ROOMS_PER_CONNECTION=0
  ROOMCAST_MAX_CONNECTIONS_PER_USER=0 ROOMCAST_ROOM_CREATE_RATE=0)
URLS=""
for i in $(seq 1 $NODES); do
  port=$((18300 + i))
  env "${LIMITS_OFF[@]}" WEBSOCKET_MAX_CONNECTIONS=19500 DATABASE_URL="$PG/$DB" \
    REDIS_URL="$REDIS_URL" ROOMCAST_REDIS_PREFIX="$PREFIX" ROOMCAST_USER_DIRECTORY=token \
    ROOMCAST_LISTEN="127.0.0.1:$port" RUST_LOG=warn \
    "$BIN/roomcast" serve > "/tmp/kc-server-$port.log" 2>&1 &
  SERVERS+=($!)
  wait_port "$port"
  URLS="${URLS:+$URLS,}ws://127.0.0.1:$port/ws/auth"
done

rss_kb() { awk '/VmRSS/ {print $2}' "/proc/$1/status"; }
conns() { ss -Htn state established "( sport = :$1 )" | wc -l; }
declare -A BEFORE
for i in $(seq 1 $NODES); do BEFORE[$i]=$(rss_kb "${SERVERS[$((i - 1))]}"); done

report() { # heading
  echo "== $1 ($(date -u +%T)): $(ss -Htn state established | wc -l) sockets (both ends)"
  for i in $(seq 1 $NODES); do
    local pid=${SERVERS[$((i - 1))]} port=$((18300 + i))
    local rss n
    rss=$(rss_kb "$pid")
    n=$(conns "$port")
    if [ "$n" -gt 0 ]; then
      echo "node $i: $n connections, RSS $((rss / 1024)) MiB, growth $(((rss - ${BEFORE[$i]}) * 1024 / n)) B per connection"
    else
      echo "node $i: 0 connections, RSS $((rss / 1024)) MiB"
    fi
  done
  echo "redis: $(redis-cli -u "$REDIS_URL" info memory | awk -F: '/^used_memory_human/ {print $2}' | tr -d '\r') used"
}
report "started"

# Each idle load generator holds its connections long enough for the others and the fan-out.
for i in $(seq 1 "$IDLE"); do
  "$BIN/roomcast-loadgen" idle --connections $IDLE_EACH --rooms 167 --hold 330s \
    --broadcast false --setup-timeout 300s --url "$URLS" --label "idle$i" \
    > "/tmp/kc-idle$i.txt" 2>&1 &
  LOADGENS+=($!)
done
# Wait (bounded) until the idle connections are up: both ends of each count as a socket.
want=$((IDLE * IDLE_EACH * 2))
for _ in $(seq 1 300); do
  [ "$(ss -Htn state established | wc -l)" -ge "$want" ] && break
  sleep 1
done
sleep 20   # steady state: the joins' announcements delivered and their buffers released
report "idle connections held"

"$BIN/roomcast-loadgen" fanout --rooms "$FANOUT_ROOMS" --clients "$ROOM_SIZE" \
  --publishers "$FANOUT_ROOMS" --rate "$RATE" --duration 30s --setup-timeout 300s \
  --url "$URLS" --server-pid "${SERVERS[0]}" --label fanout > /tmp/kc-fanout.txt 2>&1 &
FANOUT=$!
LOADGENS+=($FANOUT)
# Sample every node while the fan-out sets up and runs (bounded: the load generator's own
# set-up and run are bounded too).
for _ in $(seq 1 30); do
  sleep 20
  kill -0 $FANOUT 2>/dev/null || break
  report "fan-out load generator running"
done
free -m | head -2
wait $FANOUT || echo "the fan-out load generator failed" >&2
# Where a message's time went on each node: arrival to the last local enqueue (commit
# included), and the group commit alone; means over the run, from /metrics.
for i in $(seq 1 $NODES); do
  curl -s "http://127.0.0.1:$((18300 + i))/metrics" | awk -v node="$i" '
    /^roomcast_broadcast_seconds_sum/ {bs=$2} /^roomcast_broadcast_seconds_count/ {bc=$2}
    /^roomcast_store_commit_seconds_sum/ {cs=$2} /^roomcast_store_commit_seconds_count/ {cc=$2}
    END { if (bc > 0 && cc > 0) printf "node %s: broadcast mean %.1f ms over %d, commit mean %.1f ms over %d\n", node, 1000*bs/bc, bc, 1000*cs/cc, cc }'
done
grep -h -E "^(expected|received|lost|duplicates|clients closed|latency|sent)" /tmp/kc-fanout.txt || tail -30 /tmp/kc-fanout.txt
