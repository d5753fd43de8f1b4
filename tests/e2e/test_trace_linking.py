"""One trace per request across services, end to end: `flowtracer capture --format json`
while chains of real services on loopback answer real clients.

- plain python3 threaded services gateway -> billing -> ledger (no tracing code);
- the same chain in Node.js instrumented with the OpenTelemetry SDK, its own spans
  written to a file by the SDK: flowtracer's trace ids must be the SDK's;
- a Node.js and a Python asyncio event-loop service calling another under concurrent
  requests;
- malformed traceparent values.
Every request carries a unique id as the last segment of its path, so each trace can be
checked on its own. Ports come from 18000-18999."""
import collections
import http.client
import json
import os
import random
import socket
import subprocess
import sys
import tempfile
import threading
import time
import unittest

from harness import HERE, E2ETest, Process, Tracer, port_in_range, wait_for_port

NODE = "node"
NODE_SERVICE = os.path.join(HERE, "node_service.js")
NODE_MODULES = os.path.join(HERE, "..", "node", "node_modules")
TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT = "00f067aa0ba902b7"


def area_port():
    """A free port in this suite's range, 18000-18999."""
    return port_in_range(18000, 18999)


def request_id(span):
    return span["attributes"].get("url.path", "").rsplit("/", 1)[-1]


def by_request(records):
    spans = collections.defaultdict(list)
    for span in records:
        spans[request_id(span)].append(span)
    return spans


def one(spans, service, kind):
    found = [s for s in spans if s["service"] == service and s["kind"] == kind]
    if len(found) != 1:
        raise AssertionError(f"{len(found)} {kind} spans of {service} in {json.dumps(spans)[:2000]}")
    return found[0]


def get(port, path, headers=None, timeout_s=15):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout_s)
    try:
        conn.request("GET", path, headers=headers or {})
        response = conn.getresponse()
        response.read()
        return response.status
    finally:
        conn.close()


def drive_concurrently(port, prefix, clients=20, seconds=3.0, max_per_client=2000, max_pause_s=0.0):
    """`clients` threads, each sending GET /call/<unique id> on its own keep-alive
    connection for `seconds`, pausing up to `max_pause_s` (random) between requests.
    Returns the ids answered with 200 and the failures."""
    answered, failures = [], []
    lock = threading.Lock()
    deadline = time.monotonic() + seconds

    def client(index):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=15)
        for n in range(max_per_client):
            if time.monotonic() >= deadline:
                break
            time.sleep(random.uniform(0, max_pause_s))
            rid = f"{prefix}{index}x{n}"
            try:
                conn.request("GET", f"/call/{rid}")
                response = conn.getresponse()
                response.read()
                with lock:
                    (answered if response.status == 200 else failures).append(rid)
            except (OSError, http.client.HTTPException) as error:
                with lock:
                    failures.append(f"{rid}: {error}")
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=15)
        conn.close()

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=seconds + 60)
    return answered, failures


class TraceLinkingTest(E2ETest):
    def start_python(self, name, downstream=None):
        port = area_port()
        env = dict(os.environ, OTEL_SERVICE_NAME=name)
        args = [sys.executable, os.path.join(HERE, "servers.py"), str(port)]
        if downstream:
            args += ["--downstream", f"http://127.0.0.1:{downstream}/call"]
        server = Process(args, env=env, ready_line="ready")
        self.addCleanup(server.stop)
        wait_for_port(port)
        return server, port

    def start_node(self, name, downstream=None, sdk_file=None, wire_file=None, delay_ms=0):
        port = area_port()
        env = dict(os.environ, OTEL_SERVICE_NAME=name)
        args = [NODE, NODE_SERVICE, str(port), "--delay-ms", str(delay_ms)]
        if downstream:
            args += ["--downstream", f"http://127.0.0.1:{downstream}/call"]
        if sdk_file:
            args += ["--sdk", sdk_file]
        if wire_file:
            args += ["--wire", wire_file]
        server = Process(args, env=env, ready_line="ready", timeout_s=60)
        self.addCleanup(server.stop)
        wait_for_port(port)
        return server, port

    def temp_file(self, suffix):
        path = tempfile.NamedTemporaryFile(prefix="flowtracer-linking-", suffix=suffix, delete=False).name
        self.addCleanup(lambda: os.path.exists(path) and os.unlink(path))
        return path

    def assert_within(self, child, parent, slack_ns=5_000_000):
        """Kernel timestamps on one clock: a child's span lies inside its parent's. A send is
        timed when the call returns, by which time the peer may already have read the
        bytes: hence the slack."""
        self.assertGreaterEqual(child["start_time_unix_nano"], parent["start_time_unix_nano"] - slack_ns)
        self.assertLessEqual(child["end_time_unix_nano"], parent["end_time_unix_nano"] + slack_ns)

    def assert_chain(self, spans, rid, gateway_parent=""):
        """gateway -> billing -> ledger: five spans, one trace, the right parents."""
        self.assertEqual(len(spans), 5, f"{rid}: {json.dumps(spans)[:3000]}")
        gateway = one(spans, "gateway", "SERVER")
        gateway_call = one(spans, "gateway", "CLIENT")
        billing = one(spans, "billing", "SERVER")
        billing_call = one(spans, "billing", "CLIENT")
        ledger = one(spans, "ledger", "SERVER")
        self.assertEqual({s["trace_id"] for s in spans}, {gateway["trace_id"]}, rid)
        self.assertEqual(gateway["parent_span_id"], gateway_parent, rid)
        self.assertEqual(gateway_call["parent_span_id"], gateway["span_id"], rid)
        self.assertEqual(billing["parent_span_id"], gateway_call["span_id"], rid)
        self.assertEqual(billing_call["parent_span_id"], billing["span_id"], rid)
        self.assertEqual(ledger["parent_span_id"], billing_call["span_id"], rid)
        for span in spans:
            self.assertEqual(span["attributes"]["url.path"], f"/call/{rid}")
            self.assertEqual(span["attributes"]["http.request.method"], "GET")
            self.assertEqual(span["attributes"]["http.response.status_code"], 200)
            self.assertEqual(span["status"], "UNSET")
        self.assert_within(gateway_call, gateway)
        self.assert_within(billing, gateway_call)
        self.assert_within(billing_call, billing)
        self.assert_within(ledger, billing_call)
        return gateway, gateway_call, billing, billing_call, ledger

    def test_python_chain_one_request_then_concurrent_clients(self):
        ledger, ledger_port = self.start_python("ledger")
        billing, billing_port = self.start_python("billing", downstream=ledger_port)
        gateway, gateway_port = self.start_python("gateway", downstream=billing_port)
        tracer = Tracer(self, "capture", "--pid", str(gateway.pid), "--pid", str(billing.pid),
                        "--pid", str(ledger.pid))
        self.assertEqual(get(gateway_port, "/call/single"), 200)
        answered, failures = drive_concurrently(gateway_port, "c", clients=20, seconds=3.0)
        records, log = tracer.stop()
        self.assertEqual(tracer.exit_code, 0, log)
        self.assertEqual(failures, [])
        self.assertGreater(len(answered), 20, "the services answered too few requests to test anything")
        # Spans were held until their trace settled, never forced out.
        self.assertNotIn("before their trace settled", log)
        self.assertNotIn("forgotten unanswered", log)

        spans = by_request(records)
        gateway_span, _, billing_span, _, ledger_span = self.assert_chain(spans["single"], "single")
        self.assertEqual(billing_span["attributes"]["flowtracer.parent.source"], "same_host")
        self.assertEqual(ledger_span["attributes"]["flowtracer.parent.source"], "same_host")
        incomplete = [rid for rid in answered if len(spans.get(rid, [])) != 5]
        self.assertEqual(incomplete, [], f"{len(incomplete)} of {len(answered)} traces incomplete\n{log}")
        for rid in answered:
            self.assert_chain(spans[rid], rid)
        # No span of any trace points at a span of another request.
        by_span_id = {s["span_id"]: s for s in records}
        for span in records:
            if span["parent_span_id"]:
                self.assertEqual(request_id(by_span_id[span["parent_span_id"]]), request_id(span))
        print(f"\npython chain: {len(answered) + 1} requests, {len(records)} spans, "
              f"all traces complete", file=sys.stderr)

    def test_node_sdk_chain_trace_ids_equal_the_sdks(self):
        if not os.path.isdir(os.path.join(NODE_MODULES, "@opentelemetry", "sdk-trace-node")):
            self.fail("tests/node/node_modules is missing: run scripts/install-deps.sh")
        sdk_spans = self.temp_file(".sdk.jsonl")
        wire = {name: self.temp_file(f".{name}.wire.jsonl") for name in ("gateway", "billing", "ledger")}
        ledger, ledger_port = self.start_node("ledger", sdk_file=sdk_spans, wire_file=wire["ledger"])
        billing, billing_port = self.start_node("billing", downstream=ledger_port, sdk_file=sdk_spans,
                                                wire_file=wire["billing"])
        gateway, gateway_port = self.start_node("gateway", downstream=billing_port, sdk_file=sdk_spans,
                                                wire_file=wire["gateway"])
        # This test process is traced too: its client spans are the callers of the gateway.
        tracer = Tracer(self, "capture", "--pid", str(gateway.pid), "--pid", str(billing.pid),
                        "--pid", str(ledger.pid), "--pid", str(os.getpid()))
        ids = [f"sdk{n}" for n in range(10)]
        for rid in ids:
            self.assertEqual(get(gateway_port, f"/call/{rid}"), 200)
        # Then concurrent requests: the gateway's event loop serves several at once, so
        # its server span can only adopt the SDK's trace when the link is certain.
        concurrent, failures = drive_concurrently(gateway_port, "sdkc", clients=5, seconds=2.0)
        self.assertEqual(failures, [])
        records, log = tracer.stop()
        self.assertEqual(tracer.exit_code, 0, log)

        sdk = collections.defaultdict(list)
        with open(sdk_spans) as f:
            for line in f:
                span = json.loads(line)
                path = span["attributes"].get("url.path") or span["attributes"].get("url.full", "")
                sdk[path.rsplit("/", 1)[-1]].append(span)
        received = {}
        for name, path in wire.items():
            with open(path) as f:
                for line in f:
                    entry = json.loads(line)
                    received[(name, entry["path"].rsplit("/", 1)[-1])] = entry["traceparent"]

        callers = {request_id(s): s for s in records if s["attributes"]["process.pid"] == os.getpid()}
        spans = by_request(s for s in records if s["attributes"]["process.pid"] != os.getpid())
        for rid in ids:
            caller = callers[rid]
            gateway_span, gateway_call, billing_span, billing_call, ledger_span = self.assert_chain(
                spans[rid], rid, gateway_parent=caller["span_id"])
            sdk_server = [s for s in sdk[rid] if s["kind"] == 1 and s["parent_span_id"] == ""]
            self.assertEqual(len(sdk_server), 1, sdk[rid])
            sdk_trace = sdk_server[0]["trace_id"]
            self.assertEqual({s["trace_id"] for s in sdk[rid]}, {sdk_trace})
            # The agent's trace id is the SDK's, for every span of the request.
            self.assertEqual(gateway_span["trace_id"], sdk_trace, rid)
            self.assertIs(gateway_span["attributes"].get("flowtracer.trace.adopted"), True, rid)
            # So does the caller's span, linked to the gateway's on this host.
            self.assertEqual(caller["kind"], "CLIENT")
            self.assertEqual(caller["trace_id"], sdk_trace, rid)
            self.assertEqual(caller["parent_span_id"], "")
            self.assertIs(caller["attributes"].get("flowtracer.trace.adopted"), True, rid)
            # Each server span's parent is the span id its caller sent on the wire.
            self.assertEqual(received[("gateway", rid)], "")
            for server, caller in ((billing_span, "billing"), (ledger_span, "ledger")):
                traceparent = received[(caller, rid)]
                self.assertRegex(traceparent, f"^00-{sdk_trace}-[0-9a-f]{{16}}-0[01]$")
                self.assertEqual(server["parent_span_id"], traceparent.split("-")[2], rid)
                self.assertEqual(server["attributes"]["flowtracer.parent.source"], "traceparent")
            # The client spans carry the SDK's client span ids.
            sdk_clients = {s["span_id"] for s in sdk[rid] if s["kind"] == 2}
            self.assertEqual({gateway_call["span_id"], billing_call["span_id"]}, sdk_clients, rid)
        adopted = 0
        for rid in concurrent:
            self.assertEqual(len(spans[rid]), 5, spans[rid])
            sdk_trace = {s["trace_id"] for s in sdk[rid]}
            self.assertEqual(len(sdk_trace), 1, sdk[rid])
            sdk_trace = sdk_trace.pop()
            gateway_span = one(spans[rid], "gateway", "SERVER")
            gateway_call = one(spans[rid], "gateway", "CLIENT")
            # Spans the SDK's headers decide always carry its ids.
            for span in spans[rid]:
                if span is not gateway_span:
                    self.assertEqual(span["trace_id"], sdk_trace, span)
            for server, caller in ((one(spans[rid], "billing", "SERVER"), "billing"),
                                   (one(spans[rid], "ledger", "SERVER"), "ledger")):
                self.assertEqual(server["parent_span_id"], received[(caller, rid)].split("-")[2], rid)
            self.assertEqual({gateway_call["span_id"], one(spans[rid], "billing", "CLIENT")["span_id"]},
                             {s["span_id"] for s in sdk[rid] if s["kind"] == 2})
            # The gateway's server span: the SDK's trace when linked, else its own trace and
            # the call says why it has no parent. Never another request's trace.
            self.assertEqual(callers[rid]["trace_id"], gateway_span["trace_id"], rid)
            if gateway_call["parent_span_id"]:
                self.assertEqual(gateway_call["parent_span_id"], gateway_span["span_id"], rid)
                self.assertEqual(gateway_span["trace_id"], sdk_trace, rid)
                self.assertIs(gateway_span["attributes"].get("flowtracer.trace.adopted"), True)
                adopted += 1
            else:
                self.assertNotEqual(gateway_span["trace_id"], sdk_trace, rid)
                self.assertIn(gateway_call["attributes"].get("flowtracer.parent.unresolved"),
                              ("ambiguous", "event_loop_concurrent"), gateway_call)
        print(f"\nnode SDK chain: {len(ids)} sequential requests, agent trace ids equal the SDK's; "
              f"{len(concurrent)} concurrent, {adopted} gateway spans adopted the SDK's trace, "
              f"the rest unlinked (ambiguous); no wrong id", file=sys.stderr)

    def check_event_loop(self, label, front, front_port, backend):
        """Drives `front` (an event loop calling `backend` for every /call/<id>) with 20
        concurrent clients, then 2 clients with pauses, then one request at a time, and
        checks that every link made is right and that lone requests are always linked."""
        tracer = Tracer(self, "capture", "--pid", str(front.pid), "--pid", str(backend.pid))
        answered, failures = drive_concurrently(front_port, "e", clients=20, seconds=3.0)
        # Two clients with pauses: requests sometimes overlap, sometimes not.
        sparse, sparse_failures = drive_concurrently(front_port, "m", clients=2, seconds=2.0, max_pause_s=0.03)
        answered += sparse
        failures += sparse_failures
        sequential = [f"seq{n}" for n in range(10)]
        for rid in sequential:
            self.assertEqual(get(front_port, f"/call/{rid}"), 200)
        records, log = tracer.stop()
        self.assertEqual(tracer.exit_code, 0, log)
        self.assertEqual(failures, [])
        self.assertGreater(len(answered), 20)

        by_span_id = {s["span_id"]: s for s in records}
        spans = by_request(records)
        links = collections.Counter()
        for span in records:
            parent_id = span["parent_span_id"]
            if not parent_id:
                continue
            self.assertIn(parent_id, by_span_id, span)
            parent = by_span_id[parent_id]
            # Every link made is right: the parent belongs to the same request.
            self.assertEqual(request_id(parent), request_id(span), (span, parent))
            self.assertEqual(parent["trace_id"], span["trace_id"])
            links[span["attributes"]["flowtracer.parent.source"]] += 1
        unresolved = collections.Counter(
            s["attributes"].get("flowtracer.parent.unresolved") for s in records
            if s["service"] == "front" and s["kind"] == "CLIENT" and not s["parent_span_id"])
        for rid in answered:
            calls = [s for s in spans[rid] if s["service"] == "front" and s["kind"] == "CLIENT"]
            self.assertEqual(len(calls), 1, rid)
            # Unlinked calls say why.
            if not calls[0]["parent_span_id"]:
                self.assertIn(calls[0]["attributes"].get("flowtracer.parent.unresolved"),
                              ("ambiguous", "event_loop_concurrent"), calls[0])
            # Same-host pairing does not depend on the event loop.
            server = one(spans[rid], "backend", "SERVER")
            self.assertEqual(server["parent_span_id"], calls[0]["span_id"])
        # One request at a time: every call is linked, whole traces.
        for rid in sequential:
            self.assertEqual(len(spans[rid]), 3, spans[rid])
            front_span = one(spans[rid], "front", "SERVER")
            call = one(spans[rid], "front", "CLIENT")
            server = one(spans[rid], "backend", "SERVER")
            self.assertEqual(call["parent_span_id"], front_span["span_id"], rid)
            self.assertIn(call["attributes"]["flowtracer.parent.source"], ("event_loop", "thread"))
            self.assertEqual(server["parent_span_id"], call["span_id"], rid)
            self.assertEqual({s["trace_id"] for s in spans[rid]}, {front_span["trace_id"]})
        print(f"\n{label}: {len(answered)} concurrent + {len(sequential)} sequential requests; "
              f"links {dict(links)}; unlinked calls {dict(unresolved)}", file=sys.stderr)

    def test_node_event_loop_links_only_when_certain(self):
        backend, backend_port = self.start_node("backend", delay_ms=10)
        front, front_port = self.start_node("front", downstream=backend_port, delay_ms=20)
        self.check_event_loop("node event loop", front, front_port, backend)

    def test_asyncio_event_loop_links_only_when_certain(self):
        backend, backend_port = self.start_python("backend")
        port = area_port()
        front = Process([sys.executable, os.path.join(HERE, "asyncio_service.py"), str(port),
                         "--downstream", f"http://127.0.0.1:{backend_port}/call", "--delay-ms", "20"],
                        env=dict(os.environ, OTEL_SERVICE_NAME="front"), ready_line="ready")
        self.addCleanup(front.stop)
        wait_for_port(port)
        self.check_event_loop("python asyncio event loop", front, port, backend)

    def test_malformed_traceparents_are_ignored(self):
        server, port = self.start_python("billing")
        tracer = Tracer(self, "capture", "--port", str(port))
        malformed = {
            "upper": f"00-{TRACE.upper()}-{PARENT}-01",
            "zero-trace": f"00-{'0' * 32}-{PARENT}-01",
            "zero-parent": f"00-{TRACE}-{'0' * 16}-01",
            "version-ff": f"ff-{TRACE}-{PARENT}-01",
            "v00-too-long": f"00-{TRACE}-{PARENT}-01-extra",
            "short": f"00-{TRACE[1:]}-{PARENT}-01",
            "garbage": "not a traceparent at all",
            "empty": "",
            "non-ascii": "00-\xe9\xe9" + TRACE[2:] + f"-{PARENT}-01",
        }
        for name, value in malformed.items():
            self.assertEqual(get(port, f"/bad/{name}", {"traceparent": value, "tracestate": "k=v"}), 200)
        # Two traceparent fields, each valid: not one valid value.
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        conn.putrequest("GET", "/bad/twice")
        conn.putheader("traceparent", f"00-{TRACE}-{PARENT}-01")
        conn.putheader("traceparent", f"00-{TRACE}-{PARENT}-01")
        conn.endheaders()
        self.assertEqual(conn.getresponse().status, 200)
        conn.close()
        # Valid ones: a later version with more fields, and one at the end of a 16 KiB head
        # sent in several writes.
        self.assertEqual(get(port, "/good/future", {"traceparent": f"01-{TRACE}-{PARENT}-01-more",
                                                     "tracestate": "congo=t61rcWkgMzE, rojo=00f067aa0ba902b7"}), 200)
        filler = "".join(f"X-Filler-{i}: {'f' * 250}\r\n" for i in range(60))
        head = (f"GET /good/big-head HTTP/1.1\r\nHost: billing\r\n{filler}"
                f"traceparent: 00-{TRACE}-{PARENT}-01\r\nConnection: close\r\n\r\n").encode()
        self.assertGreater(len(head), 15000)
        self.assertLessEqual(len(head), 16384)
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            for start in range(0, len(head), 4000):
                s.sendall(head[start:start + 4000])
                time.sleep(0.02)
            reply = b""
            while b"\r\n\r\n" not in reply:
                chunk = s.recv(4096)
                if not chunk:
                    break
                reply += chunk
            self.assertTrue(reply.startswith(b"HTTP/1.1 200"), reply[:100])
        records, log = tracer.stop()
        self.assertEqual(tracer.exit_code, 0, log)

        servers = {s["attributes"]["url.path"]: s for s in records if s["kind"] == "SERVER"}
        for name in list(malformed) + ["twice"]:
            span = servers.get(f"/bad/{name}")
            self.assertIsNotNone(span, f"{name}: {log}")
            self.assertNotEqual(span["trace_id"], TRACE, name)
            self.assertNotEqual(span["attributes"].get("flowtracer.parent.source"), "traceparent", name)
            self.assertEqual(span["trace_state"], "", name)
            self.assertEqual(span["attributes"]["http.response.status_code"], 200)
            # The test's own client span is on the other end: a same-host link, not the header.
            self.assertEqual(span["attributes"].get("flowtracer.parent.source"), "same_host", name)
        clients = [s for s in records if s["kind"] == "CLIENT" and s["attributes"]["url.path"].startswith("/bad/")]
        self.assertEqual(len(clients), len(malformed) + 1)
        for span in clients:
            self.assertNotEqual(span["span_id"], PARENT)
            self.assertNotEqual(span["trace_id"], TRACE)
        future = servers["/good/future"]
        self.assertEqual(future["trace_id"], TRACE)
        self.assertEqual(future["parent_span_id"], PARENT)
        self.assertEqual(future["trace_state"], "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7")
        big = servers["/good/big-head"]
        self.assertEqual(big["trace_id"], TRACE)
        self.assertEqual(big["parent_span_id"], PARENT)


if __name__ == "__main__":
    unittest.main()
