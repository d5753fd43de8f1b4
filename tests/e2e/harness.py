"""Shared helpers for the end-to-end tests: they load the real eBPF programs (root),
start real servers and clients on loopback, and read what flowtracer printed.

Environment: FLOWTRACER (the binary), IO_CLIENT (tests/e2e/io_client), FLOWTRACER_HOOKS
(auto, socket or syscall: the hook family every run is forced to)."""
import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
FLOWTRACER = os.environ.get("FLOWTRACER", os.path.join(HERE, "../../build/flowtracer"))
IO_CLIENT = os.environ.get("IO_CLIENT", os.path.join(HERE, "../../build/io_client"))
HOOKS = os.environ.get("FLOWTRACER_HOOKS", "auto")


def free_port(family=socket.AF_INET):
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.bind(("::1" if family == socket.AF_INET6 else "127.0.0.1", 0))
        return s.getsockname()[1]


_issued_ports = set()


def port_in_range(first, last):
    """A free loopback port in [first, last] (a suite's own range), never one handed out
    before in this run: two ports picked before either is bound must differ, and a port a
    finished test used may still be held by a process on its way out."""
    for _ in range(200):
        port = random.randint(first, last)
        if port in _issued_ports:
            continue
        _issued_ports.add(port)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
                return port
            except OSError:
                continue
    raise RuntimeError(f"no free port in {first}-{last}")


def wait_for_port(port, host="127.0.0.1", timeout_s=10):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {host}:{port} after {timeout_s}s")


class Process:
    """A background process that is always stopped at the end of the test."""

    def __init__(self, args, env=None, ready_line=None, timeout_s=10, **kwargs):
        self.proc = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True, **kwargs)
        if ready_line:
            deadline = time.monotonic() + timeout_s
            while time.monotonic() < deadline:
                line = self.proc.stdout.readline()
                if ready_line in line:
                    return
                if not line and self.proc.poll() is not None:
                    break
            self.stop()
            raise RuntimeError(f"{args[0]} did not become ready: {self.proc.stderr.read()}")

    @property
    def pid(self):
        return self.proc.pid

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def start_test_server(test, port, name=None, downstream=(), ipv6=False):
    env = dict(os.environ)
    if name:
        env["OTEL_SERVICE_NAME"] = name
    args = [sys.executable, os.path.join(HERE, "servers.py"), str(port)]
    for url in downstream:
        args += ["--downstream", url]
    if ipv6:
        args.append("--ipv6")
    server = Process(args, env=env, ready_line="ready")
    test.addCleanup(server.stop)
    wait_for_port(port, "::1" if ipv6 else "127.0.0.1")
    return server


class Tracer:
    """`flowtracer <command>` running in the background, writing JSON lines to a file."""

    def __init__(self, test, command, *extra, binary=FLOWTRACER):
        self.output = tempfile.NamedTemporaryFile(prefix="flowtracer-", suffix=".json", delete=False).name
        test.addCleanup(lambda: os.path.exists(self.output) and os.unlink(self.output))
        args = [binary, command, "--duration", "120s", "--hooks", HOOKS, "--output", self.output]
        if command == "capture":
            args += ["--format", "json"]
        self.proc = subprocess.Popen(args + list(extra), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        test.addCleanup(self._kill)
        # Capture starts once the programs are attached: flowtracer says so on stderr.
        deadline = time.monotonic() + 30
        self.stderr_lines = []
        while time.monotonic() < deadline:
            line = self.proc.stderr.readline()
            self.stderr_lines.append(line)
            if "capturing with" in line:
                return
            if not line and self.proc.poll() is not None:
                break
        raise RuntimeError("flowtracer did not start: " + "".join(self.stderr_lines))

    def _kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def stop(self, settle_s=0.5):
        """Stops with Ctrl-C (as a person would) and returns (records, stderr)."""
        time.sleep(settle_s)  # let the last events reach the ring buffer
        self.proc.send_signal(signal.SIGINT)
        self.stdout, err = self.proc.communicate(timeout=30)
        self.exit_code = self.proc.returncode
        with open(self.output) as f:
            records = [json.loads(line) for line in f if line.strip()]
        return records, "".join(self.stderr_lines) + err


def curl(*args):
    out = subprocess.run(["curl", "-sS", "-o", "/dev/null", *args], check=True, capture_output=True,
                         text=True, timeout=30)
    return out.stdout


class E2ETest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        if os.geteuid() != 0:
            raise unittest.SkipTest("end-to-end tests load eBPF programs: run as root")
