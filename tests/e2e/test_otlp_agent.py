"""`flowtracer agent` end to end: real traced traffic (python3 services, http.client) exported
as OTLP to a Node receiver that decodes with the generated types of the OpenTelemetry JS
packages (tests/node/otlp_receiver.js), never with flowtracer's own .proto. Covers
OTLP/HTTP protobuf, gzip and gRPC; collector faults (absent at start, gone mid-run and back,
503 with Retry-After, slow answers); and configuration errors."""
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import unittest
import urllib.request

from harness import FLOWTRACER, HOOKS, E2ETest, Process, port_in_range, start_test_server

NODE_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "node")
RECEIVER = os.path.join(NODE_DIR, "otlp_receiver.js")


def area_port():
    """A free port in this suite's range, 19000-19999."""
    return port_in_range(19000, 19999)


class Receiver:
    """The Node OTLP receiver; records() gives what it decoded, one dict per request."""

    def __init__(self, test, http_port=None, grpc_port=None, out=None, grpc_frames_port=None, grpc_tls=()):
        if not os.path.isdir(os.path.join(NODE_DIR, "node_modules", "otlp-generated-types")):
            raise RuntimeError("tests/node has no node_modules: run scripts/install-deps.sh (npm ci in tests/node)")
        self.http_port = http_port or area_port()
        self.grpc_port = grpc_port
        if out is None:
            out = tempfile.NamedTemporaryFile(prefix="otlp-", suffix=".jsonl", delete=False).name
            test.addCleanup(lambda: os.path.exists(out) and os.unlink(out))
        self.out = out
        args = ["node", RECEIVER, "--http-port", str(self.http_port), "--out", out]
        if grpc_port:
            args += ["--grpc-port", str(grpc_port)]
        if grpc_frames_port:
            args += ["--grpc-frames-port", str(grpc_frames_port)]
        for option, path in zip(("--grpc-tls-cert", "--grpc-tls-key", "--grpc-client-ca"), grpc_tls):
            args += [option, path]
        self.process = Process(args, ready_line="ready", cwd=NODE_DIR)
        test.addCleanup(self.process.stop)

    def stop(self):
        self.process.stop()

    def control(self, **query):
        url = f"http://127.0.0.1:{self.http_port}/control?" + "&".join(f"{k}={v}" for k, v in query.items())
        urllib.request.urlopen(url, timeout=5).read()

    def records(self):
        if not os.path.exists(self.out):
            return []
        with open(self.out) as f:
            return [json.loads(line) for line in f if line.strip()]

    def spans(self):
        """(resource attributes, scope, span) for every span received."""
        result = []
        for record in self.records():
            for resource_spans in record.get("request", {}).get("resourceSpans", []):
                resource = attributes(resource_spans.get("resource", {}).get("attributes", []))
                for scope_spans in resource_spans.get("scopeSpans", []):
                    for span in scope_spans.get("spans", []):
                        result.append((resource, scope_spans.get("scope", {}), span))
        return result


def value_of(any_value):
    if "stringValue" in any_value:
        return any_value["stringValue"]
    if "intValue" in any_value:
        return int(any_value["intValue"])
    if "boolValue" in any_value:
        return any_value["boolValue"]
    if "doubleValue" in any_value:
        return any_value["doubleValue"]
    if "arrayValue" in any_value:
        return [value_of(v) for v in any_value["arrayValue"].get("values", [])]
    return None


def attributes(key_values):
    return {kv["key"]: value_of(kv.get("value", {})) for kv in key_values}


class Agent:
    """`flowtracer agent` in the background; stderr goes to a file (read by log())."""

    def __init__(self, test, *args, env=None, wait_ready=True):
        self.log_path = tempfile.NamedTemporaryFile(prefix="agent-", suffix=".log", delete=False).name
        test.addCleanup(lambda: os.path.exists(self.log_path) and os.unlink(self.log_path))
        self.health_port = area_port()
        full_env = dict(os.environ)
        for name in list(full_env):
            if name.startswith("OTEL_"):
                del full_env[name]
        full_env.update(env or {})
        self.log_file = open(self.log_path, "w")
        test.addCleanup(self.log_file.close)
        self.proc = subprocess.Popen(
            [FLOWTRACER, "agent", "--hooks", HOOKS, "--health-listen", f"127.0.0.1:{self.health_port}", *args],
            stdout=subprocess.DEVNULL, stderr=self.log_file, env=full_env)
        test.addCleanup(self._kill)
        if wait_ready:
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                if "tracing; stop with SIGTERM" in self.log():
                    return
                if self.proc.poll() is not None:
                    break
                time.sleep(0.05)
            raise RuntimeError("agent did not start: " + self.log())

    def log(self):
        with open(self.log_path) as f:
            return f.read()

    def health(self, path):
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.health_port}{path}", timeout=5) as response:
                return response.status
        except urllib.error.HTTPError as error:
            return error.code

    def rss_kib(self):
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        return 0

    def _kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def stop(self, settle_s=0.5, timeout_s=30, signal_number=signal.SIGTERM):
        """SIGTERM, as Kubernetes and systemd stop it; returns (exit status, log, counters)."""
        time.sleep(settle_s)
        self.proc.send_signal(signal_number)
        status = self.proc.wait(timeout=timeout_s)
        log = self.log()
        counters = {}
        for line in log.splitlines():
            if "flowtracer." in line and " = " in line:
                name, value = line.split("info:", 1)[-1].strip().rsplit(" = ", 1)
                counters[name] = int(value)
        return status, log, counters


def get(port, path, connection=None):
    conn = connection or http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("GET", path)
    response = conn.getresponse()
    response.read()
    if connection is None:
        conn.close()
    return response.status


def wait_until(condition, timeout_s, step_s=0.1):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(step_s)
    return condition()


def dropped(counters):
    return sum(v for k, v in counters.items() if k.startswith("flowtracer.spans.dropped"))


def paths(received):
    """url.path of the server spans (each request also has the test client's span)."""
    return [attributes(span["attributes"]).get("url.path") for _, _, span in received
            if span["kind"] == "SPAN_KIND_SERVER"]


class OtlpExportTest(E2ETest):
    def _two_services(self):
        billing_port, gateway_port = area_port(), area_port()
        billing = start_test_server(self, billing_port, name="billing")
        gateway = start_test_server(self, gateway_port, name="gateway",
                                    downstream=[f"http://127.0.0.1:{billing_port}/charge/42"])
        return gateway, gateway_port, billing, billing_port

    def _check_chain(self, receiver, gateway, gateway_port, billing, billing_port):
        wanted = {("gateway", "SPAN_KIND_SERVER", "GET /call"), ("gateway", "SPAN_KIND_CLIENT", "GET /charge/{id}"),
                  ("billing", "SPAN_KIND_SERVER", "GET /charge/{id}"), ("billing", "SPAN_KIND_SERVER", "GET /status/{id}")}

        def index():
            by_key = {}
            for resource, scope, span in receiver.spans():
                by_key.setdefault((resource["service.name"], span["kind"], span["name"]), []).append(
                    (resource, scope, span, attributes(span["attributes"])))
            return by_key

        self.assertTrue(wait_until(lambda: wanted <= index().keys(), 10), f"received only {sorted(index())}")
        received = receiver.spans()
        by_key = index()
        gateway_server = by_key[("gateway", "SPAN_KIND_SERVER", "GET /call")][0]
        gateway_client = by_key[("gateway", "SPAN_KIND_CLIENT", "GET /charge/{id}")][0]
        billing_server = by_key[("billing", "SPAN_KIND_SERVER", "GET /charge/{id}")][0]
        failed = by_key[("billing", "SPAN_KIND_SERVER", "GET /status/{id}")][0]

        # Resources: one per traced process.
        for (resource, scope, _, _), server, name in ((gateway_server, gateway, "gateway"),
                                                       (billing_server, billing, "billing")):
            self.assertEqual(resource["service.name"], name)
            self.assertEqual(resource["process.pid"], server.pid)
            self.assertTrue(resource["process.executable.name"].startswith("python3"), resource)
            self.assertIn("servers.py", " ".join(resource["process.command_args"]))
            self.assertEqual(resource["host.name"], socket.gethostname())
            self.assertTrue(resource["service.instance.id"].startswith(f"{socket.gethostname()}/{server.pid}/"))
            self.assertEqual(resource["telemetry.distro.name"], "flowtracer")
            self.assertRegex(resource["telemetry.distro.version"], r"^\d+\.\d+\.\d+$")
            self.assertEqual(scope["name"], "flowtracer")
        self.assertEqual(gateway_server[0], gateway_client[0], "one resource per process")

        # Ids and parents, as stitched: client -> gateway server -> gateway client -> billing server.
        spans = [gateway_server[2], gateway_client[2], billing_server[2]]
        for span in spans:
            self.assertRegex(span["traceId"], r"^[0-9a-f]{32}$")
            self.assertRegex(span["spanId"], r"^[0-9a-f]{16}$")
        self.assertEqual(len({s["traceId"] for s in spans}), 1, spans)
        self.assertEqual(billing_server[2]["parentSpanId"], gateway_client[2]["spanId"])
        self.assertEqual(gateway_client[2]["parentSpanId"], gateway_server[2]["spanId"])
        self.assertEqual(billing_server[3]["flowtracer.parent.source"], "same_host")
        self.assertEqual(gateway_client[3]["flowtracer.parent.source"], "thread")

        # Attributes, status and timing.
        attrs = billing_server[3]
        self.assertEqual(attrs["http.request.method"], "GET")
        self.assertEqual(attrs["url.path"], "/charge/42")
        self.assertEqual(attrs["http.route"], "/charge/{id}")
        self.assertEqual(attrs["http.response.status_code"], 200)
        self.assertEqual(attrs["server.port"], billing_port)
        self.assertEqual(attrs["process.pid"], billing.pid)
        self.assertNotIn("status", billing_server[2])  # UNSET is the default
        self.assertEqual(failed[3]["http.response.status_code"], 500)
        self.assertEqual(failed[2]["status"]["code"], "STATUS_CODE_ERROR")
        for _, _, span, _ in (gateway_server, gateway_client, billing_server):
            start, end = int(span["startTimeUnixNano"]), int(span["endTimeUnixNano"])
            self.assertLess(abs(start / 1e9 - time.time()), 120)
            self.assertLessEqual(start, end)
        self.assertLessEqual(int(gateway_server[2]["startTimeUnixNano"]), int(gateway_client[2]["startTimeUnixNano"]))
        return received

    def _traffic(self, gateway_port, billing_port):
        self.assertEqual(get(gateway_port, "/call"), 200)
        self.assertEqual(get(billing_port, "/status/500"), 500)

    def test_http_protobuf(self):
        receiver = Receiver(self)
        gateway, gateway_port, billing, billing_port = self._two_services()
        agent = Agent(self, "--endpoint", f"http://127.0.0.1:{receiver.http_port}",
                      "--port", str(gateway_port), "--port", str(billing_port))
        self.assertEqual(agent.health("/healthz"), 200)
        self.assertEqual(agent.health("/readyz"), 200)
        self._traffic(gateway_port, billing_port)
        received = self._check_chain(receiver, gateway, gateway_port, billing, billing_port)
        status, log, counters = agent.stop()
        self.assertEqual(status, 0, log)
        records = [r for r in receiver.records() if "request" in r]
        self.assertTrue(all(r["contentType"] == "application/x-protobuf" and r["encoding"] == "identity"
                            for r in records))
        self.assertEqual(counters["flowtracer.spans.exported"], len(receiver.spans()), log)
        self.assertEqual(counters["flowtracer.spans.produced"], counters["flowtracer.spans.exported"], log)
        self.assertGreaterEqual(len(received), 5)

    def test_http_gzip_from_environment(self):
        receiver = Receiver(self)
        gateway, gateway_port, billing, billing_port = self._two_services()
        agent = Agent(self, "--port", str(gateway_port), "--port", str(billing_port), env={
            "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{receiver.http_port}",
            "OTEL_EXPORTER_OTLP_COMPRESSION": "gzip",
            "OTEL_RESOURCE_ATTRIBUTES": "deployment.environment=e2e,service.name=ignored",
        })
        self._traffic(gateway_port, billing_port)
        received = self._check_chain(receiver, gateway, gateway_port, billing, billing_port)
        status, log, _ = agent.stop(signal_number=signal.SIGINT)  # Ctrl-C stops it as well
        self.assertEqual(status, 0, log)
        self.assertTrue(all(r["encoding"] == "gzip" for r in receiver.records() if "request" in r))
        for resource, _, _ in received:
            self.assertEqual(resource["deployment.environment"], "e2e")
            self.assertNotEqual(resource["service.name"], "ignored")

    def test_grpc(self):
        receiver = Receiver(self, grpc_port=area_port())
        gateway, gateway_port, billing, billing_port = self._two_services()
        for compression in ("none", "gzip"):
            with self.subTest(compression=compression):
                open(receiver.out, "w").close()
                agent = Agent(self, "--protocol", "grpc", "--compression", compression,
                              "--endpoint", f"http://127.0.0.1:{receiver.grpc_port}",
                              "--port", str(gateway_port), "--port", str(billing_port))
                self._traffic(gateway_port, billing_port)
                self._check_chain(receiver, gateway, gateway_port, billing, billing_port)
                status, log, counters = agent.stop()
                self.assertEqual(status, 0, log)
                self.assertIn("(grpc", log)
                records = [r for r in receiver.records() if "request" in r]
                self.assertTrue(records and all(r["transport"] == "grpc" for r in records))
                self.assertEqual(counters["flowtracer.spans.exported"], len(receiver.spans()), log)


    def test_grpc_over_mutual_tls(self):
        """A collector with a private authority that asks for the agent's certificate: the
        certificate variables, for gRPC (the OTLP/HTTP side has unit tests)."""
        work = tempfile.mkdtemp(prefix="otlp-tls-")
        self.addCleanup(shutil.rmtree, work, True)

        def certificate(name, san):
            subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                            "-subj", f"/CN={name}", "-addext", f"subjectAltName={san}",
                            "-keyout", f"{work}/{name}-key.pem", "-out", f"{work}/{name}.pem"],
                           check=True, capture_output=True, timeout=60)
            return f"{work}/{name}.pem", f"{work}/{name}-key.pem"

        collector_cert, collector_key = certificate("collector", "IP:127.0.0.1")
        agent_cert, agent_key = certificate("agent", "DNS:agent.example")
        receiver = Receiver(self, grpc_port=area_port(), grpc_tls=(collector_cert, collector_key, agent_cert))
        gateway, gateway_port, billing, billing_port = self._two_services()
        agent = Agent(self, "--protocol", "grpc", "--endpoint", f"https://127.0.0.1:{receiver.grpc_port}",
                      "--port", str(gateway_port), "--port", str(billing_port),
                      env={"OTEL_EXPORTER_OTLP_CERTIFICATE": collector_cert,
                           "OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE": agent_cert,
                           "OTEL_EXPORTER_OTLP_CLIENT_KEY": agent_key})
        self._traffic(gateway_port, billing_port)
        self._check_chain(receiver, gateway, gateway_port, billing, billing_port)
        status, log, counters = agent.stop()
        self.assertEqual(status, 0, log)
        self.assertEqual(counters["flowtracer.spans.exported"], len(receiver.spans()), log)

    def test_grpc_gzip_on_the_wire(self):
        frames_port = area_port()
        receiver = Receiver(self, grpc_frames_port=frames_port)
        gateway, gateway_port, billing, billing_port = self._two_services()
        agent = Agent(self, "--protocol", "grpc", "--endpoint", f"http://127.0.0.1:{frames_port}",
                      "--port", str(gateway_port), "--port", str(billing_port),
                      env={"OTEL_EXPORTER_OTLP_COMPRESSION": "gzip"})
        self._traffic(gateway_port, billing_port)
        self._check_chain(receiver, gateway, gateway_port, billing, billing_port)
        status, log, counters = agent.stop()
        self.assertEqual(status, 0, log)
        records = receiver.records()
        self.assertTrue(records)
        for record in records:
            self.assertNotIn("error", record)
            self.assertEqual(record["encoding"], "gzip")
            self.assertTrue(record["compressed"])
        self.assertEqual(counters["flowtracer.spans.exported"], len(receiver.spans()), log)


class CollectorFaultsTest(E2ETest):
    def _config(self, text):
        path = tempfile.NamedTemporaryFile(prefix="agent-", suffix=".yaml", delete=False, mode="w")
        path.write(text)
        path.close()
        self.addCleanup(os.unlink, path.name)
        return path.name

    def _phase(self, port, phase, count, connection=None):
        for i in range(count):
            self.assertEqual(get(port, f"/{phase}/{i}", connection), 200)

    def test_absent_at_start_then_gone_mid_run_and_back(self):
        for protocol in ("http/protobuf", "grpc"):
            with self.subTest(protocol=protocol):
                self._absent_then_gone_and_back(protocol)

    def _absent_then_gone_and_back(self, protocol):
        receiver_port, service_port = area_port(), area_port()
        start_test_server(self, service_port, name="shop")
        config = self._config("exporter:\n  max_attempts: 2\n  schedule_delay: 200ms\n  timeout: 1s\n")
        agent = Agent(self, "--config", config, "--endpoint", f"http://127.0.0.1:{receiver_port}",
                      "--protocol", protocol, "--port", str(service_port))
        port_of = {"grpc_port": receiver_port} if protocol == "grpc" else {"http_port": receiver_port}
        self._phase(service_port, "before", 20)  # nobody listens: retried, then dropped and counted
        time.sleep(5)  # two attempts of up to 1 s each, and the backoff between them
        rss_start = agent.rss_kib()
        receiver = Receiver(self, **port_of)
        self._phase(service_port, "up", 20)
        self.assertTrue(wait_until(lambda: paths(receiver.spans()).count("/up/19") == 1, 10),
                        paths(receiver.spans()))
        receiver.stop()  # the collector goes away mid-run
        self._phase(service_port, "away", 20)
        self.assertEqual(agent.health("/healthz"), 200)
        time.sleep(1)
        receiver = Receiver(self, out=receiver.out, **port_of)
        self._phase(service_port, "back", 20)
        self.assertTrue(wait_until(lambda: "/back/19" in paths(receiver.spans()), 10))
        rss_end = agent.rss_kib()
        status, log, counters = agent.stop()
        self.assertEqual(status, 0, log)

        got = paths(receiver.spans())
        for i in range(20):
            self.assertIn(f"/up/{i}", got)
            self.assertIn(f"/back/{i}", got)
        self.assertNotIn("/before/0", got)
        # Every span is accounted for: sent, or dropped and counted. A request that timed out
        # while the receiver was coming back may still have arrived (counted as dropped, yet
        # received), so the receiver may hold more than `exported`, never fewer.
        received_ids = {span["spanId"] for _, _, span in receiver.spans()}
        self.assertLessEqual(counters["flowtracer.spans.exported"], len(received_ids), log)
        self.assertEqual(counters["flowtracer.spans.produced"],
                         counters["flowtracer.spans.exported"] + dropped(counters), log)
        self.assertGreaterEqual(counters["flowtracer.spans.dropped{reason=export_failed}"], 2 * 20, log)
        self.assertGreater(counters["flowtracer.export.errors"], 0)
        self.assertLess(rss_end - rss_start, 20 * 1024, f"RSS grew from {rss_start} to {rss_end} KiB")

    def test_503_with_retry_after(self):
        """HTTP 503 with Retry-After, and gRPC UNAVAILABLE with RetryInfo: the agent waits as asked."""
        service_port = area_port()
        start_test_server(self, service_port, name="shop")
        receiver = Receiver(self, grpc_port=area_port())
        for protocol, refusal in (("http/protobuf", 503), ("grpc", "UNAVAILABLE")):
            with self.subTest(protocol=protocol):
                open(receiver.out, "w").close()
                receiver.control(mode="unavailable", retry_after=2)
                port = receiver.grpc_port if protocol == "grpc" else receiver.http_port
                agent = Agent(self, "--endpoint", f"http://127.0.0.1:{port}", "--protocol", protocol,
                              "--port", str(service_port))
                self._phase(service_port, "retry", 5)
                self.assertTrue(wait_until(lambda: any(r.get("answered") == refusal for r in receiver.records()), 10))
                receiver.control(mode="ok")
                self.assertTrue(wait_until(lambda: "/retry/4" in paths(receiver.spans()), 10))
                records = receiver.records()
                refused = [r["at_ms"] for r in records if r.get("answered") == refusal]
                accepted = [r["at_ms"] for r in records if "request" in r]
                # The agent waited as long as the receiver asked (2 s), not its own 1 s backoff.
                self.assertGreaterEqual(min(accepted) - max(refused), 1900, records)
                status, log, counters = agent.stop()
                self.assertEqual(status, 0, log)
                self.assertEqual(counters["flowtracer.spans.exported"], 2 * 5, log)  # client and server spans
                self.assertEqual(dropped(counters), 0, log)
                self.assertGreaterEqual(counters["flowtracer.export.errors"], 1, log)

    def test_shutdown_flushes_within_the_timeout(self):
        service_port = area_port()
        start_test_server(self, service_port, name="shop")
        receiver = Receiver(self)
        # Nothing is sent before the stop: a batch waits 60 s or 512 spans.
        config = self._config("exporter:\n  schedule_delay: 60s\n")
        agent = Agent(self, "--config", config, "--endpoint", f"http://127.0.0.1:{receiver.http_port}",
                      "--port", str(service_port))
        self._phase(service_port, "queued", 30)
        time.sleep(1)
        self.assertEqual(receiver.spans(), [])
        started = time.monotonic()
        status, log, counters = agent.stop(settle_s=0)
        self.assertEqual(status, 0, log)
        self.assertLess(time.monotonic() - started, 5)
        self.assertEqual(sorted(paths(receiver.spans())), sorted(f"/queued/{i}" for i in range(30)))
        self.assertEqual(counters["flowtracer.spans.exported"], 60, log)

        # A receiver that does not answer: the stop still ends after --shutdown-timeout.
        open(receiver.out, "w").close()
        receiver.control(mode="slow", delay_ms=20000)
        agent = Agent(self, "--config", config, "--endpoint", f"http://127.0.0.1:{receiver.http_port}",
                      "--port", str(service_port), "--shutdown-timeout", "1s")
        self._phase(service_port, "stuck", 10)
        started = time.monotonic()
        status, log, counters = agent.stop(settle_s=0.5)
        elapsed = time.monotonic() - started - 0.5
        self.assertEqual(status, 0, log)
        self.assertLess(elapsed, 3, log)
        self.assertEqual(counters["flowtracer.spans.exported"], 0, log)
        self.assertEqual(counters["flowtracer.spans.dropped{reason=shutdown}"], 20, log)
        receiver.control(mode="ok")

    def test_slow_collector_bounded_queue(self):
        service_port = area_port()
        start_test_server(self, service_port, name="shop")
        receiver = Receiver(self)
        receiver.control(mode="slow", delay_ms=3000)
        config = self._config("exporter:\n  max_queue_spans: 200\n  max_export_batch_spans: 50\n"
                              "  timeout: 500ms\n  max_attempts: 2\n")
        agent = Agent(self, "--config", config, "--endpoint", f"http://127.0.0.1:{receiver.http_port}",
                      "--port", str(service_port))
        rss_start = agent.rss_kib()
        conn = http.client.HTTPConnection("127.0.0.1", service_port, timeout=10)
        started = time.monotonic()
        self._phase(service_port, "load", 1500, conn)  # keep-alive: many spans quickly
        conn.close()
        rss_loaded = agent.rss_kib()
        self.assertEqual(agent.health("/healthz"), 200)
        receiver.control(mode="ok")
        self._phase(service_port, "after", 10)
        self.assertTrue(wait_until(lambda: "/after/9" in paths(receiver.spans()), 15))
        status, log, counters = agent.stop()
        self.assertEqual(status, 0, log)
        # Capture kept up while export was stuck: every request became two spans (client, server).
        self.assertEqual(counters["flowtracer.spans.produced"], 2 * 1510, log)
        self.assertGreater(counters["flowtracer.spans.dropped{reason=queue_full}"], 0, log)
        self.assertEqual(counters["flowtracer.spans.produced"],
                         counters["flowtracer.spans.exported"] + dropped(counters), log)
        self.assertLess(rss_loaded - rss_start, 20 * 1024, f"RSS {rss_start} -> {rss_loaded} KiB")
        self.assertLess(time.monotonic() - started, 120)


REPO = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")


def check_config(*args, env=None, config_text=None, test=None):
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_") and not k.lower().endswith("_proxy")}
    full_env.update(env or {})
    command = [FLOWTRACER, "agent", "--check-config", *args]
    if config_text is not None:
        path = tempfile.NamedTemporaryFile(prefix="agent-", suffix=".yaml", delete=False, mode="w")
        path.write(config_text)
        path.close()
        test.addCleanup(os.unlink, path.name)
        command += ["--config", path.name]
    return subprocess.run(command, capture_output=True, text=True, timeout=30, env=full_env)


class AgentConfigTest(unittest.TestCase):
    """The file, then the environment, then flags; the shipped examples are valid."""

    def test_precedence(self):
        text = ("exporter:\n  endpoint: http://from-file:4318\n  compression: gzip\n  timeout: 3s\n"
                "trace:\n  ports: [8080]\n  max_cpu_percent: 7\nresource:\n  attributes:\n    team: file\n")
        result = check_config(config_text=text, test=self)
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertIn("max cpu: 7% of a core\n", result.stdout)
        self.assertIn("traces endpoint: http://from-file:4318/v1/traces", result.stdout)
        self.assertIn("compression: gzip", result.stdout)
        self.assertIn("timeout: 3000ms", result.stdout)
        self.assertIn("ports: 8080", result.stdout)
        self.assertIn("resource attribute: team=file", result.stdout)

        env = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://from-env:4318", "OTEL_EXPORTER_OTLP_TIMEOUT": "1500",
               "OTEL_RESOURCE_ATTRIBUTES": "team=env"}
        result = check_config(config_text=text, env=env, test=self)
        self.assertIn("traces endpoint: http://from-env:4318/v1/traces", result.stdout)
        self.assertIn("timeout: 1500ms", result.stdout)
        self.assertIn("compression: gzip", result.stdout)  # not set in the environment: the file's
        self.assertIn("resource attribute: team=env", result.stdout)

        result = check_config("--endpoint", "http://from-flag:4317", "--protocol", "grpc", "--compression", "none",
                              "--port", "9090", "--max-cpu", "0", config_text=text, env=env, test=self)
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertIn("max cpu: none\n", result.stdout)
        self.assertIn("traces endpoint: http://from-flag:4317\n", result.stdout)
        self.assertIn("protocol: grpc", result.stdout)
        self.assertIn("compression: none", result.stdout)
        self.assertIn("ports: 9090\n", result.stdout)

    def test_signal_specific_variables(self):
        env = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "grpc",
               "OTEL_EXPORTER_OTLP_METRICS_COMPRESSION": "gzip", "OTEL_EXPORTER_OTLP_METRICS_TIMEOUT": "2500"}
        result = check_config(env=env, test=self)
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertIn("traces endpoint: http://collector:4318\n", result.stdout)  # gRPC: no /v1 path
        self.assertIn("metrics endpoint: http://collector:4318/v1/metrics\n", result.stdout)
        self.assertIn("traces protocol: grpc\n", result.stdout)
        self.assertIn("metrics compression: gzip\n", result.stdout)
        self.assertIn("metrics timeout: 2500ms\n", result.stdout)
        # A flag for the shared setting replaces the signal's own from the environment.
        result = check_config("--protocol", "http/protobuf", "--compression", "none", env=env, test=self)
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertIn("traces endpoint: http://collector:4318/v1/traces\n", result.stdout)
        self.assertNotIn("traces protocol:", result.stdout)
        self.assertNotIn("metrics compression:", result.stdout)
        self.assertIn("metrics timeout: 2500ms\n", result.stdout)
        bad = check_config(env={"OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "thrift"}, test=self)
        self.assertEqual(bad.returncode, 2)
        self.assertIn("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", bad.stderr)

    def test_proxy_from_the_environment(self):
        env = {"https_proxy": "http://agent:secret@proxy.corp:3128", "no_proxy": ".svc,10.0.0.0/8",
               "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "https://traces.example/v1/traces",
               "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT": "https://collector.observability.svc:4318/v1/metrics"}
        result = check_config(env=env, test=self)
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertIn("traces proxy: proxy.corp:3128 (from https_proxy)\n", result.stdout)
        self.assertNotIn("metrics proxy:", result.stdout)  # no_proxy covers .svc
        self.assertNotIn("secret", result.stdout)
        # gRPC reads the variables itself: no proxy line.
        result = check_config("--protocol", "grpc", env=env, test=self)
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertNotIn("proxy:", result.stdout)
        # Only the proxy a signal goes through is checked: a SOCKS proxy meant for other
        # programs does not stop the agent while its endpoint is http://.
        socks = {"https_proxy": "socks5://proxy.corp:1080"}
        self.assertEqual(check_config(env=socks, test=self).returncode, 0)
        bad = check_config(env=dict(socks, OTEL_EXPORTER_OTLP_ENDPOINT="https://collector:4318"), test=self)
        self.assertEqual(bad.returncode, 2)
        self.assertIn("https_proxy: 'socks5://proxy.corp:1080': only http:// proxies are supported", bad.stderr)

    def test_shipped_examples_are_valid(self):
        result = check_config("--config", os.path.join(REPO, "packaging", "flowtracer-agent.yaml"))
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertIn("traces endpoint: http://localhost:4318/v1/traces", result.stdout)
        with open(os.path.join(REPO, "k8s", "daemonset.yaml")) as f:
            text = f.read()
        # The ConfigMap's agent.yaml, without a YAML library: the indented block after "agent.yaml: |".
        block = text.split("agent.yaml: |\n", 1)[1]
        lines = []
        for line in block.splitlines():
            if line.strip() and not line.startswith("    "):
                break
            lines.append(line[4:])
        result = check_config(config_text="\n".join(lines) + "\n", test=self)
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertIn("health: 0.0.0.0:13133", result.stdout)


    @unittest.skipUnless(shutil.which("systemd-analyze"), "systemd-analyze is not installed")
    def test_systemd_unit_is_valid(self):
        with open(os.path.join(REPO, "packaging", "systemd", "flowtracer.service")) as f:
            unit = f.read()
        self.assertIn("ExecStart=/usr/local/bin/flowtracer agent --config /etc/flowtracer/agent.yaml", unit)
        directory = tempfile.mkdtemp(prefix="otlp-unit-")
        self.addCleanup(shutil.rmtree, directory)
        path = os.path.join(directory, "flowtracer.service")
        with open(path, "w") as f:
            f.write(unit.replace("/usr/local/bin/flowtracer", os.path.abspath(FLOWTRACER)))
        result = subprocess.run(["systemd-analyze", "verify", path], capture_output=True, text=True, timeout=60)
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertNotIn("flowtracer.service", result.stderr)  # no warnings about the unit


class AgentConfigErrorsTest(unittest.TestCase):
    """Refused before anything is loaded: one message naming the source, non-zero exit."""

    def _run(self, *args, config=None, env=None, user=None, binary=FLOWTRACER):
        full_env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
        full_env.update(env or {})
        command = [binary, "agent", *args]
        if user:
            command = ["setpriv", "--reuid", user, "--regid", user, "--clear-groups", *command]
        if config is not None:
            path = tempfile.NamedTemporaryFile(prefix="agent-", suffix=".yaml", delete=False, mode="w")
            path.write(config)
            path.close()
            self.addCleanup(os.unlink, path.name)
            command += ["--config", path.name]
        result = subprocess.run(command, capture_output=True, text=True, timeout=30, env=full_env)
        self.assertNotEqual(result.returncode, 0, result.stderr)
        self.assertLess(result.returncode, 128, "killed by a signal")
        errors = [line for line in result.stderr.splitlines() if line.startswith("error")]
        self.assertEqual(len(errors), 1, result.stderr)
        return errors[0], command[-1] if config is not None else None

    def test_bad_yaml(self):
        message, path = self._run(config="exporter:\n  endpoint: [unclosed\n")
        self.assertIn(path, message)
        self.assertIn("line", message)

    def test_unknown_keys(self):
        message, path = self._run(config="exporter:\n  endpont: http://x:4318\n")
        self.assertIn(f"{path}: exporter.endpont: unknown key", message)
        message, path = self._run(config="exportr:\n  endpoint: http://x:4318\n")
        self.assertIn(f"{path}: exportr: unknown key", message)

    def test_bad_values(self):
        cases = [
            ("exporter:\n  endpoint: collector:4318\n", "exporter.endpoint", "not a URL"),
            ("exporter:\n  endpoint: http://collector:70000\n", "exporter.endpoint", "invalid port"),
            ("exporter:\n  protocol: thrift\n", "exporter.protocol", "thrift"),
            ("exporter:\n  timeout: soon\n", "exporter.timeout", "duration"),
            ("trace:\n  ports: [80, 99999]\n", "trace.ports", "99999"),
            ("trace:\n  max_cpu_percent: lots\n", "trace.max_cpu_percent", "lots"),
            ("trace:\n  ring_buffer_mb: 3\n", "trace.ring_buffer_mb", "power of two"),
            ("health:\n  listen: nowhere\n", "health.listen", "HOST:PORT"),
        ]
        for text, key, reason in cases:
            with self.subTest(key=key):
                message, path = self._run(config=text)
                self.assertIn(f"{path}: {key}:", message)
                self.assertIn(reason, message)

    def test_invalid_endpoint_from_environment_and_flag(self):
        message, _ = self._run(env={"OTEL_EXPORTER_OTLP_ENDPOINT": "localhost:4318"})
        self.assertIn("OTEL_EXPORTER_OTLP_ENDPOINT", message)
        message, _ = self._run(env={"OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"})
        self.assertIn("OTEL_EXPORTER_OTLP_PROTOCOL", message)
        message, _ = self._run("--endpoint", "http//broken")
        self.assertIn("--endpoint", message)
        self.assertIn("http//broken", message)
        for args, mentioned in ((["--protocol", "thrift"], "--protocol"), (["--compression", "br"], "--compression"),
                                (["--max-payload-bytes", "9"], "--max-payload-bytes"),
                                (["--ring-buffer-mb", "6"], "--ring-buffer-mb"),
                                (["--shutdown-timeout", "later"], "--shutdown-timeout"),
                                (["--health-listen", "localhost"], "--health-listen")):
            message, _ = self._run(*args)
            self.assertIn(mentioned, message)
            self.assertIn(args[1], message)

    def test_not_root(self):
        # The missing privilege is what is reported, even when the ports it would serve on
        # are taken (checked before they are bound).
        held = socket.socket()
        self.addCleanup(held.close)
        held.bind(("127.0.0.1", area_port()))
        held.listen()
        port = held.getsockname()[1]
        message, _ = self._run("--health-listen", f"127.0.0.1:{port}", "--prometheus-address", "127.0.0.1",
                               "--prometheus-port", str(port), user="65534")
        self.assertIn("root", message)

    def test_missing_file(self):
        message, _ = self._run("--config", "/nonexistent/agent.yaml")
        self.assertIn("/nonexistent/agent.yaml", message)

    def test_transports_without_their_modules(self):
        # The binary copied alone: neither OTLP transport can load, and --check-config says so.
        directory = tempfile.mkdtemp(prefix="ft-alone.")
        self.addCleanup(shutil.rmtree, directory, True)
        alone = os.path.join(directory, "flowtracer")
        shutil.copy(FLOWTRACER, alone)
        for protocol, module in (("grpc", "flowtracer-otlp-grpc.so"), ("http/protobuf", "flowtracer-otlp-http.so")):
            message, _ = self._run("--protocol", protocol, "--check-config", binary=alone)
            self.assertIn(module, message)
            self.assertIn(directory, message)
            # Beside the real build the same check passes: the module is found there.
            result = subprocess.run([FLOWTRACER, "agent", "--protocol", protocol, "--check-config"],
                                    capture_output=True, text=True, timeout=30)
            self.assertEqual(result.returncode, 0, result.stderr)
            self.assertIn(f"protocol: {protocol}", result.stdout)


if __name__ == "__main__":
    unittest.main()
