#!/usr/bin/env bash
# BPF program run time per traced call of two flowtracer builds, measured on the very same
# calls: both captures are attached at once (each with its own maps and ring buffer), a
# ping-pong runs, and kernel.bpf_stats_enabled times each build's data programs. Which
# build attaches first alternates every round. Pairing removes most of the machine's
# drift, which on a shared 2-CPU machine moves separate runs by ±30%.
#
#   bench/program_cost_ab.sh A_FLOWTRACER B_FLOWTRACER [ROUNDS]
#   env: MODE (paced: a 1 ms pause every 25 iterations, the agents keep up; unpaced),
#        ITERATIONS (20000), PORT (21002), PINGPONG (build/bench/pingpong)
set -euo pipefail
A=$1
B=$2
ROUNDS=${3:-8}
MODE=${MODE:-paced}
ITERATIONS=${ITERATIONS:-20000}
PORT=${PORT:-21002}
PINGPONG=${PINGPONG:-$(dirname "$0")/../build/bench/pingpong}
[[ $(id -u) == 0 ]] || { echo "needs root (loads eBPF programs)" >&2; exit 1; }
WORK=$(mktemp -d /tmp/ft-program-cost.XXXXXX)
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill -INT "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT

# Ids of the BPF programs a process holds (its fds' fdinfo).
program_ids() { cat /proc/"$1"/fdinfo/* 2>/dev/null | awk '/^prog_id:/ {print $2}' | sort -u | tr '\n' ' '; }

# "runs run_time_ns" summed over the data programs (ft_sock_*) among the given ids.
program_stats() {
  bpftool -j prog show | python3 -c '
import json, sys
ids = set(sys.argv[1].split()); runs = ns = 0
for p in json.load(sys.stdin):
    if str(p["id"]) in ids and p.get("name", "").startswith("ft_sock_"):
        runs += p.get("run_cnt", 0); ns += p.get("run_time_ns", 0)
print(runs, ns)' "$1"
}

# start NAME BINARY: sets STARTED_PID and STARTED_IDS.
start() {
  local log=$WORK/$1.log
  "$2" capture -d 0 --hooks socket --port "$PORT" -o /dev/null >"$log" 2>&1 &
  STARTED_PID=$!
  PIDS+=("$STARTED_PID")
  for _ in $(seq 1 100); do grep -q "capturing with" "$log" && break; sleep 0.1; done
  grep -q "capturing with" "$log" || { echo "$1 did not start:" >&2; cat "$log" >&2; exit 1; }
  STARTED_IDS=$(program_ids "$STARTED_PID")
}

echo "# program_cost_ab: $ROUNDS rounds, $MODE ping-pong of $ITERATIONS iterations; ns per program run"
: >"$WORK/samples"
for round in $(seq 1 "$ROUNDS"); do
  if ((round % 2)); then
    start a "$A"; pid_a=$STARTED_PID; ids_a=$STARTED_IDS
    start b "$B"; pid_b=$STARTED_PID; ids_b=$STARTED_IDS
  else
    start b "$B"; pid_b=$STARTED_PID; ids_b=$STARTED_IDS
    start a "$A"; pid_a=$STARTED_PID; ids_a=$STARTED_IDS
  fi
  a0=$(program_stats "$ids_a"); b0=$(program_stats "$ids_b")
  sysctl -qw kernel.bpf_stats_enabled=1
  if [[ $MODE == paced ]]; then
    "$PINGPONG" --threads 1 --pace 25 --iterations "$ITERATIONS" --port "$PORT" >/dev/null
  else
    "$PINGPONG" --threads 1 --iterations "$ITERATIONS" --port "$PORT" >/dev/null
  fi
  sysctl -qw kernel.bpf_stats_enabled=0
  a1=$(program_stats "$ids_a"); b1=$(program_stats "$ids_b")
  kill -INT "$pid_a" "$pid_b"; wait "$pid_a" "$pid_b" || true
  PIDS=()
  python3 -c '
import sys
a0, a1, b0, b1 = [list(map(int, x.split())) for x in sys.argv[2:6]]
a = (a1[1] - a0[1]) / max(1, a1[0] - a0[0]); b = (b1[1] - b0[1]) / max(1, b1[0] - b0[0])
print(sys.argv[1], round(a, 1), round(b, 1), a1[0] - a0[0], b1[0] - b0[0])' "$round" "$a0" "$a1" "$b0" "$b1" |
    tee -a "$WORK/samples" | awk '{printf "round %s: A %s ns/run, B %s ns/run (runs %s, %s)\n", $1, $2, $3, $4, $5}'
done
python3 - "$WORK/samples" <<'EOF'
import statistics, sys
rows = [list(map(float, line.split())) for line in open(sys.argv[1])]
rows = [r for r in rows if r[3] > 0 and r[4] > 0 and r[1] > 0]
a = [r[1] for r in rows]; b = [r[2] for r in rows]; ratio = [r[2] / r[1] for r in rows]
span = lambda v: "median %.1f (%.1f-%.1f)" % (statistics.median(v), min(v), max(v))
print("A", span(a), "ns/run")
print("B", span(b), "ns/run")
print("B/A per round: median %.3f (%.3f-%.3f), %d rounds" % (statistics.median(ratio), min(ratio), max(ratio), len(ratio)))
EOF
