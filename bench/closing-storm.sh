#!/usr/bin/env bash
# A closing storm on one node of a cluster (docs/SCALING.md, "A closing storm, with the writes
# batched"): two two-node clusters, of the `roomcast` binaries BIN_A and BIN_B, on one Redis
# (a prefix each) and a PostgreSQL database each; `roomcast-loadgen idle` holds N connections
# (each its own user) on node 1 of each (one invocation, the second cluster as the baseline),
# then closes them at once. A sampler reads node 1's open descriptors and RSS every 50 ms: how
# long the closes take and where RSS goes meanwhile.
#
#   cargo build --release -p roomcast-server -p roomcast-loadgen
#   bench/closing-storm.sh old/roomcast before target/release/roomcast after /tmp/storm
#
# Prints per cluster: RSS held, how long the storm took (from the first sample after the hold
# with fewer connections or RSS 4 MiB above the held level, to 20 descriptors or fewer), its
# peak RSS, RSS 1, 2, 3 and 5 s after it began and at the end; then the load generator's
# figures.
set -euo pipefail
BIN_A=$1 LABEL_A=$2 BIN_B=$3 LABEL_B=$4 OUT=$5
N=${N:-5000}
LOADGEN=${LOADGEN:-target/release/roomcast-loadgen}
PG=postgres://postgres@127.0.0.1:5432
REDIS_URL=redis://127.0.0.1:6379
export ROOMCAST_JWT_SECRET=${ROOMCAST_JWT_SECRET:-$(head -c 32 /dev/urandom | base64)}
ulimit -n "$(ulimit -Hn)"
mkdir -p "$OUT"
LIMITS_OFF=(ROOMCAST_CONNECT_RATE=0 ROOMCAST_AUTH_RATE=0 ROOMCAST_MESSAGE_RATE=0
  ROOMCAST_MAX_ROOM_MEMBERS=0 ROOMCAST_MAX_ROOMS_PER_CONNECTION=0 ROOMCAST_ROOM_CREATE_RATE=0)
SERVERS=() SAMPLERS=() PREFIXES=()
cleanup() {
  kill "${SAMPLERS[@]}" 2>/dev/null || true
  kill "${SERVERS[@]}" 2>/dev/null || true
  wait 2>/dev/null || true
  for p in "${PREFIXES[@]}"; do
    redis-cli -u "$REDIS_URL" --scan --pattern "${p}*" | xargs -r -n 500 redis-cli -u "$REDIS_URL" del >/dev/null || true
  done
}
trap cleanup EXIT
wait_port() {
  for _ in $(seq 1 300); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.1
  done
  echo "port $1 did not open" >&2; return 1
}
start_cluster() { # bin label base_port -> sets PID1
  local bin=$1 label=$2 base=$3 db="rb_$2" prefix="rb:$2:$$:"
  PREFIXES+=("$prefix")
  psql "$PG/postgres" -qAtc "DROP DATABASE IF EXISTS $db" -c "CREATE DATABASE $db" >/dev/null
  for i in 1 2; do
    local port=$((base + i))
    env "${LIMITS_OFF[@]}" DATABASE_URL="$PG/$db" REDIS_URL="$REDIS_URL" \
      ROOMCAST_REDIS_PREFIX="$prefix" ROOMCAST_USER_DIRECTORY=token \
      ROOMCAST_LISTEN="127.0.0.1:$port" RUST_LOG=warn WEBSOCKET_MAX_CONNECTIONS=20000 \
      "$bin" serve > "$OUT/server-$label-$i.log" 2>&1 &
    SERVERS+=($!)
    [ "$i" = 1 ] && PID1=$!
    wait_port "$port"
  done
}
sampler() { # pid port file
  local t0; t0=$(date +%s%N)
  while kill -0 "$1" 2>/dev/null; do
    # open descriptors less those it had at rest: its connections (cheaper to read than ss)
    echo "$((($(date +%s%N) - t0) / 1000000)) $(($(ls -U "/proc/$1/fd" | wc -l) - ${BASE_FDS[$1]})) $(awk '/VmRSS/ {print $2}' "/proc/$1/status")"
    sleep 0.05
  done > "$3"
}
start_cluster "$BIN_A" "$LABEL_A" 18410; PID_A=$PID1
start_cluster "$BIN_B" "$LABEL_B" 18420; PID_B=$PID1
declare -A BASE_FDS
for p in "$PID_A" "$PID_B"; do BASE_FDS[$p]=$(ls -U "/proc/$p/fd" | wc -l); done
sampler "$PID_A" 18411 "$OUT/samples-$LABEL_A.txt" & SAMPLERS+=($!)
sampler "$PID_B" 18421 "$OUT/samples-$LABEL_B.txt" & SAMPLERS+=($!)
"$LOADGEN" idle --connections "$N" --rooms 100 --hold 5s --broadcast false \
  --url ws://127.0.0.1:18411/ws/auth --server-pid "$PID_A" --label "$LABEL_A" \
  --baseline-url ws://127.0.0.1:18421/ws/auth --baseline-pid "$PID_B" --baseline-label "$LABEL_B" \
  --setup-timeout 300s > "$OUT/loadgen.txt" 2>&1
sleep 10   # the samplers see where RSS settles
summarize() { # samples (ms descriptors rss_kb) N label
  awk -v n="$2" -v l="$3" '
    !full && $2 >= n {full=$1}
    full && !held && $1 >= full + 1000 {held=$3}
    held && !start && ($2 < n || $3 > held + 4096) {start=$1}
    start && !end && $2 <= 20 {end=$1}
    start && $3 > peak {peak=$3}
    start {t=$1-start; if (t>=1000 && !a1) a1=$3; if (t>=2000 && !a2) a2=$3; if (t>=3000 && !a3) a3=$3; if (t>=5000 && !a5) a5=$3}
    {last=$3}
    END {printf "%s: held %.1f MiB; the storm took %d ms; peak %.1f MiB; +1 s %.1f, +2 s %.1f, +3 s %.1f, +5 s %.1f, end %.1f MiB\n", l, held/1024, end-start, peak/1024, a1/1024, a2/1024, a3/1024, a5/1024, last/1024}' "$1"
}
for l in "$LABEL_A" "$LABEL_B"; do summarize "$OUT/samples-$l.txt" "$N" "$l"; done | tee "$OUT/summary.txt"
grep -iE "rss|per connection|closed" "$OUT/loadgen.txt" | grep -v '^{' | head -20
