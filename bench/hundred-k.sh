#!/usr/bin/env bash
# 100,000 connections on one machine whose per-process descriptor limit is 20,000: six
# `roomcast serve` processes (SQLite on tmpfs, one file each), five holding 16,667 idle
# authenticated connections each, the sixth serving a light fan-out to 16,700 clients while
# the others are held. Prints the sockets open and each server's RSS; each load generator's
# report lands in /tmp/k-idle{1..5}.txt and /tmp/k-fanout.txt. About four minutes.
#
# Usage (from the repository root, after
#   cargo build --release -p roomcast-server -p roomcast-loadgen):
#   ROOMCAST_JWT_SECRET=$(head -c 32 /dev/urandom | base64) bench/hundred-k.sh
set -euo pipefail
: "${ROOMCAST_JWT_SECRET:?set ROOMCAST_JWT_SECRET}"
export ROOMCAST_JWT_SECRET
BIN=${BIN:-target/release}
ulimit -n "$(ulimit -Hn)"

wait_port() {
  for _ in $(seq 1 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.1
  done
  echo "port $1 did not open" >&2
  return 1
}

SERVERS=()
cleanup() { kill "${SERVERS[@]}" 2>/dev/null || true; }
trap cleanup EXIT

for i in 1 2 3 4 5 6; do
  port=$((18200 + i))
  rm -f "/dev/shm/roomcast-100k-$port.db"*
  WEBSOCKET_MAX_CONNECTIONS=19000 DATABASE_URL="sqlite:///dev/shm/roomcast-100k-$port.db" \
    ROOMCAST_USER_DIRECTORY=token ROOMCAST_LISTEN="127.0.0.1:$port" RUST_LOG=warn \
    "$BIN/roomcast" serve > "/tmp/k-server-$port.log" 2>&1 &
  SERVERS+=($!)
  wait_port "$port"
done

rss() {
  for pid in "${SERVERS[@]}"; do
    echo "server $pid $(grep VmRSS "/proc/$pid/status" | tr -s ' ')"
  done
}

LOADGENS=()
for i in 1 2 3 4 5; do
  "$BIN/roomcast-loadgen" idle --connections 16667 --rooms 167 --hold 150s \
    --url "ws://127.0.0.1:$((18200 + i))/ws/auth" --server-pid "${SERVERS[$((i - 1))]}" \
    --label "idle$i" > "/tmp/k-idle$i.txt" 2>&1 &
  LOADGENS+=($!)
  sleep 2
done
sleep 75
echo "after set-up: $(ss -tn state established | tail -n +2 | wc -l) sockets (both ends)"
rss
"$BIN/roomcast-loadgen" fanout --rooms 167 --clients 100 --publishers 167 --rate 200 \
  --duration 20s --url ws://127.0.0.1:18206/ws/auth --server-pid "${SERVERS[5]}" \
  --label fanout6 > /tmp/k-fanout.txt 2>&1 &
LOADGENS+=($!)
sleep 25
echo "during the fan-out: $(ss -tn state established | tail -n +2 | wc -l) sockets (both ends)"
rss
free -m | head -2
wait "${LOADGENS[@]}"
grep -h -E "^(server RSS per connection|lost|clients closed|latency p99 )" /tmp/k-idle*.txt /tmp/k-fanout.txt || true
