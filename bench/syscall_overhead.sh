#!/usr/bin/env bash
# Added cost per traced socket read/write: a TCP loopback ping-pong (bench/pingpong.c)
# with nothing attached, with no-op programs on the agent's hooks (the floor), and with
# `flowtracer capture` attached, phases interleaved and repeated in one run. On a
# shared machine only these side-by-side ratios mean anything.
#
#   bench/syscall_overhead.sh [BUILD_DIR]
#   env: ROUNDS (5), ITERATIONS (200000), THREADS ("1 1paced 2"), SYSCALL_HOOKS (1: also
#        measure the syscall-tracepoint fallback family), PORT (21001)
set -euo pipefail
BUILD=${1:-$(dirname "$0")/../build}
BUILD=$(cd "$BUILD" && pwd)
ROUNDS=${ROUNDS:-5}
ITERATIONS=${ITERATIONS:-200000}
# 1: both ends in one thread; 1paced: the same with a 1 ms pause every 25 iterations (at
# most ~100 000 events/s, which the agent can keep up with: nothing lost); 2: two threads.
THREADS=${THREADS:-"1 1paced 2"}
SYSCALL_HOOKS=${SYSCALL_HOOKS:-1}
PORT=${PORT:-21001}
FLOWTRACER=$BUILD/flowtracer
PINGPONG=$BUILD/bench/pingpong
NOOP=$BUILD/bench/noop_hooks
for binary in "$FLOWTRACER" "$PINGPONG" "$NOOP"; do
  [[ -x $binary ]] || { echo "missing $binary: cmake --build $BUILD --target benchmarks" >&2; exit 1; }
done
[[ $(id -u) == 0 ]] || { echo "needs root (loads eBPF programs)" >&2; exit 1; }

# The syscall-tracepoint family needs tracefs (flowtracer mounts it itself; the no-op loader does not).
mountpoint -q /sys/kernel/tracing || mount -t tracefs nodev /sys/kernel/tracing

WORK=$(mktemp -d /tmp/ft-syscall-bench.XXXXXX)
HELPER_PID=""
cleanup() {
  if [[ -n $HELPER_PID ]]; then kill -INT "$HELPER_PID" 2>/dev/null || true; wait "$HELPER_PID" 2>/dev/null || true; fi
}
trap cleanup EXIT

# Waits (bounded) until `file` contains `pattern`.
wait_for() {
  local file=$1 pattern=$2
  for _ in $(seq 1 100); do
    grep -q "$pattern" "$file" 2>/dev/null && return 0
    sleep 0.1
  done
  echo "timed out waiting for '$pattern' in $file:" >&2; cat "$file" >&2; return 1
}

# Ids of loaded programs of the capture's data hooks (to tell the phase's own programs
# from those of other tracers on the machine).
data_hook_program_ids() {
  bpftool -j prog show | python3 -c '
import json, sys
for p in json.load(sys.stdin):
    if p.get("name", "").startswith(("ft_sock_", "ft_enter_", "ft_exit_")):
        print(p["id"])'
}

# With kernel.bpf_stats_enabled, the kernel times each program run: the agent's own
# share of the added cost, apart from the hook's fixed cost and cache effects. Measured
# in a separate ping-pong run (the timing itself costs ~2 clock reads per run).
program_ns_per_run() {
  local phase=$1 before=$2
  sysctl -qw kernel.bpf_stats_enabled=1
  "$PINGPONG" --threads 1 --iterations $((ITERATIONS / 2)) --port "$PORT" >/dev/null
  bpftool -j prog show | python3 -c '
import json, sys
before = set(sys.argv[2].split())
runs = time = 0
for p in json.load(sys.stdin):
    if str(p["id"]) in before or not p.get("name", "").startswith(("ft_sock_", "ft_enter_", "ft_exit_")):
        continue
    runs += p.get("run_cnt", 0); time += p.get("run_time_ns", 0)
if runs:
    print(sys.argv[1], "program_ns_per_run", round(time / runs, 1), "runs", runs)' "$phase" "$before" \
    >>"$WORK/program_cost"
  sysctl -qw kernel.bpf_stats_enabled=0
}

# start_phase NAME: attaches what the phase needs; HELPER_PID is its process.
start_phase() {
  local phase=$1 log=$WORK/$1.log
  HELPER_PID=""
  case $phase in
    base) ;;
    noop_socket|noop_syscall)
      "$NOOP" "${phase#noop_}" >"$log" 2>&1 &
      HELPER_PID=$!
      wait_for "$log" "attached" ;;
    capture_socket|capture_syscall)
      PROGRAMS_BEFORE=$(data_hook_program_ids | tr '\n' ' ')
      "$FLOWTRACER" capture -d 0 --hooks "${phase#capture_}" --port "$PORT" -o /dev/null \
        >"$log" 2>&1 &
      HELPER_PID=$!
      wait_for "$log" "capturing with" ;;
  esac
}

stop_phase() {
  local phase=$1 threads=$2
  [[ -n $HELPER_PID ]] || return 0
  if [[ $phase == capture_* && $threads == 1 ]]; then program_ns_per_run "$phase" "$PROGRAMS_BEFORE"; fi
  kill -INT "$HELPER_PID"
  wait "$HELPER_PID" || true
  HELPER_PID=""
  if [[ $phase == capture_* ]]; then
    # Losses the agent reports at exit ("events lost, ring buffer full", ...).
    local lost
    lost=$(grep -E "events lost|lost_ring_buffer_full" "$WORK/$phase.log" | grep -oE "[0-9]+$" | head -1 || true)
    echo "$phase $threads ${lost:-0}" >>"$WORK/losses"
  fi
}

PHASES=(base noop_socket capture_socket)
if [[ $SYSCALL_HOOKS == 1 ]]; then PHASES+=(noop_syscall capture_syscall); fi

echo "# syscall_overhead: $ROUNDS rounds x ${#PHASES[@]} phases, $ITERATIONS iterations each, threads: $THREADS"
: >"$WORK/samples"
for round in $(seq 1 "$ROUNDS"); do
  # Rotate the phase order each round so drift on the machine does not favour one phase.
  n=${#PHASES[@]}
  for i in $(seq 0 $((n - 1))); do
    phase=${PHASES[$(((i + round) % n))]}
    for threads in $THREADS; do
      # One attach per measurement, so losses are known per thread mode.
      start_phase "$phase"
      if [[ $threads == 1paced ]]; then
        result=$("$PINGPONG" --threads 1 --pace 25 --iterations $((ITERATIONS / 4)) --port "$PORT")
      else
        result=$("$PINGPONG" --threads "$threads" --iterations "$ITERATIONS" --port "$PORT")
      fi
      wall=$(echo "$result" | sed -E 's/^ns_per_iteration=([0-9.]+).*/\1/')
      cpu=$(echo "$result" | sed -E 's/.*cpu_ns_per_iteration=([0-9.]+).*/\1/')
      echo "$phase $threads $cpu $wall" >>"$WORK/samples"
      echo "round $round $phase threads=$threads cpu_ns_per_iteration=$cpu wall_ns_per_iteration=$wall"
      stop_phase "$phase" "$threads"
    done
  done
done

echo
echo "# medians over $ROUNDS rounds; 4 socket calls per iteration (2 writes, 2 reads)."
echo "# cpu: the ping-pong process's CPU time (BPF programs run in its syscalls), the figure"
echo "# to compare; wall: elapsed time, which on a shared machine also measures contention."
printf "%-16s %-8s %12s %14s %10s %12s %14s\n" phase threads cpu_ns/iter added_ns/call cpu_ratio \
  wall_ns/iter added_wall/call
# median PHASE THREADS COLUMN
median() {
  awk -v p="$1" -v t="$2" -v c="$3" '$1==p && $2==t {print $c}' "$WORK/samples" | sort -n |
    awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'
}
for threads in $THREADS; do
  base_cpu=$(median base "$threads" 3)
  base_wall=$(median base "$threads" 4)
  for phase in "${PHASES[@]}"; do
    cpu=$(median "$phase" "$threads" 3)
    wall=$(median "$phase" "$threads" 4)
    awk -v p="$phase" -v t="$threads" -v c="$cpu" -v bc="$base_cpu" -v w="$wall" -v bw="$base_wall" \
      'BEGIN {printf "%-16s %-8s %12.1f %14.1f %10.3f %12.1f %14.1f\n", p, t, c, (c-bc)/4, bc/c, w, (w-bw)/4}'
  done
done
echo
echo "# BPF program run time per run (kernel.bpf_stats_enabled), medians over rounds"
for phase in "${PHASES[@]}"; do
  [[ $phase == capture_* ]] || continue
  awk -v p="$phase" '$1==p {print $3}' "$WORK/program_cost" 2>/dev/null | sort -n |
    awk -v p="$phase" '{a[NR]=$1} END {if (NR) printf "%-16s %8.1f ns/run\n", p, (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'
done
echo
echo "# events lost per capture phase (the agent shares 2 CPUs with the ping-pong and the"
echo "# machine's other load; a lost event costs the traced call less than a delivered one)"
printf "%-16s %-8s %12s\n" phase threads "events lost (per run, all rounds)"
for phase in "${PHASES[@]}"; do
  [[ $phase == capture_* ]] || continue
  for threads in $THREADS; do
    printf "%-16s %-8s %s\n" "$phase" "$threads" \
      "$(awk -v p="$phase" -v t="$threads" '$1==p && $2==t {printf "%s ", $3}' "$WORK/losses")"
  done
done
rm -rf "$WORK"
