"""`flowtracer agent` metrics end to end: real traced traffic with known counts and statuses,
OTLP metrics decoded by the Node receiver (generated types of the OpenTelemetry JS packages,
tests/node/otlp_receiver.js, never flowtracer's own .proto), cumulative and delta, and the
Prometheus endpoint the agent serves at the same time; OTLP/HTTP and OTLP/gRPC.

Ports: 20000-20999 only (services 20001-20002, Prometheus endpoint 20010, receiver 20030
for HTTP and 20031 for gRPC, health 20040)."""
import json
import os
import signal
import subprocess
import tempfile
import time
import unittest

from harness import FLOWTRACER, HOOKS, E2ETest, Process
from test_metrics import (BILLING_PORT, GATEWAY_PORT, METRICS_PORT, PROMTOOL, fetch, parse_exposition, select,
                          send_forwarded, start_service, total, wait_until)

NODE_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "node")
RECEIVER_PORT = 20030
RECEIVER_GRPC_PORT = 20031
HEALTH_PORT = 20040


def attributes(key_values):
    result = {}
    for kv in key_values:
        value = kv.get("value", {})
        for kind in ("stringValue", "intValue", "boolValue", "doubleValue"):
            if kind in value:
                result[kv["key"]] = str(value[kind]) if kind == "intValue" else value[kind]
    return result


class Receiver:
    def __init__(self, test, grpc_port=None):
        self.out = tempfile.NamedTemporaryFile(prefix="otlp-metrics-", suffix=".jsonl", delete=False).name
        test.addCleanup(lambda: os.path.exists(self.out) and os.unlink(self.out))
        args = ["node", os.path.join(NODE_DIR, "otlp_receiver.js"), "--http-port", str(RECEIVER_PORT), "--out", self.out]
        if grpc_port:
            args += ["--grpc-port", str(grpc_port)]
        self.process = Process(args, ready_line="ready", cwd=NODE_DIR)
        test.addCleanup(self.process.stop)

    def metric_requests(self):
        with open(self.out) as f:
            records = [json.loads(line) for line in f if line.strip()]
        return [r["request"] for r in records if r.get("signal") == "metrics"]


def points(request, service, name):
    """[(point attributes, point, metric)] of metric `name` in the resource of `service`."""
    result = []
    for resource_metrics in request.get("resourceMetrics", []):
        resource = attributes(resource_metrics.get("resource", {}).get("attributes", []))
        if resource.get("service.name") != service:
            continue
        for scope in resource_metrics.get("scopeMetrics", []):
            for metric in scope.get("metrics", []):
                if metric["name"] != name:
                    continue
                data = metric.get("histogram") or metric.get("sum") or metric.get("gauge")
                for point in data.get("dataPoints", []):
                    result.append((attributes(point.get("attributes", [])), point, metric))
    return result


class Agent:
    def __init__(self, test, *args, endpoint=f"http://127.0.0.1:{RECEIVER_PORT}"):
        self.log_path = tempfile.NamedTemporaryFile(prefix="agent-", suffix=".log", delete=False).name
        test.addCleanup(lambda: os.path.exists(self.log_path) and os.unlink(self.log_path))
        self.log_file = open(self.log_path, "w")
        test.addCleanup(self.log_file.close)
        self.proc = subprocess.Popen(
            [FLOWTRACER, "agent", "--hooks", HOOKS, "--health-listen", f"127.0.0.1:{HEALTH_PORT}",
             "--endpoint", endpoint, "--port", str(BILLING_PORT), "--port",
             str(GATEWAY_PORT), "--prometheus-port", str(METRICS_PORT), "--prometheus-address", "127.0.0.1",
             "--metrics-interval", "1s", *args],
            stdout=subprocess.DEVNULL, stderr=self.log_file)
        test.addCleanup(self._kill)
        wait_until(lambda: ("tracing; stop with SIGTERM" in self.log(), self.proc.poll()), 30, "agent started")

    def log(self):
        with open(self.log_path) as f:
            return f.read()

    def _kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def stop(self):
        time.sleep(0.5)
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=30)
        return self.proc.returncode


OK, NOT_FOUND, UNAVAILABLE = 20, 5, 7
STATUSES = [200] * OK + [404] * NOT_FOUND + [503] * UNAVAILABLE
SENT = len(STATUSES)


class AgentMetricsTest(E2ETest):
    def _start(self, *agent_args, grpc=False):
        start_service(self, BILLING_PORT, name="billing")
        start_service(self, GATEWAY_PORT, downstream=f"http://127.0.0.1:{BILLING_PORT}", name="gateway")
        receiver = Receiver(self, grpc_port=RECEIVER_GRPC_PORT if grpc else None)
        if grpc:
            agent = Agent(self, "--protocol", "grpc", *agent_args, endpoint=f"http://127.0.0.1:{RECEIVER_GRPC_PORT}")
        else:
            agent = Agent(self, *agent_args)
        return receiver, agent

    def test_cumulative_otlp_metrics_match_the_traffic(self):
        receiver, agent = self._start()
        send_forwarded(STATUSES)

        def edge_total():
            requests = receiver.metric_requests()
            if not requests:
                return False, None
            last = requests[-1]
            value = sum(int(p["asInt"]) for a, p, _ in points(last, "flowtracer", "traces_service_graph_request_total")
                        if a.get("client") == "gateway" and a.get("server") == "billing")
            return value == SENT, value
        wait_until(edge_total, 20, "gateway -> billing in OTLP")
        # The Prometheus endpoint serves the same numbers meanwhile.
        def all_spans_counted():
            text = fetch(f"http://127.0.0.1:{METRICS_PORT}/metrics")[2]
            produced = total(parse_exposition(text), "flowtracer_spans_produced_total")
            return produced >= 4 * SENT, text
        exposition = wait_until(all_spans_counted, 10, "spans produced")
        check = subprocess.run([PROMTOOL, "check", "metrics"], input=exposition, capture_output=True, text=True,
                               timeout=30)
        self.assertEqual(check.returncode, 0, check.stdout + check.stderr)
        samples = parse_exposition(exposition)
        lost = select(samples, "flowtracer_events_lost_total", reason="ring_buffer_full")
        self.assertEqual([value for _, value in lost], [0])
        self.assertTrue(select(samples, "flowtracer_pipeline_anomalies_total", reason="same_host_not_linked"))
        self.assertEqual(total(samples, "traces_service_graph_request_total", client="gateway", server="billing"), SENT)
        self.assertEqual(total(samples, "http_server_request_duration_seconds_count", service_name="billing"), SENT)
        self.assertEqual(agent.stop(), 0)

        requests = receiver.metric_requests()
        self.assertGreaterEqual(len(requests), 2)  # on the interval, and once more at shutdown
        last = requests[-1]
        server = points(last, "billing", "http.server.request.duration")
        by_status = {}
        for attrs, point, metric in server:
            self.assertEqual(metric["unit"], "s")
            self.assertEqual(metric["histogram"]["aggregationTemporality"], "AGGREGATION_TEMPORALITY_CUMULATIVE")
            self.assertEqual([float(b) for b in point["explicitBounds"]],
                             [0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10])
            self.assertEqual(sum(int(c) for c in point["bucketCounts"]), int(point["count"]))
            self.assertEqual(attrs["http.route"], "/status/{id}/{id}")
            self.assertGreater(float(point["sum"]), 0)
            by_status[attrs["http.response.status_code"]] = int(point["count"])
            self.assertEqual(attrs.get("error.type"), "503" if attrs["http.response.status_code"] == "503" else None)
        self.assertEqual(by_status, {"200": OK, "404": NOT_FOUND, "503": UNAVAILABLE})
        client = points(last, "gateway", "http.client.request.duration")
        self.assertEqual(sum(int(p["count"]) for _, p, _ in client), SENT)
        self.assertEqual({(a["server.address"], a["server.port"]) for a, _, _ in client},
                         {("127.0.0.1", str(BILLING_PORT))})
        failed = points(last, "flowtracer", "traces_service_graph_request_failed_total")
        self.assertEqual(sum(int(p["asInt"]) for a, p, _ in failed if a["client"] == "gateway"), UNAVAILABLE)
        for _, _, metric in failed:
            self.assertTrue(metric["sum"]["isMonotonic"])
        server_seconds = points(last, "flowtracer", "traces_service_graph_request_server_seconds")
        self.assertEqual(sum(int(p["count"]) for a, p, _ in server_seconds if a["client"] == "gateway"), SENT)
        # Self-metrics ride along on the agent's resource.
        produced = points(last, "flowtracer", "flowtracer.spans.produced")
        self.assertEqual(len(produced), 1)
        self.assertGreaterEqual(int(produced[0][1]["asInt"]), 4 * SENT)
        self.assertTrue(points(last, "flowtracer", "flowtracer.events.lost"))
        # The pipeline's anomalies, one series per reason: a clean run has none.
        anomalies = {a["reason"]: int(p["asInt"]) for a, p, _ in points(last, "flowtracer", "flowtracer.pipeline.anomalies")}
        self.assertIn("http_resync", anomalies)
        self.assertEqual(anomalies["http_orphan_response"], 0)
        sent_exports = [p for a, p, _ in points(last, "flowtracer", "flowtracer.metrics.export.requests")
                        if a["reason"] == "sent"]
        self.assertEqual(len(sent_exports), 1)
        self.assertGreaterEqual(int(sent_exports[0]["asInt"]), 1)

    def test_delta_otlp_metrics_add_up_to_the_traffic(self):
        receiver, agent = self._start("--metrics-temporality", "delta")
        send_forwarded(STATUSES[:16])
        time.sleep(3.5)  # at least one export between the two halves
        send_forwarded(STATUSES[16:])
        time.sleep(3)
        self.assertEqual(agent.stop(), 0)
        requests = receiver.metric_requests()
        totals = []
        counts = []
        for request in requests:
            edge = [p for a, p, _ in points(request, "flowtracer", "traces_service_graph_request_total")
                    if a.get("client") == "gateway" and a.get("server") == "billing"]
            totals += [int(p["asInt"]) for p in edge]
            counts += [int(p["count"]) for _, p, _ in points(request, "billing", "http.server.request.duration")]
            for _, _, metric in points(request, "billing", "http.server.request.duration"):
                self.assertEqual(metric["histogram"]["aggregationTemporality"], "AGGREGATION_TEMPORALITY_DELTA")
        self.assertEqual(sum(totals), SENT)
        self.assertGreaterEqual(len(totals), 2, totals)  # the traffic spans several exports
        self.assertEqual(sum(counts), SENT)

    def test_grpc_carries_the_same_metrics(self):
        receiver, agent = self._start(grpc=True)
        send_forwarded(STATUSES)
        time.sleep(2.5)  # pairing wait, then at least one export
        self.assertEqual(agent.stop(), 0)
        with open(receiver.out) as f:
            records = [json.loads(line) for line in f if line.strip()]
        metric_records = [r for r in records if r.get("signal") == "metrics"]
        self.assertTrue(metric_records)
        self.assertTrue(all(r["transport"] == "grpc" for r in metric_records))
        last = metric_records[-1]["request"]
        edge = [int(p["asInt"]) for a, p, _ in points(last, "flowtracer", "traces_service_graph_request_total")
                if a.get("client") == "gateway" and a.get("server") == "billing"]
        self.assertEqual(edge, [SENT])
        self.assertEqual(sum(int(p["count"]) for _, p, _ in points(last, "billing", "http.server.request.duration")),
                         SENT)

    def test_check_config_shows_the_metrics_defaults_and_environment(self):
        out = subprocess.run([FLOWTRACER, "agent", "--check-config"], capture_output=True, text=True, timeout=30)
        self.assertEqual(out.returncode, 0, out.stderr)
        self.assertIn("metrics interval: 15000ms\n", out.stdout)
        self.assertIn("metrics temporality: cumulative\n", out.stdout)
        self.assertIn("prometheus: 0.0.0.0:9464\n", out.stdout)
        env = dict(os.environ, OTEL_METRIC_EXPORT_INTERVAL="5000",
                   OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE="Delta")
        out = subprocess.run([FLOWTRACER, "agent", "--check-config", "--prometheus-port", "0"], capture_output=True,
                             text=True, timeout=30, env=env)
        self.assertEqual(out.returncode, 0, out.stderr)
        self.assertIn("metrics interval: 5000ms\n", out.stdout)
        self.assertIn("metrics temporality: delta\n", out.stdout)
        self.assertIn("prometheus: off\n", out.stdout)
        with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
            f.write("metrics:\n  interval: 2s\n  temporality: delta\n  prometheus_port: 0\n"
                    "  peer_services:\n    orders-db: 10.0.0.9:5432\n")
        self.addCleanup(os.unlink, f.name)
        out = subprocess.run([FLOWTRACER, "agent", "--check-config", "--config", f.name], capture_output=True,
                             text=True, timeout=30)
        self.assertEqual(out.returncode, 0, out.stderr)
        self.assertIn("metrics interval: 2000ms\n", out.stdout)
        self.assertIn("metrics temporality: delta\n", out.stdout)
        self.assertIn("prometheus: off\n", out.stdout)
        self.assertIn("peer service: orders-db=10.0.0.9:5432\n", out.stdout)
        with open(f.name, "w") as bad_file:
            bad_file.write("metrics:\n  temporality: sometimes\n")
        bad = subprocess.run([FLOWTRACER, "agent", "--check-config", "--config", f.name], capture_output=True,
                             text=True, timeout=30)
        self.assertEqual(bad.returncode, 2)
        self.assertIn("metrics.temporality: 'sometimes' is not cumulative or delta", bad.stderr)
        bad = subprocess.run([FLOWTRACER, "agent", "--check-config"], capture_output=True, text=True, timeout=30,
                             env=dict(os.environ, OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE="sometimes"))
        self.assertEqual(bad.returncode, 2)
        self.assertIn("OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE", bad.stderr)


if __name__ == "__main__":
    unittest.main()
