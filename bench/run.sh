#!/usr/bin/env bash
# The benchmark as the README reports it: every scenario RUNS times (default 3), each against a
# fresh server with the embedded default configuration on loopback ephemeral ports, the server
# pinned to CPU 0 and the generator to CPU 1 (taskset). Prints each run's JSON line, appends it
# to target/bench/results.jsonl, and ends with a table of medians.
#
#   bench/run.sh                       # all scenarios, 3 runs each
#   RUNS=1 bench/run.sh churn relay    # only scenarios whose name starts with these words
#   SERVER=/path/to/other/server bench/run.sh   # same scenarios against another build
#   TLS=1 bench/run.sh connect relay   # over TLS: a self-signed certificate made per run
#                                      # (signalling-bench gen-cert, rcgen), the server started
#                                      # with --https --streamer_tls --sfu_tls, every client wss://
#   AUTH=1 bench/run.sh connect relay  # player and streamer tokens required (?token= in the URLs)
#   SERVER_ARGS="--metrics false" bench/run.sh relay   # more server flags
#   CLUSTER=1 bench/run.sh relay churn subscribe  # across two nodes (issue 14): a redis-server
#                                      # on a free port (--save "" --appendonly no) and two
#                                      # servers, node a and node b (--redis_url, --node_id,
#                                      # default heartbeats); streamers on a, players on b; the
#                                      # generator waits until b lists a's streamers
#                                      # (--cluster) and counts the CPU of a, b and Redis
#                                      # (--also-pid). All three are pinned to SERVER_CPU
#                                      # (NODE_A_CPU, NODE_B_CPU, REDIS_CPU override it): the
#                                      # server side gets the one core a single server gets,
#                                      # the generator keeps the other.
#   bench/run.sh --table FILE          # the medians table of JSON lines saved earlier
set -euo pipefail
cd "$(dirname "$0")/.."

table() {
  python3 - "$1" <<'PY'
import json, statistics, sys

rows = [json.loads(line) for line in open(sys.argv[1]) if line.strip()]
def get(d, path):
    for k in path.split("."):
        d = d.get(k) if isinstance(d, dict) else None
    return d
# (figure, path in the JSON line, scale, decimals)
figures = {
    "connect": [("connections/s", "results.connections_per_s", 1, 0),
                ("connect→config p99 ms", "results.latency_us.p99", 1e-3, 1),
                ("server CPU µs/connection", "results.server_cpu_us_per_connection", 1, 1),
                ("server KiB/idle connection", "results.kib_per_idle_connection", 1, 2)],
    "subscribe": [("negotiations/s", "results.negotiations_per_s", 1, 0),
                  ("negotiation p99 ms", "results.latency_us.p99", 1e-3, 1),
                  ("server CPU µs/negotiation", "results.server_cpu_us_per_negotiation", 1, 1)],
    "relay": [("messages/s (both ways)", "results.messages_per_s", 1, 0),
              ("one-way p99 ms, player→streamer", "results.up.latency_us.p99", 1e-3, 2),
              ("one-way p99 ms, streamer→player", "results.down.latency_us.p99", 1e-3, 2),
              ("server CPU µs/message", "results.server_cpu_us_per_message", 1, 2)],
    "churn": [("join/leave cycles/s", "results.cycles_per_s", 1, 0),
              ("server CPU µs/cycle", "results.server_cpu_us_per_cycle", 1, 1)],
    "hostile": [("well-behaved one-way p99 ms, player→streamer", "results.up.latency_us.p99", 1e-3, 1),
                ("well-behaved one-way p99 ms, streamer→player", "results.down.latency_us.p99", 1e-3, 1),
                ("streamers survived", "results.streamers_survived", 1, 0),
                ("flooders closed", "results.flooders_closed", 1, 0),
                ("server RSS peak − before, MiB", "results.rss_kib.peak_growth", 1 / 1024, 1)],
}
groups = {}
for r in rows:
    p = r["params"]
    label = r["scenario"]
    if label == "relay":
        label += f" at {p['rate']} msg/s" if p["rate"] else f" flat out (window {p['window']})"
    if r.get("tls"):
        label += " over TLS"
    if r.get("cluster"):
        label += " across two nodes"
    groups.setdefault(label, []).append(r)
print("\n| scenario | figure | median | runs | lost |")
print("|---|---|---|---|---|")
for label, rs in groups.items():
    lost = sum(r["lost"] + r["unexpected"] + r["failed"] for r in rs)
    for name, path, scale, decimals in figures[rs[0]["scenario"]]:
        vals = [v * scale for v in (get(r, path) for r in rs) if v is not None]
        if vals:
            runs = ", ".join(f"{v:.{decimals}f}" for v in vals)
            median = statistics.median(vals)
            print(f"| {label} | {name} | {median:.{decimals}f} | {runs} | {lost} |")
PY
}

if [ "${1:-}" = --table ]; then
  table "$2"
  exit
fi

RUNS=${RUNS:-3}
# Set LIMITS= (empty) to run a server that has no such flags (SERVER=older build).
if [ -z "${LIMITS+set}" ]; then
  LIMITS=(--max-connections-per-ip 0 --upgrades-per-ip-per-minute 0
    --messages-per-second 1000000000 --message-burst 1000000000)
else
  read -r -a LIMITS <<<"$LIMITS"
fi
SERVER_CPU=${SERVER_CPU:-0}
GENERATOR_CPU=${GENERATOR_CPU:-1}
NODE_A_CPU=${NODE_A_CPU:-$SERVER_CPU}
NODE_B_CPU=${NODE_B_CPU:-$SERVER_CPU}
REDIS_CPU=${REDIS_CPU:-$SERVER_CPU}
OUT=target/bench
mkdir -p "$OUT"
results="$OUT/results.jsonl"

cargo build --release --locked --quiet -p signalling -p signalling-bench
SERVER=${SERVER:-target/release/signalling}
BENCH=target/release/signalling-bench

# 10,000 idle connections need 10,000 descriptors in each process: raise the soft limit to the
# hard one.
ulimit -n "$(ulimit -Hn)"
if [ "$(ulimit -n)" != unlimited ] && [ "$(ulimit -n)" -lt 10100 ]; then
  echo "run.sh: open-file limit $(ulimit -n) is below the 10,100 the connect scenario needs" >&2
  exit 2
fi

scenarios=(
  "connect -n 10000 --concurrency 100"
  "subscribe -s 10 -p 100 --concurrency 100"
  "relay -p 10 --duration 5 --rate 20000"
  "relay -p 10 --duration 5 --rate 4000"
  "relay -p 10 --duration 5 --window 256"
  "churn --duration 5 --concurrency 50"
  "hostile -s 2 -p 10 --rate 1000 --duration 5 --pause-ms 3000"
)

wanted() {
  [ $# -eq 1 ] && return 0
  local scenario=$1; shift
  for w in "$@"; do [[ $scenario == "$w"* ]] && return 0; done
  return 1
}

# start_server CPU LOG ARGS...: starts the server pinned to CPU, logging to LOG; sets spid and
# waits until it logs every line of wait_for (at most 10 s).
start_server() {
  local cpu=$1 log=$2
  shift 2
  taskset -c "$cpu" "$SERVER" --bind-address 127.0.0.1 \
    --streamer-port 0 --player-port 0 --sfu-port 0 "$@" >"$log" 2>&1 &
  spid=$!
  for _ in $(seq 100); do
    local all=1 line
    for line in "${wait_for[@]}"; do grep -qi "$line" "$log" || all=0; done
    [ "$all" = 1 ] && return 0
    kill -0 "$spid" 2>/dev/null || { cat "$log" >&2; return 1; }
    sleep 0.1
  done
  echo "run.sh: the server did not log its listening addresses:" >&2
  cat "$log" >&2
  kill "$spid"
  return 1
}

# start_redis LOG: a redis-server pinned to REDIS_CPU on a free 127.0.0.1 port, nothing
# persisted; sets rpid and redis_port once it is ready (another process may take the free port
# first: then another port, five times at most).
start_redis() {
  local log=$1 dir
  command -v redis-server >/dev/null || {
    echo "run.sh: CLUSTER=1 needs redis-server (tests/redis/setup.sh installs it)" >&2
    return 1
  }
  dir=$(mktemp -d)
  for _ in 1 2 3 4 5; do
    redis_port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    taskset -c "$REDIS_CPU" redis-server --port "$redis_port" --bind 127.0.0.1 --save "" \
      --appendonly no --daemonize no --loglevel notice --dir "$dir" >"$log" 2>&1 &
    rpid=$!
    for _ in $(seq 100); do
      grep -q "Ready to accept connections" "$log" && { rm -rf "$dir"; return 0; }
      kill -0 "$rpid" 2>/dev/null || break
      sleep 0.1
    done
    kill "$rpid" 2>/dev/null || true
    wait "$rpid" 2>/dev/null || true
  done
  echo "run.sh: redis-server did not start:" >&2
  cat "$log" >&2
  rm -rf "$dir"
  return 1
}

run_one() {
  local scenario=$1 log spid streamer player certs
  local server_args=() bench_args=() scheme=ws pids=()
  log=$(mktemp)
  wait_for=("SFU port listening")
  if [ "${TLS:-0}" = 1 ]; then
    certs=$(mktemp -d)
    "$BENCH" gen-cert --dir "$certs"
    server_args=(--https --https-port 0 --ssl-cert-path "$certs/cert.pem"
      --ssl-key-path "$certs/key.pem" --streamer-tls --sfu-tls)
    bench_args=(--tls --tls-ca "$certs/cert.pem")
    scheme=wss
    wait_for+=("HTTPS port listening")
  fi
  # One generator on one address opening 10,000 connections is what the per-address limits
  # stop: they are off. The message rate is so high it never bites, but every message is still
  # checked against it, so its cost is in the figures (README, "Abuse limits").
  local query=""
  if [ "${AUTH:-0}" = 1 ]; then
    server_args+=(--player-token bench-t0ken --streamer-token bench-t0ken)
    query="/?token=bench-t0ken"
  fi
  local extra=()
  read -r -a extra <<<"${SERVER_ARGS:-}"
  server_args+=("${LIMITS[@]}" "${extra[@]}")
  local player_log=$log
  if [ "${CLUSTER:-0}" = 1 ]; then
    local rpid redis_port redis_log=$log.redis b_log=$log.b
    start_redis "$redis_log" || return 1
    pids+=("$rpid")
    server_args+=(--redis_url "redis://127.0.0.1:$redis_port")
    if ! start_server "$NODE_A_CPU" "$log" "${server_args[@]}" --node_id a; then
      kill "${pids[@]}"
      return 1
    fi
    pids+=("$spid")
    if ! start_server "$NODE_B_CPU" "$b_log" "${server_args[@]}" --node_id b; then
      kill "${pids[@]}"
      return 1
    fi
    pids+=("$spid")
    player_log=$b_log
    # Node a's PID is the server's (its memory); b's and Redis's CPU counts with it.
    bench_args+=(--cluster --server-pid "${pids[1]}" --also-pid "${pids[2]}" --also-pid "${pids[0]}")
  else
    start_server "$SERVER_CPU" "$log" "${server_args[@]}" || return 1
    pids+=("$spid")
    bench_args+=(--server-pid "$spid")
  fi
  streamer=$(grep -o 'streamer port listening on [0-9.:]*' "$log" | awk '{print $NF}')
  if [ "${TLS:-0}" = 1 ]; then
    # With --https the players' WebSocket is on the HTTPS port.
    player=$(grep -io 'https port listening on [0-9.:]*' "$player_log" | awk '{print $NF}')
  else
    player=$(grep -o 'player port listening on [0-9.:]*' "$player_log" | awk '{print $NF}')
  fi
  if [ -z "$streamer" ] || [ -z "$player" ]; then
    echo "run.sh: the server did not log its listening addresses:" >&2
    cat "$log" "$player_log" >&2
    kill "${pids[@]}"
    return 1
  fi
  # shellcheck disable=SC2086 # the scenario is a word list
  taskset -c "$GENERATOR_CPU" "$BENCH" --streamer "$scheme://$streamer$query" --player "$scheme://$player$query" \
    "${bench_args[@]}" $scenario | tee -a "$results" || status=$?
  kill "${pids[@]}"
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  if [ "${status:-0}" != 0 ] && [ "${CLUSTER:-0}" = 1 ]; then
    for f in "$log" "$player_log" "$log.redis"; do echo "== $f" >&2; tail -20 "$f" >&2; done
  fi
  rm -f "$log" "$log.b" "$log.redis"
  [ -n "${certs:-}" ] && rm -rf "$certs"
  return "${status:-0}"
}

: >"$results.new"
failed=0
for scenario in "${scenarios[@]}"; do
  wanted "$scenario" "${@:-}" || continue
  for run in $(seq "$RUNS"); do
    echo "== $scenario (run $run of $RUNS)" >&2
    run_one "$scenario" | tee -a "$results.new" || failed=1
  done
done

table "$results.new"
rm -f "$results.new"
exit "$failed"
