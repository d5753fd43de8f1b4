"""Metrics from real traffic: known counts and statuses through two real services, read
from flowtracer's Prometheus endpoint, by a real Prometheus server, and as a mermaid map.

Ports: 20000-20999 only (services 20001-20002, flowtracer 20010, Prometheus 20020)."""
import http.client
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import unittest
import urllib.parse
import urllib.request

from harness import HERE, E2ETest, Process, Tracer, wait_for_port

BILLING_PORT = 20001
GATEWAY_PORT = 20002
METRICS_PORT = 20010
PROMETHEUS_PORT = 20020
PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"
PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"
PAIRING_WAIT_S = 2  # SpanMetricsOptions::pairing_wait_ns

SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$')
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def parse_exposition(text):
    """[(name, {label: value}, float)] from Prometheus text format."""
    samples = []
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        match = SAMPLE.match(line)
        assert match, f"not a sample line: {line!r}"
        labels = dict(LABEL.findall(match.group(2) or ""))
        samples.append((match.group(1), labels, float(match.group(3))))
    return samples


def select(samples, name, **labels):
    return [(l, v) for n, l, v in samples if n == name and all(l.get(k) == v2 for k, v2 in labels.items())]


def total(samples, name, **labels):
    return sum(v for _, v in select(samples, name, **labels))


def fetch(url, timeout_s=5):
    with urllib.request.urlopen(url, timeout=timeout_s) as response:
        return response.status, response.headers.get("Content-Type"), response.read().decode()


def start_service(test, port, downstream=None, name=None):
    env = dict(os.environ, OTEL_SERVICE_NAME=name)
    args = [sys.executable, os.path.join(HERE, "metrics_services.py"), str(port)]
    if downstream:
        args += ["--downstream", downstream]
    server = Process(args, env=env, ready_line="ready")
    test.addCleanup(server.stop)
    wait_for_port(port)
    return server


class Capture(Tracer):
    """`flowtracer capture` with the Prometheus endpoint on, spans as JSON to a file."""

    def __init__(self, test, *extra):
        super().__init__(test, "capture", "--port", str(BILLING_PORT), "--port", str(GATEWAY_PORT),
                         "--prometheus-port", str(METRICS_PORT), "--prometheus-address", "127.0.0.1", *extra)

    def metrics_text(self):
        status, content_type, text = fetch(f"http://127.0.0.1:{METRICS_PORT}/metrics")
        assert status == 200 and content_type.startswith("text/plain; version=0.0.4"), content_type
        return text

    def stop(self):
        """Ctrl-C; returns (spans, stdout, stderr)."""
        spans, stderr = super().stop()
        return spans, self.stdout, stderr


def wait_until(predicate, timeout_s, what):
    deadline = time.monotonic() + timeout_s
    last = None
    while time.monotonic() < deadline:
        ok, last = predicate()
        if ok:
            return last
        time.sleep(0.5)
    raise AssertionError(f"{what}: still {last!r} after {timeout_s}s")


def send_forwarded(statuses):
    """One new connection per request, each with its own id in the path (as users do)."""
    for i, code in enumerate(statuses):
        conn = http.client.HTTPConnection("127.0.0.1", GATEWAY_PORT, timeout=10)
        conn.request("GET", f"/forward/{code}/{1000 + i}")
        response = conn.getresponse()
        response.read()
        conn.close()
        assert response.status == code, (response.status, code)


def duration_s(span):
    return (span["end_time_unix_nano"] - span["start_time_unix_nano"]) / 1e9


class MetricsTest(E2ETest):
    OK, NOT_FOUND, UNAVAILABLE = 20, 5, 7

    def statuses(self):
        return [200] * self.OK + [404] * self.NOT_FOUND + [503] * self.UNAVAILABLE

    def start_services(self):
        start_service(self, BILLING_PORT, name="billing")
        start_service(self, GATEWAY_PORT, downstream=f"http://127.0.0.1:{BILLING_PORT}", name="gateway")

    def test_red_and_service_graph_match_the_traffic_and_the_spans(self):
        self.start_services()
        capture = Capture(self, "--map", "mermaid")
        send_forwarded(self.statuses())
        sent = len(self.statuses())

        def graph_complete():
            samples = parse_exposition(capture.metrics_text())
            values = (total(samples, "traces_service_graph_request_total", client="gateway", server="billing"),
                      total(samples, "traces_service_graph_request_total", server="gateway"))
            return values == (sent, sent), values
        # Both ends are traced here: the edge is counted once the two spans are paired.
        wait_until(graph_complete, 10 + PAIRING_WAIT_S, "requests to billing and to gateway")
        text = capture.metrics_text()
        samples = parse_exposition(text)
        spans, stdout, stderr = capture.stop()

        # RED, server side: counts per status equal what was sent; the id is templated.
        server = "http_server_request_duration_seconds_count"
        for code, count in ((200, self.OK), (404, self.NOT_FOUND), (503, self.UNAVAILABLE)):
            rows = select(samples, server, service_name="billing", http_response_status_code=str(code))
            self.assertEqual(len(rows), 1, rows)
            labels, value = rows[0]
            self.assertEqual(value, count, code)
            self.assertEqual(labels["http_request_method"], "GET")
            self.assertEqual(labels["http_route"], "/status/{id}/{id}")
            self.assertEqual(labels.get("error_type"), "503" if code == 503 else None)
        self.assertEqual(total(samples, server, service_name="gateway"), sent)
        # RED, client side: the gateway's calls, with the server's address and port.
        client = select(samples, "http_client_request_duration_seconds_count", service_name="gateway")
        self.assertEqual(sum(v for _, v in client), sent)
        for labels, _ in client:
            self.assertEqual((labels["server_address"], labels["server_port"]), ("127.0.0.1", str(BILLING_PORT)))
            self.assertNotIn("http_route", labels)
        # Buckets are cumulative and end at the count.
        buckets = select(samples, "http_server_request_duration_seconds_bucket", service_name="billing",
                         http_response_status_code="200")
        values = [v for _, v in sorted(buckets, key=lambda b: float(b[0]["le"].replace("+Inf", "inf")))]
        self.assertEqual(len(values), 15)
        self.assertEqual(values, sorted(values))
        self.assertEqual(values[-1], self.OK)

        # Histograms agree with the spans flowtracer printed.
        billing_spans = [s for s in spans if s["service"] == "billing" and s["kind"] == "SERVER"]
        gateway_client = [s for s in spans if s["service"] == "gateway" and s["kind"] == "CLIENT"]
        self.assertEqual(len(billing_spans), sent)
        self.assertEqual(len(gateway_client), sent)
        for code in (200, 404, 503):
            expected = sum(duration_s(s) for s in billing_spans
                           if s["attributes"]["http.response.status_code"] == code)
            got = total(samples, "http_server_request_duration_seconds_sum", service_name="billing",
                        http_response_status_code=str(code))
            self.assertAlmostEqual(got, expected, delta=1e-6 * max(1, expected))

        # Service graph: one edge per caller, counted once, failed = 5xx.
        edge = dict(client="gateway", server="billing", connection_type="")
        self.assertEqual(total(samples, "traces_service_graph_request_failed_total", **edge), self.UNAVAILABLE)
        self.assertEqual(total(samples, "traces_service_graph_request_server_seconds_count", **edge), sent)
        self.assertEqual(total(samples, "traces_service_graph_request_client_seconds_count", **edge), sent)
        self.assertAlmostEqual(total(samples, "traces_service_graph_request_server_seconds_sum", **edge),
                               sum(duration_s(s) for s in billing_spans), delta=1e-6)
        self.assertAlmostEqual(total(samples, "traces_service_graph_request_client_seconds_sum", **edge),
                               sum(duration_s(s) for s in gateway_client), delta=1e-6)
        # This test's own requests reach the gateway from a traced local process too.
        callers = {l["client"] for l, _ in select(samples, "traces_service_graph_request_total", server="gateway")}
        self.assertEqual(len(callers), 1, callers)
        self.assertEqual(total(samples, "traces_service_graph_request_total", server="gateway"), sent)
        self.assertEqual(total(samples, "traces_service_graph_request_failed_total", server="gateway"),
                         self.UNAVAILABLE)
        # No ids of any kind as labels.
        for name, labels, _ in samples:
            for key, value in labels.items():
                self.assertNotRegex(value, r"/\d", (name, key))
                self.assertNotIn(key, ("trace_id", "span_id", "url_path"))

        # The exposition passes Prometheus's own linter.
        check = subprocess.run([PROMTOOL, "check", "metrics"], input=text, capture_output=True, text=True,
                               timeout=30)
        self.assertEqual(check.returncode, 0, check.stdout + check.stderr)

        # The mermaid map (stdout) has the edge with rate, errors and p99.
        self.assertTrue(stdout.startswith("flowchart LR\n"), stdout)
        nodes = dict(re.findall(r'^  (n\d+)\["([^"]*)"\]$', stdout, re.M))
        names = {v: k for k, v in nodes.items()}
        self.assertIn("gateway", names, stdout)
        self.assertIn("billing", names, stdout)
        edge_line = re.search(r'^  %s -->\|"([^"]*)"\| %s$' % (names["gateway"], names["billing"]), stdout, re.M)
        self.assertIsNotNone(edge_line, stdout)
        self.assertRegex(edge_line.group(1),
                         r"^\d+(\.\d+)? req/s, %d errors \(\d+\.\d%%\), p99 \d+\.\d\d ms$" % self.UNAVAILABLE)

    def test_a_real_prometheus_scrapes_the_series(self):
        self.start_services()
        capture = Capture(self)
        workdir = tempfile.mkdtemp(prefix="flowtracer-prometheus-")
        self.addCleanup(shutil.rmtree, workdir, ignore_errors=True)
        config = os.path.join(workdir, "prometheus.yml")
        with open(config, "w") as f:
            f.write("global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
                    "scrape_configs:\n  - job_name: flowtracer\n    static_configs:\n"
                    f"      - targets: ['127.0.0.1:{METRICS_PORT}']\n")
        prometheus = subprocess.Popen(
            [PROMETHEUS, f"--config.file={config}", f"--storage.tsdb.path={workdir}/data",
             f"--web.listen-address=127.0.0.1:{PROMETHEUS_PORT}"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)

        def stop_prometheus():
            prometheus.terminate()
            try:
                prometheus.wait(timeout=10)
            except subprocess.TimeoutExpired:
                prometheus.kill()
                prometheus.wait()
        self.addCleanup(stop_prometheus)
        wait_until(lambda: (self._ready(), None), 30, "Prometheus ready")

        send_forwarded(self.statuses())
        sent = len(self.statuses())

        def query(expression):
            url = f"http://127.0.0.1:{PROMETHEUS_PORT}/api/v1/query?" + urllib.parse.urlencode({"query": expression})
            _, _, body = fetch(url)
            reply = json.loads(body)
            assert reply["status"] == "success", reply
            return reply["data"]["result"]

        def scalar(expression):
            result = query(expression)
            return float(result[0]["value"][1]) if result else None

        expectations = {
            'sum(traces_service_graph_request_total{client="gateway",server="billing"})': sent,
            'sum(traces_service_graph_request_failed_total{client="gateway",server="billing"})': self.UNAVAILABLE,
            'sum(traces_service_graph_request_server_seconds_count{client="gateway",server="billing"})': sent,
            'sum(traces_service_graph_request_client_seconds_count{client="gateway",server="billing"})': sent,
            'sum(http_server_request_duration_seconds_count{service_name="billing"})': sent,
            'sum(http_server_request_duration_seconds_count{service_name="billing",http_response_status_code="503",error_type="503"})': self.UNAVAILABLE,
            'sum(http_client_request_duration_seconds_count{service_name="gateway",server_port="%d"})' % BILLING_PORT: sent,
            'count(http_server_request_duration_seconds_bucket{service_name="billing",http_response_status_code="200"})': 15,
        }
        for expression, expected in expectations.items():
            wait_until(lambda: (scalar(expression) == expected, scalar(expression)), 20 + PAIRING_WAIT_S,
                       expression)
        # The scrape itself is healthy and job/instance are Prometheus's own.
        self.assertEqual(scalar('up{job="flowtracer"}'), 1)
        capture.stop()

    def _ready(self):
        try:
            return fetch(f"http://127.0.0.1:{PROMETHEUS_PORT}/-/ready")[0] == 200
        except OSError:
            return False

    def test_ten_thousand_ids_in_paths_give_a_bounded_number_of_series(self):
        self.start_services()
        capture = Capture(self)
        requests = 10000
        conn = http.client.HTTPConnection("127.0.0.1", BILLING_PORT, timeout=10)
        # Numbers, UUIDs and long hex, each distinct, on one keep-alive connection.
        deadline = time.monotonic() + 120
        for i in range(requests):
            self.assertLess(time.monotonic(), deadline, f"only {i} requests in 120 s")
            conn.request("GET", f"/users/{i}/orders/{i:08x}-0000-4000-8000-{i:012x}/blob/{i:032x}")
            response = conn.getresponse()
            response.read()
        conn.close()
        # One path that is not UTF-8: the exposition must stay valid.
        with socket.create_connection(("127.0.0.1", BILLING_PORT), timeout=10) as raw:
            raw.sendall(b"GET /caf\xff\xfe/menu HTTP/1.1\r\nHost: billing\r\nConnection: close\r\n\r\n")
            reply = b""
            while chunk := raw.recv(4096):
                reply += chunk
            self.assertTrue(reply.startswith(b"HTTP/1.1 200"), reply[:40])
        requests += 1

        def all_counted():
            samples = parse_exposition(capture.metrics_text())
            return total(samples, "http_server_request_duration_seconds_count", service_name="billing") == requests, \
                total(samples, "http_server_request_duration_seconds_count", service_name="billing")
        wait_until(all_counted, 30, "10000 requests counted")
        samples = parse_exposition(capture.metrics_text())
        series = select(samples, "http_server_request_duration_seconds_count", service_name="billing")
        self.assertEqual(sorted(l["http_route"] for l, _ in series), ["/caf\ufffd\ufffd/menu", "/users/{id}/orders/{id}/blob/{id}"])
        text = capture.metrics_text()
        text.encode("utf-8")  # fetch() decoded it as UTF-8 already; this documents the point
        check = subprocess.run([PROMTOOL, "check", "metrics"], input=text, capture_output=True, text=True, timeout=30)
        self.assertEqual(check.returncode, 0, check.stdout + check.stderr)
        # The whole exposition stays small: a few series per service and edge.
        self.assertLess(len({(n, tuple(sorted(l.items()))) for n, l, _ in samples
                             if not n.endswith("_bucket")}), 30)
        spans, _, _ = capture.stop()
        # The capture's JSON survives the same bytes (written as U+FFFD).
        self.assertIn("/caf\ufffd\ufffd/menu", [s["attributes"]["url.path"] for s in spans if s["kind"] == "SERVER"])


if __name__ == "__main__":
    unittest.main()
