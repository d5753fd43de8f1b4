#!/usr/bin/env python3
"""End-to-end load benchmarks: nginx on loopback under wrk and h2load, with no agent,
with `flowtracer capture`, and with capture plus OTLP export to a local sink, phases
interleaved and repeated in one run; the scale run (10 000 keep-alive connections,
100 000 connections churned); and cpu-ab, two builds attached at once to one load. Entry
points: bench/nginx_wrk.sh, bench/scale.sh.

Only ratios between phases of one run mean anything on a shared machine: each phase is
measured right beside the others and the phase order rotates every round.
"""
import argparse
import json
import os
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE_KB = os.sysconf("SC_PAGE_SIZE") // 1024

# The benchmarks' ports: 21000-21999.
NGINX_PORT = 21080
NGINX_CLOSE_PORT = 21081
OTLP_SINK_PORT = 21318


def log(message):
    print(message, flush=True)


# ---- /proc readings


def stop_process(process, sig, timeout_s):
    """Sends `sig` and waits; kills the process if it has not exited by then."""
    process.send_signal(sig)
    try:
        process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def cpu_seconds(pid):
    """utime + stime of a process (its threads included)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def schedstat_seconds(pid, field):
    """A /proc/PID/task/*/schedstat field summed over the live threads, in seconds."""
    total = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                total += int(f.read().split()[field])
        except OSError:
            pass
    return total / 1e9


def runqueue_wait_seconds(pid):
    """Time the process's threads were runnable but waiting for a CPU."""
    return schedstat_seconds(pid, 1)


def run_seconds(pid):
    """Time the process's live threads ran, in nanoseconds' precision (cpu_seconds counts
    10 ms ticks)."""
    return schedstat_seconds(pid, 0)


def memory_kb(pid):
    """(VmRSS, VmHWM) in KiB."""
    values = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                values[key] = int(rest.split()[0])
    return values.get("VmRSS", 0), values.get("VmHWM", 0)


def rss_breakdown_mb(pid):
    """Resident memory by kind, in MB: the malloc heap, the BPF ring buffer's mapping, other
    anonymous memory (the tracker's connection blocks, thread stacks, large allocations) and
    files (the binary and shared libraries, shared with other processes)."""
    kinds = {"heap": 0, "ring": 0, "anon": 0, "files": 0}
    kind = "anon"
    with open(f"/proc/{pid}/smaps") as f:
        for line in f:
            first = line.split(None, 6)
            if "-" in first[0] and len(first) >= 5 and ":" in first[3]:  # a mapping's header line
                name = first[5].strip() if len(first) > 5 else ""
                kind = ("heap" if name == "[heap]" else "ring" if name.startswith("anon_inode:bpf")
                        else "files" if name.startswith("/") else "anon")
            elif first[0] == "Rss:":
                kinds[kind] += int(first[1])
    return {k: round(v / 1024, 1) for k, v in kinds.items()}


class RssSampler:
    """Samples a process's RSS every `period_s` on a thread."""

    def __init__(self, pid, period_s=0.25):
        self.pid, self.period_s, self.samples = pid, period_s, []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        while not self._stop.is_set():
            try:
                self.samples.append((time.monotonic(), memory_kb(self.pid)[0]))
            except OSError:
                return
            self._stop.wait(self.period_s)

    def stop(self):
        self._stop.set()
        self._thread.join(timeout=2)
        return self.samples


# ---- nginx


NGINX_CONF = """
worker_processes {workers};
worker_rlimit_nofile 65536;
daemon off;
master_process on;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 30000; multi_accept on; }}
http {{
  access_log off;
  client_body_temp_path {prefix}/body;
  proxy_temp_path {prefix}/proxy;
  fastcgi_temp_path {prefix}/fastcgi;
  uwsgi_temp_path {prefix}/uwsgi;
  scgi_temp_path {prefix}/scgi;
  keepalive_requests 100000000;
  keepalive_timeout 600s;
  server {{
    listen 127.0.0.1:{port} backlog=8192 reuseport;
    location / {{ default_type text/plain; return 200 "hello, world\\n"; }}
  }}
  server {{
    listen 127.0.0.1:{close_port} backlog=8192;
    keepalive_timeout 0;
    location / {{ default_type text/plain; return 200 "hello, world\\n"; }}
  }}
}}
"""


class Nginx:
    def __init__(self, workers):
        self.prefix = tempfile.mkdtemp(prefix="ft-bench-nginx.")
        conf = os.path.join(self.prefix, "nginx.conf")
        with open(conf, "w") as f:
            f.write(NGINX_CONF.format(workers=workers, prefix=self.prefix, port=NGINX_PORT,
                                      close_port=NGINX_CLOSE_PORT))
        self.process = subprocess.Popen(["nginx", "-p", self.prefix, "-c", conf],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(100):
            try:
                subprocess.run(["curl", "-sf", "-o", "/dev/null", f"http://127.0.0.1:{NGINX_PORT}/"],
                               check=True, timeout=2)
                return
            except subprocess.CalledProcessError:
                time.sleep(0.1)
        raise RuntimeError(f"nginx did not start: see {self.prefix}/error.log")

    def stop(self):
        stop_process(self.process, signal.SIGQUIT, 10)
        shutil.rmtree(self.prefix, ignore_errors=True)


# ---- OTLP sink: accepts OTLP/HTTP exports and answers 200 with an empty response.

SINK_CODE = """
import http.server, sys

class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass

http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
"""


class OtlpSink:
    """A process of its own, as a collector is. It reads every request on the same two CPUs
    as nginx: at 20 000 evenly spaced requests/s that alone added 140-180 µs to nginx's p99
    (docs/performance.md, tenth round). `idle` runs it at SCHED_IDLE, so that what the agent
    itself adds can be read apart from it."""

    def __init__(self, port=OTLP_SINK_PORT, idle=False):
        command = [sys.executable, "-c", SINK_CODE, str(port)]
        if idle:
            command = ["chrt", "--idle", "0"] + command
        self.process = subprocess.Popen(command)
        deadline = time.monotonic() + 10
        while True:
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the OTLP sink did not start on port {port} (is the port taken?)")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                time.sleep(0.2)
                if self.process.poll() is None:  # not another run's sink answering
                    break
            except OSError:
                time.sleep(0.05)

    def stop(self):
        stop_process(self.process, signal.SIGTERM, 10)


# ---- The agent


def bench_binary(flowtracer, name):
    """A benchmark helper built beside `flowtracer` (BUILD/bench/NAME)."""
    binary = os.path.join(os.path.dirname(os.path.abspath(flowtracer)), "bench", name)
    if not os.path.exists(binary):
        raise RuntimeError(f"{binary} is missing: build the `benchmarks` target")
    return binary


class NoopHooks:
    """bench/noop_hooks: programs that return at once, on the data hooks the agent prefers
    (the socket tracepoints). Their phase is the floor of hooking alone, in the same run."""

    def __init__(self, flowtracer):
        binary = bench_binary(flowtracer, "noop_hooks")
        self.process = subprocess.Popen([binary, "socket"], stdout=subprocess.PIPE,
                                        stderr=subprocess.STDOUT, text=True)
        line = self.process.stdout.readline()  # "attached N programs", or why not
        if not line.startswith("attached"):
            self.process.kill()
            self.process.wait()
            raise RuntimeError(f"noop_hooks did not attach: {line.strip()}")

    def stop(self):
        stop_process(self.process, signal.SIGINT, 10)


def otlp_available(flowtracer):
    """`flowtracer agent` (OTLP export) exists in this build."""
    result = subprocess.run([flowtracer, "--help"], capture_output=True, text=True)
    return any(line.split()[:1] == ["agent"] for line in result.stdout.splitlines())


class Agent:
    """flowtracer in one phase's mode: 'capture', 'capture_nice' (the same at nice 10; the
    reader idles anyway, so this differs only while it is raised, under saturation) or
    'otlp' (agent exporting to the sink); 'capture_budget' and 'otlp_budget' are the same
    with the CPU budget that `extra_args` then carries (--max-cpu)."""

    def __init__(self, flowtracer, mode, extra_args, sink_port=OTLP_SINK_PORT):
        self.mode = mode
        self.log_path = tempfile.mktemp(prefix=f"ft-bench-{mode}.", suffix=".log")
        self.log = open(self.log_path, "w")
        if mode in ("capture", "capture_nice", "capture_budget"):
            command = [flowtracer, "capture", "-d", "0", "-o", "/dev/null"] + extra_args
            if mode == "capture_nice":
                command = ["nice", "-n", "10"] + command
            env = os.environ.copy()
        else:
            command = [flowtracer, "agent"] + extra_args
            env = dict(os.environ, OTEL_EXPORTER_OTLP_ENDPOINT=f"http://127.0.0.1:{sink_port}",
                       OTEL_EXPORTER_OTLP_PROTOCOL="http/protobuf")
        self.started_at = time.monotonic()
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=self.log, env=env)
        self.pid = self.process.pid
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"flowtracer {mode} exited: {open(self.log_path).read()}")
            if "capturing with" in open(self.log_path).read():
                break
            time.sleep(0.05)
        else:
            raise RuntimeError(f"flowtracer {mode} did not start: {open(self.log_path).read()}")
        time.sleep(0.5)  # settle: the first poll, process lookups
        self.start_rss_kb, self.start_hwm_kb = memory_kb(self.pid)

    def stop(self):
        """Stops the agent; returns (losses dict, peak RSS KiB, stderr text)."""
        _, hwm = memory_kb(self.pid)
        stop_process(self.process, signal.SIGINT, 30)
        self.log.close()
        text = open(self.log_path).read()
        os.unlink(self.log_path)
        return parse_losses(text), hwm, text


def parse_losses(text):
    """The closing report: capture's 'losses and oddities' lines, and the kernel counter
    warnings both capture and the agent print ('kernel: lost_ring_buffer_full = N')."""
    losses = {}
    in_losses = False
    for line in text.splitlines():
        kernel = re.search(r"kernel: lost_(\w+) = (\d+)", line)
        if kernel:
            losses[f"kernel: events lost, {kernel.group(1).replace('_', ' ')}"] = int(kernel.group(2))
            continue
        if line.startswith("losses and oddities"):
            in_losses = True
            continue
        if in_losses and line.startswith("  "):
            what, _, value = line.strip().rpartition(" ")
            if value.isdigit():
                losses[what.strip()] = int(value)
        elif in_losses and line.strip():
            in_losses = False
    return losses


def events_lost(losses):
    return sum(v for k, v in losses.items() if k.startswith("kernel:") and "lost" in k)


# ---- Load generators


def parse_duration_us(text):
    for suffix, scale in (("us", 1), ("ms", 1e3), ("s", 1e6)):
        if text.endswith(suffix):
            return float(text[: -len(suffix)]) * scale
    raise ValueError(text)


def run_wrk(port, duration_s, connections, threads, extra=()):
    result = subprocess.run(["wrk", "-t", str(threads), "-c", str(connections), "-d", f"{duration_s}s",
                             "--latency", *extra, f"http://127.0.0.1:{port}/"],
                            capture_output=True, text=True, timeout=duration_s + 60)
    out = result.stdout
    stats = {"requests": 0, "rps": 0.0, "p50_us": None, "p99_us": None, "errors": 0}
    in_distribution = False
    for line in out.splitlines():
        words = line.split()
        if "Latency Distribution" in line:
            in_distribution = True
        elif in_distribution and words and words[0] in ("50%", "99%"):
            stats["p50_us" if words[0] == "50%" else "p99_us"] = parse_duration_us(words[1])
        elif "requests in" in line:
            stats["requests"] = int(words[0])
            in_distribution = False
        elif line.startswith("Requests/sec:"):
            stats["rps"] = float(words[1])
        elif "Socket errors" in line or "Non-2xx" in line:
            stats["errors"] += sum(int(w.rstrip(",")) for w in words if w.rstrip(",").isdigit())
    if result.returncode != 0 or not stats["requests"]:
        raise RuntimeError(f"wrk failed: {result.stderr}{out}")
    return stats


def percentile(sorted_values, fraction):
    if not sorted_values:
        return None
    index = max(0, min(len(sorted_values) - 1, int(round(fraction * len(sorted_values) + 0.5)) - 1))
    return sorted_values[index]


def run_h2load_rate(port, rate, duration_s, clients):
    """HTTP/1.1 at a fixed request rate (h2load --rps per client); latency from its log."""
    log_path = tempfile.mktemp(prefix="ft-bench-h2load.")
    per_client = max(1, rate // clients)
    result = subprocess.run(["h2load", "--h1", "-c", str(clients), "--rps", str(per_client),
                             "-D", str(duration_s), "--warm-up-time", "1", "--log-file", log_path,
                             f"http://127.0.0.1:{port}/"],
                            capture_output=True, text=True, timeout=duration_s + 60)
    latencies = []
    statuses_ok = 0
    try:
        with open(log_path) as f:
            for line in f:
                parts = line.split()
                if len(parts) >= 3:
                    latencies.append(int(parts[2]))
                    statuses_ok += parts[1] == "200"
    finally:
        if os.path.exists(log_path):
            os.unlink(log_path)
    latencies.sort()
    if result.returncode != 0 or not latencies:
        raise RuntimeError(f"h2load failed: {result.stderr}{result.stdout}")
    return {"requests": len(latencies), "ok": statuses_ok, "rps": len(latencies) / duration_s,
            "p50_us": percentile(latencies, 0.50), "p99_us": percentile(latencies, 0.99)}


def run_paced(flowtracer, port, rate, duration_s, connections):
    """HTTP/1.1 at a fixed rate with evenly spaced requests (bench/paced_client.c says why
    beside h2load); p50/p99 from each request's send, as h2load's."""
    binary = bench_binary(flowtracer, "paced_client")
    result = subprocess.run([binary, "--port", str(port), "--rate", str(rate), "--seconds", str(duration_s),
                             "--connections", str(connections), "--warm-up", "1"],
                            capture_output=True, text=True, timeout=duration_s + 60)
    fields = dict(word.split("=", 1) for word in result.stdout.split() if "=" in word)
    if result.returncode != 0 or not int(fields.get("requests", 0)):
        raise RuntimeError(f"paced_client failed: {result.stderr}{result.stdout}")
    requests = int(fields["requests"])
    if requests < 0.99 * rate * duration_s or int(fields["unanswered"]):
        # Requests that never came back would leave the slowest out of p99.
        raise RuntimeError(f"paced_client: {requests} of {rate * duration_s} requests measured, "
                           f"{fields['unanswered']} unanswered: {result.stdout}")
    return {"requests": requests, "ok": int(fields["ok"]), "rps": requests / duration_s,
            "p50_us": int(fields["p50_us"]), "p99_us": int(fields["p99_us"]),
            "due_p99_us": int(fields["due_p99_us"]), "lateness_p99_us": int(fields["lateness_p99_us"]),
            "errors": int(fields["errors"])}


# ---- One measured phase


def measure(flowtracer, mode, extra_args, load):
    """Runs `load()` with the agent in `mode` ('none', 'noop', 'capture', 'otlp'); returns
    stats."""
    if mode == "noop":
        hooks = NoopHooks(flowtracer)
        try:
            return load()
        finally:
            hooks.stop()
    agent = Agent(flowtracer, mode, extra_args) if mode != "none" else None
    sampler = RssSampler(agent.pid) if agent else None
    cpu_before = cpu_seconds(agent.pid) if agent else 0.0
    wait_before = runqueue_wait_seconds(agent.pid) if agent else 0.0
    t0 = time.monotonic()
    stats = load()
    wall_s = time.monotonic() - t0
    if agent:
        stats["agent_cpu_s"] = cpu_seconds(agent.pid) - cpu_before
        stats["agent_cpu_pct"] = 100.0 * stats["agent_cpu_s"] / wall_s
        # Runnable but not running: how much other load on the machine starved the agent.
        stats["agent_runqueue_wait_pct"] = 100.0 * (runqueue_wait_seconds(agent.pid) - wait_before) / wall_s
        samples = [kb for _, kb in sampler.stop()]
        # Steady: the second half of the load.
        stats["rss_steady_kb"] = statistics.median(samples[len(samples) // 2:]) if samples else 0
        stats["rss_start_kb"] = agent.start_hwm_kb
        losses, hwm, text = agent.stop()
        shares = re.findall(r"tracing ([0-9.]+)% of connections", text)
        if shares:
            stats["traced_pct_last"] = float(shares[-1])  # the CPU budget's last decision
        stats["rss_peak_kb"] = hwm
        stats["events_lost"] = events_lost(losses)
        stats["losses"] = losses
    return stats


def rotated(items, round_index):
    shift = round_index % len(items)
    return items[shift:] + items[:shift]


def med(rows, key):
    values = [r[key] for r in rows if r.get(key) is not None]
    return statistics.median(values) if values else None


def paired_added(rows, base_rows, key):
    """Median and quartiles of (phase - untraced) taken round by round.

    Each round measures every phase minutes apart, so a difference within a round cancels
    the machine's drift between rounds, which on shared hosts moves p99 by ±100 us."""
    added = [r[key] - b[key] for r, b in zip(rows, base_rows)
             if r.get(key) is not None and b.get(key) is not None]
    if not added:
        return None, None, None
    if len(added) < 4:
        return statistics.median(added), min(added), max(added)
    q1, q2, q3 = statistics.quantiles(added, n=4, method="inclusive")
    return q2, q1, q3


def fmt(value, digits=1):
    return "n/a" if value is None else f"{value:.{digits}f}"


def fmt_paired(paired):
    middle, low, high = paired
    return "n/a" if middle is None else f"{middle:.0f} [{low:.0f}..{high:.0f}]"


def nginx_main(args):
    flowtracer = args.flowtracer
    modes = ["none", "noop", "capture"] + (["capture_nice"] if args.nice_phase else [])
    if args.budget_phase:
        modes.append("capture_budget")
    sink = None
    have_otlp = otlp_available(flowtracer)
    if have_otlp:
        modes.append("otlp")
        if args.budget_phase:
            modes.append("otlp_budget")
        sink = OtlpSink(idle=args.sink_idle)
    else:
        log("# capture+OTLP phase: not available (this build has no `flowtracer agent`)")
    if args.baseline:
        # The same phases with another build, interleaved with this one's: a before/after
        # comparison from one run.
        # (Budget phases only for this build: the baseline may not have --max-cpu.)
        modes += [f"{mode}@base" for mode in modes if mode not in ("none", "noop") and "_budget" not in mode]
    extra = args.agent_args.split() if args.agent_args else []
    nginx = Nginx(args.workers)
    results = {}  # (load, mode) -> [stats]
    loads = {
        "wrk": lambda: run_wrk(NGINX_PORT, args.duration, args.connections, args.wrk_threads),
        "rate10k": lambda: run_h2load_rate(NGINX_PORT, 10000, args.duration, args.rate_clients),
        "rate20k": lambda: run_h2load_rate(NGINX_PORT, 20000, args.duration, args.rate_clients * 2),
        "paced10k": lambda: run_paced(flowtracer, NGINX_PORT, 10000, args.duration, args.rate_clients),
        "paced20k": lambda: run_paced(flowtracer, NGINX_PORT, 20000, args.duration, args.rate_clients * 2),
    }
    selected = [l for l in args.loads.split(",") if l]
    try:
        run_wrk(NGINX_PORT, 2, args.connections, args.wrk_threads)  # warm-up
        for round_index in range(args.rounds):
            for load_name in selected:
                for mode in rotated(modes, round_index):
                    binary = args.baseline if mode.endswith("@base") else flowtracer
                    phase_args = extra + (["--max-cpu", str(args.budget_phase)] if "_budget" in mode else [])
                    stats = measure(binary, mode.removesuffix("@base"), phase_args, loads[load_name])
                    results.setdefault((load_name, mode), []).append(stats)
                    log(f"round {round_index + 1} {load_name:8} {mode:12} " + json.dumps(
                        {k: (round(v, 1) if isinstance(v, float) else v) for k, v in stats.items()
                         if k != "losses"}))
    finally:
        nginx.stop()
        if sink:
            sink.stop()

    log("")
    log(f"# medians over {args.rounds} rounds; ratios are traced/untraced from the same run; "
        f"'paired' is the median of each round's own difference (quartiles, or the range under 4 rounds)")
    summary = {}
    for load_name in selected:
        base = results[(load_name, "none")]
        base_rps, base_p50, base_p99 = med(base, "rps"), med(base, "p50_us"), med(base, "p99_us")
        log(f"## {load_name}: untraced {fmt(base_rps, 0)} req/s, p50 {fmt(base_p50)} us, p99 {fmt(base_p99)} us")
        log(f"{'phase':17} {'req/s':>9} {'ratio':>6} {'p50 us':>8} {'p50x':>5} {'p99 us':>8} {'p99x':>5} "
            f"{'+p99 us':>8} {'paired +p99 us':>20} {'cpu%':>6} {'wait%':>6} {'cpu s/10k':>9} {'rss start':>9} {'steady':>7} {'peak':>6} "
            f"{'lost':>8}")
        for mode in modes:
            rows = results.get((load_name, mode), [])
            if not rows:
                continue
            rps, p50, p99 = med(rows, "rps"), med(rows, "p50_us"), med(rows, "p99_us")
            agent_ran = mode not in ("none", "noop")
            cpu_per_10k = None
            if agent_ran:
                cpu_per_10k = statistics.median(r["agent_cpu_s"] / r["requests"] * 10000 for r in rows)
            row = {
                "rps": rps, "throughput_ratio": rps / base_rps, "p50_us": p50, "p99_us": p99,
                "p50_ratio": p50 / base_p50 if p50 and base_p50 else None,
                "p99_ratio": p99 / base_p99 if p99 and base_p99 else None,
                "p99_added_us": p99 - base_p99 if p99 is not None and base_p99 is not None else None,
                "p99_added_paired_us": paired_added(rows, base, "p99_us"),
                "agent_cpu_pct": med(rows, "agent_cpu_pct"), "agent_cpu_s_per_10k": cpu_per_10k,
                "agent_runqueue_wait_pct": med(rows, "agent_runqueue_wait_pct"),
                "rss_start_mb": (max(r["rss_start_kb"] for r in rows) / 1024) if agent_ran else None,
                "rss_steady_mb": (med(rows, "rss_steady_kb") / 1024) if agent_ran else None,
                "rss_peak_mb": (max(r["rss_peak_kb"] for r in rows) / 1024) if agent_ran else None,
                "events_lost": sum(r["events_lost"] for r in rows) if agent_ran else None,
            }
            summary[f"{load_name}/{mode}"] = row
            log(f"{mode:17} {fmt(rps, 0):>9} {fmt(row['throughput_ratio'], 3):>6} {fmt(p50):>8} "
                f"{fmt(row['p50_ratio'], 2):>5} {fmt(p99):>8} {fmt(row['p99_ratio'], 2):>5} "
                f"{fmt(row['p99_added_us']):>8} {fmt_paired(row['p99_added_paired_us']):>20} "
                f"{fmt(row['agent_cpu_pct']):>6} "
                f"{fmt(row['agent_runqueue_wait_pct']):>6} {fmt(cpu_per_10k, 3):>9} "
                f"{fmt(row['rss_start_mb']):>9} {fmt(row['rss_steady_mb']):>7} {fmt(row['rss_peak_mb']):>6} "
                f"{fmt(row['events_lost'], 0):>8}")
        losses = {}
        for mode in modes:
            for r in results.get((load_name, mode), []):
                for k, v in r.get("losses", {}).items():
                    losses[f"{mode}: {k}"] = losses.get(f"{mode}: {k}", 0) + v
        for k, v in sorted(losses.items()):
            log(f"  {k}: {v}")
    if not have_otlp:
        log("capture+OTLP: not available in this build")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(summary, f, indent=1)


# ---- Scale


def conns_map_ids():
    """Ids of the loaded maps named `conns` (the agents' kernel connection tables)."""
    result = subprocess.run(["bpftool", "-j", "map", "show"], capture_output=True, text=True, timeout=60)
    return {m["id"] for m in json.loads(result.stdout) if m.get("name") == "conns"}


def kernel_conns_entries(map_ids):
    """Entries in the given kernel connection tables, or None."""
    total = 0
    for map_id in map_ids:
        result = subprocess.run(["bpftool", "-j", "map", "dump", "id", str(map_id)],
                                capture_output=True, text=True, timeout=120)
        if result.returncode != 0:
            return None
        try:
            total += len(json.loads(result.stdout))
        except ValueError:
            return None
    return total


def live_heap_bytes(agent):
    """The agent's malloc heap in use (glibc malloc_stats, read with gdb: the agent pauses
    for about a second), or None. malloc_stats writes to the agent's stderr, its log."""
    before = len(open(agent.log_path).read())
    result = subprocess.run(["gdb", "-p", str(agent.pid), "-batch", "-ex", "call (void)malloc_stats()"],
                            capture_output=True, text=True, timeout=60)
    if result.returncode != 0:
        return None
    text = open(agent.log_path).read()[before:]
    total = text.rpartition("Total (incl. mmap):")[2]
    for line in total.splitlines():
        if line.strip().startswith("in use bytes"):
            return int(line.split("=")[1])
    return None


def hold_idle_connections(count, port):
    """Opens `count` keep-alive connections, each makes one request and reads its answer,
    then stays open doing nothing: what a large idle keep-alive pool looks like."""
    request = f"GET / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode()
    sockets = []
    for _ in range(count):
        s = socket.create_connection(("127.0.0.1", port), timeout=10)
        s.sendall(request)
        answer = b""
        while b"hello, world" not in answer:
            chunk = s.recv(4096)
            if not chunk:
                raise RuntimeError("nginx closed an idle-pool connection")
            answer += chunk
        sockets.append(s)
    return sockets


def scale_once(flowtracer, args, extra, label):
    """One full scale scenario under one agent; returns its summary."""
    maps_before = conns_map_ids()
    agent = Agent(flowtracer, args.mode, extra)
    # Other tracers may run on the machine: the agent's table is the one it created.
    our_maps = conns_map_ids() - maps_before
    sampler = RssSampler(agent.pid, 0.5)
    heap = (lambda: live_heap_bytes(agent)) if args.heap else (lambda: None)
    mb = lambda value: f"{value / 2**20:.1f}" if value is not None else "-"
    heap_start = heap()
    log(f"# {label}: agent started: RSS {agent.start_rss_kb / 1024:.1f} MB, heap {mb(heap_start)} MB")
    summary = {"build": flowtracer, "rss_start_mb": agent.start_rss_kb / 1024, "heap_start_mb": None,
               "keepalive": [], "idle_pool": None, "churn": []}
    if heap_start is not None:
        summary["heap_start_mb"] = heap_start / 2**20
    try:
        # 1. Many concurrent keep-alive connections, busy: measured in the middle of the load
        # (connections open and requests in flight), then after wrk has closed them.
        for step in range(args.keepalive_steps):
            result = {}
            load = threading.Thread(target=lambda: result.update(
                run_wrk(NGINX_PORT, args.duration, args.concurrent, 2, extra=("--timeout", "10s"))))
            load.start()
            time.sleep(args.duration * 0.6)
            rss_busy, heap_busy = memory_kb(agent.pid)[0], heap()
            load.join()
            stats = result
            time.sleep(2)
            rss_after, heap_after = memory_kb(agent.pid)[0], heap()
            summary["keepalive"].append({"requests": stats["requests"], "rps": stats["rps"],
                                         "rss_busy_mb": rss_busy / 1024, "rss_after_mb": rss_after / 1024,
                                         "heap_busy_mb": heap_busy and heap_busy / 2**20,
                                         "heap_after_mb": heap_after and heap_after / 2**20})
            log(f"{label}: keep-alive step {step + 1}: {args.concurrent} connections, {stats['requests']} requests, "
                f"{stats['rps']:.0f} req/s, errors {stats['errors']}; agent RSS busy {rss_busy / 1024:.1f} MB, "
                f"after {rss_after / 1024:.1f} MB; heap busy {mb(heap_busy)} MB, after {mb(heap_after)} MB")
        entries_after_keepalive = kernel_conns_entries(our_maps)
        # Closes lost while the ring buffer was full leave connections behind until the
        # agent notices: what remains after the settle wait is what stays.
        time.sleep(args.settle)
        rss_settled, heap_settled = memory_kb(agent.pid)[0], heap()
        summary.update({"rss_settled_mb": rss_settled / 1024, "heap_settled_mb": heap_settled and heap_settled / 2**20})
        breakdown = rss_breakdown_mb(agent.pid)
        summary["rss_settled_by_kind_mb"] = breakdown
        log(f"{label}: {args.settle} s after the keep-alive steps: RSS {rss_settled / 1024:.1f} MB, heap {mb(heap_settled)} MB; "
            f"resident by kind (MB): {breakdown}")
        # 2. A pool of idle keep-alive connections (one request each, then quiet); both
        # ends are traced, so twice as many tracked connections.
        if args.idle_pool:
            heap_before_pool = heap_settled
            pool = hold_idle_connections(args.idle_pool, NGINX_PORT)
            time.sleep(15)  # past the tracker's 1 s quiet release and its next heap check (every 10 s)
            rss_idle, heap_idle = memory_kb(agent.pid)[0], heap()
            per_connection = None
            if heap_idle is not None and heap_before_pool is not None:
                per_connection = (heap_idle - heap_before_pool) / (2 * args.idle_pool)
            # Resident memory counts what the malloc heap does not: the tracker keeps
            # connections in blocks mapped apart from it.
            rss_per_connection = (rss_idle - rss_settled) * 1024 / (2 * args.idle_pool)
            idle_breakdown = rss_breakdown_mb(agent.pid)
            summary["idle_pool"] = {"connections": args.idle_pool, "rss_mb": rss_idle / 1024,
                                    "rss_by_kind_mb": idle_breakdown,
                                    "heap_mb": heap_idle and heap_idle / 2**20,
                                    "heap_bytes_per_tracked_connection": per_connection,
                                    "rss_bytes_per_tracked_connection": rss_per_connection}
            log(f"{label}: {args.idle_pool} idle keep-alive connections ({2 * args.idle_pool} tracked): "
                f"RSS {rss_idle / 1024:.1f} MB ({rss_per_connection:.0f} bytes per tracked connection), "
                f"heap {mb(heap_idle)} MB"
                + (f", {per_connection:.0f} bytes of malloc heap per tracked connection"
                   if per_connection is not None else "")
                + f"; resident by kind (MB): {idle_breakdown}")
            for s in pool:
                s.close()
            time.sleep(2)
        # 3. Churn: connections opened and closed (one request each).
        churned = 0
        t0 = time.monotonic()
        while churned < args.churn and time.monotonic() - t0 < args.churn_timeout:
            stats = run_wrk(NGINX_CLOSE_PORT, args.duration, 64, 1, extra=("-H", "Connection: close"))
            churned += stats["requests"]
            rss = memory_kb(agent.pid)[0]
            summary["churn"].append({"churned": churned, "rss_mb": rss / 1024})
            log(f"{label}: churn: {churned} connections so far ({stats['rps']:.0f}/s), agent RSS {rss / 1024:.1f} MB")
        # Connections whose close was lost are looked up after 30 s quiet: wait past that.
        time.sleep(args.settle)
        heap_end = heap()
        rss_end = memory_kb(agent.pid)[0]
        entries_after_churn = kernel_conns_entries(our_maps)
    finally:
        samples = sampler.stop()
        losses, hwm, text = agent.stop()
    rss_values = [kb for _, kb in samples]
    summary.update({"churned": churned, "rss_peak_mb": hwm / 1024,
                    "rss_after_churn_mb": summary["churn"][-1]["rss_mb"] if summary["churn"] else None,
                    "heap_end_mb": heap_end and heap_end / 2**20, "rss_end_mb": rss_end / 1024,
                    "rss_min_mb": min(rss_values) / 1024, "rss_max_mb": max(rss_values) / 1024,
                    "kernel_conns_after_keepalive": entries_after_keepalive,
                    "kernel_conns_after_churn": entries_after_churn, "losses": losses})
    return summary


def scale_main(args):
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # children inherit it
    if hard < args.concurrent + args.idle_pool + 1000:
        sys.exit(f"open files limit {hard} is too low for {args.concurrent} connections")
    extra = args.agent_args.split() if args.agent_args else []
    builds = [("new", args.flowtracer)] + ([("base", args.baseline)] if args.baseline else [])
    results = []
    nginx = Nginx(args.workers)
    sink = OtlpSink() if args.mode == "otlp" else None
    try:
        # Builds alternate in one session, so both see the same machine.
        for label, flowtracer in builds:
            results.append((label, scale_once(flowtracer, args, extra, label)))
    finally:
        nginx.stop()
        if sink:
            sink.stop()
    log("")
    log(f"# scale ({'flowtracer agent exporting OTLP/HTTP to a local sink' if sink else 'flowtracer capture'})")
    log(f"concurrent keep-alive connections: {args.concurrent}; idle pool: {args.idle_pool}")
    for label, r in results:
        fmt_mb = lambda v: f"{v:.1f}" if v is not None else "-"
        log(f"{label}: agent RSS MB: start {r['rss_start_mb']:.1f}, busy "
            f"{'/'.join(fmt_mb(k['rss_busy_mb']) for k in r['keepalive'])}, after keep-alive "
            f"{'/'.join(fmt_mb(k['rss_after_mb']) for k in r['keepalive'])}, after churn "
            f"{fmt_mb(r['rss_after_churn_mb'])}, {args.settle} s later {r['rss_end_mb']:.1f}, peak {r['rss_peak_mb']:.1f}")
        log(f"{label}: RSS MB {args.settle} s after the keep-alive steps {r['rss_settled_mb']:.1f}")
        if args.heap:
            # The first step's reading: later ones also hold connections whose close was lost.
            busy = r["keepalive"][0]["heap_busy_mb"]
            if busy is not None and r["heap_start_mb"] is not None:
                log(f"{label}: busy heap per tracked connection (both ends traced): "
                    f"{(busy - r['heap_start_mb']) * 2**20 / (2 * args.concurrent):.0f} bytes in the first step")
            log(f"{label}: heap MB: start {fmt_mb(r['heap_start_mb'])}, busy "
                f"{'/'.join(fmt_mb(k['heap_busy_mb']) for k in r['keepalive'])}, 2 s after each step "
                f"{'/'.join(fmt_mb(k['heap_after_mb']) for k in r['keepalive'])}, {args.settle} s after the steps "
                f"{fmt_mb(r['heap_settled_mb'])}, {args.settle} s after churn {fmt_mb(r['heap_end_mb'])}")
        if r["idle_pool"]:
            per = r["idle_pool"]["heap_bytes_per_tracked_connection"]
            log(f"{label}: idle pool: RSS {r['idle_pool']['rss_mb']:.1f} MB "
                f"({r['idle_pool']['rss_bytes_per_tracked_connection']:.0f} bytes per tracked connection), "
                f"heap {fmt_mb(r['idle_pool']['heap_mb'])} MB"
                + (f", {per:.0f} bytes of malloc heap per tracked connection" if per is not None else ""))
        if len(r["churn"]) >= 2:
            log(f"{label}: RSS growth over churn from {r['churn'][0]['churned']} to {r['churned']} connections: "
                f"{r['churn'][-1]['rss_mb'] - r['churn'][0]['rss_mb']:+.1f} MB")
        log(f"{label}: kernel connection table entries: after keep-alive {r['kernel_conns_after_keepalive']}, "
            f"after churn {r['kernel_conns_after_churn']}")
        log(f"{label}: losses: {json.dumps(r['losses'])}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"mode": args.mode, "concurrent": args.concurrent, "idle_pool": args.idle_pool,
                       "runs": {label: r for label, r in results}}, f, indent=1)


def cpu_ab_main(args):
    """Both builds' agents attached at once to the same load, each exporting to a sink of its
    own: each one's CPU over the same seconds, so that the host's speed, which drifts by
    ±10% between phases of an interleaved run, cancels. Each agent also pays the other's
    kernel hooks in the traced calls, so only the ratio means anything."""
    builds = [("new", args.flowtracer), ("base", args.baseline)]
    extra = args.agent_args.split() if args.agent_args else []
    sinks = [OtlpSink(OTLP_SINK_PORT + i) for i in range(len(builds))] if args.mode == "otlp" else []
    nginx = Nginx(args.workers)
    ratios = []
    try:
        for round_index in range(args.rounds):
            # Started in turn, the first alternating: the later one starts on a busier host.
            order = list(range(len(builds)))
            if round_index % 2:
                order.reverse()
            agents = {}
            try:
                for i in order:
                    own = ["--health-listen", f"127.0.0.1:{NGINX_PORT + 100 + i}", "--prometheus-port", "0"]
                    agents[i] = Agent(builds[i][1], args.mode, extra + (own if args.mode == "otlp" else []),
                                      sink_port=OTLP_SINK_PORT + i)
                before = {i: run_seconds(agent.pid) for i, agent in agents.items()}
                stats = run_h2load_rate(NGINX_PORT, args.rate, args.duration, args.rate_clients)
                after = {i: run_seconds(agent.pid) for i, agent in agents.items()}
            finally:
                lost = {i: agent.stop()[0] for i, agent in agents.items()}
            used = [after[i] - before[i] for i in range(len(builds))]
            if not used[1]:
                raise RuntimeError("the baseline agent used no CPU: it is not tracing")
            ratios.append(used[0] / used[1])
            log(f"round {round_index + 1}: {stats['rps']:.0f} req/s; CPU % of a core: "
                + ", ".join(f"{name} {100 * used[i] / args.duration:.2f}" for i, (name, _) in enumerate(builds))
                + f"; new/base {ratios[-1]:.3f}; events lost {events_lost(lost[0])} / {events_lost(lost[1])}")
    finally:
        nginx.stop()
        for sink in sinks:
            sink.stop()
    ratios.sort()
    log(f"# new/base CPU: median {statistics.median(ratios):.3f} of {len(ratios)} rounds "
        f"(range {ratios[0]:.3f}..{ratios[-1]:.3f})")


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--flowtracer", required=True)
    # Only the benchmark's own traffic: other programs on a shared machine would otherwise
    # add their load to the agent's figures (the filter runs in the kernel).
    parser.add_argument("--agent-args", default=f"--port {NGINX_PORT} --port {NGINX_CLOSE_PORT}",
                        help="flags for flowtracer capture")
    parser.add_argument("--workers", type=int, default=1, help="nginx worker processes")
    parser.add_argument("--duration", type=int, default=8, help="seconds per measurement")
    parser.add_argument("--json", help="write the summary here")
    sub = parser.add_subparsers(dest="command", required=True)
    nginx = sub.add_parser("nginx")
    nginx.add_argument("--rounds", type=int, default=3)
    nginx.add_argument("--connections", type=int, default=64)
    nginx.add_argument("--wrk-threads", type=int, default=1)
    nginx.add_argument("--rate-clients", type=int, default=20)
    nginx.add_argument("--loads", default="wrk,rate10k,rate20k,paced10k,paced20k")
    nginx.add_argument("--baseline", help="another flowtracer build measured in the same run "
                       "(its phases are suffixed @base)")
    nginx.add_argument("--budget-phase", type=int, metavar="PERCENT",
                       help="also measure capture and the agent with --max-cpu PERCENT (load shedding)")
    nginx.add_argument("--nice-phase", action="store_true",
                       help="also measure capture at nice 10 (yields the CPU at saturation)")
    nginx.add_argument("--sink-idle", action="store_true",
                       help="run the OTLP sink at SCHED_IDLE: the agent's own cost, apart from the sink's")
    scale = sub.add_parser("scale")
    scale.add_argument("--concurrent", type=int, default=10000)
    scale.add_argument("--keepalive-steps", type=int, default=3)
    scale.add_argument("--churn", type=int, default=100000)
    scale.add_argument("--churn-timeout", type=int, default=300)
    scale.add_argument("--idle-pool", type=int, default=5000,
                       help="idle keep-alive connections held after the busy steps (0: none)")
    scale.add_argument("--settle", type=int, default=45, help="seconds after churn before the last reading")
    scale.add_argument("--heap", action="store_true",
                       help="also read the agent's live malloc heap at each point (gdb; pauses it ~1 s)")
    scale.add_argument("--baseline", help="another flowtracer build run through the same scenario "
                       "right after, in the same session (reported as base)")
    scale.add_argument("--mode", choices=("capture", "otlp"), default="capture",
                       help="what runs: flowtracer capture, or the agent exporting OTLP/HTTP to a local sink")
    cpu_ab = sub.add_parser("cpu-ab", help="two builds attached at once to one load: their CPU side by side")
    cpu_ab.add_argument("--baseline", required=True, help="the other flowtracer build")
    cpu_ab.add_argument("--rounds", type=int, default=6)
    cpu_ab.add_argument("--rate", type=int, default=10000, help="requests/s (h2load)")
    cpu_ab.add_argument("--rate-clients", type=int, default=20)
    cpu_ab.add_argument("--mode", choices=("capture", "otlp"), default="otlp")
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("needs root (loads eBPF programs)")
    {"nginx": nginx_main, "scale": scale_main, "cpu-ab": cpu_ab_main}[args.command](args)


if __name__ == "__main__":
    main()
