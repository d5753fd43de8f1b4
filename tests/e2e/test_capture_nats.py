"""NATS producer and consumer spans, end to end: a real nats-server (apt), an HTTP service
that publishes, subscribers that call an HTTP service, and `flowtracer capture`. One
request must give one trace: SERVER -> PRODUCER -> CONSUMER -> CLIENT -> SERVER.
Ports come from the 22000-22999 block."""
import os
import select
import sys
import time

from harness import HERE, E2ETest, Process, Tracer, curl, start_test_server, wait_for_port
from test_otlp_agent import Agent, Receiver, attributes

SERVICES = os.path.join(HERE, "nats_services.py")


def wait_for_line(process, text, timeout_s=15):
    """Reads the process's stdout until a line contains `text`; returns that line. Reads
    the pipe itself (select then os.read), keeping what follows the line for the next call:
    a buffered reader could hold lines select() cannot see."""
    fd = process.proc.stdout.fileno()
    pending = getattr(process, "pending_output", b"")
    deadline = time.monotonic() + timeout_s
    while True:
        while b"\n" in pending:
            line, pending = pending.split(b"\n", 1)
            if text.encode() in line:
                process.pending_output = pending
                return line.decode()
        remaining = deadline - time.monotonic()
        if remaining <= 0 or not select.select([fd], [], [], remaining)[0]:
            break
        data = os.read(fd, 65536)
        if not data:
            break
        pending += data
    process.pending_output = pending
    raise AssertionError(f"no '{text}' from pid {process.pid} within {timeout_s}s")


class AgentTracer:
    """`flowtracer agent` exporting OTLP to the Node receiver (independent decoder), with
    the Tracer's stop(): the spans received, in the capture JSON's shape, and the log."""

    def __init__(self, test, *args):
        self.receiver = Receiver(test)
        self.agent = Agent(test, "--endpoint", f"http://127.0.0.1:{self.receiver.http_port}", *args)

    def stop(self, settle_s=0.5):
        status, log, counters = self.agent.stop(settle_s=settle_s)
        records = []
        for resource, _, span in self.receiver.spans():
            records.append({
                "kind": span["kind"].replace("SPAN_KIND_", ""), "service": resource["service.name"],
                "name": span["name"], "trace_id": span["traceId"], "span_id": span["spanId"],
                "parent_span_id": span.get("parentSpanId", ""), "attributes": attributes(span["attributes"]),
                "start_time_unix_nano": int(span["startTimeUnixNano"]),
                "end_time_unix_nano": int(span["endTimeUnixNano"])})
        return records, log


class CaptureNatsTest(E2ETest):
    def start_nats(self, port):
        server = Process(["nats-server", "-p", str(port), "-a", "127.0.0.1"])
        self.addCleanup(server.stop)
        wait_for_port(port)
        return server

    def start_service(self, name, *args):
        env = dict(os.environ, OTEL_SERVICE_NAME=name, PYTHONUNBUFFERED="1")
        service = Process([sys.executable, SERVICES, *args], env=env, ready_line="ready", cwd=HERE)
        self.addCleanup(service.stop)
        return service

    def run_checkout(self, base_port, propagate, tracer_first, subscribers=("notify",), agent=False):
        """Starts nats-server, mail, subscribers and checkout; POSTs one order; returns
        (records, log, subscriber processes, body)."""
        nats_port, checkout_port, mail_port = base_port, base_port + 1, base_port + 2
        subject = f"orders.created.{base_port}"
        self.start_nats(nats_port)
        tracer = None
        if agent:
            tracer = AgentTracer(self, "--port", str(nats_port), "--port", str(checkout_port),
                                 "--port", str(mail_port))
        elif tracer_first:
            tracer = Tracer(self, "capture", "--port", str(nats_port), "--port", str(checkout_port),
                            "--port", str(mail_port))
        start_test_server(self, mail_port, name="mail")
        subs = []
        for index, name in enumerate(subscribers):
            call = ["--call", f"http://127.0.0.1:{mail_port}/send"] if index == 0 else []
            subs.append(self.start_service(name, "subscriber", "--nats", str(nats_port), "--subject", subject, *call))
        publisher_args = ["publisher", str(checkout_port), "--nats", str(nats_port), "--subject", subject]
        self.start_service("checkout", *publisher_args, *(["--propagate"] if propagate else []))
        wait_for_port(checkout_port)
        if not tracer:
            # The NATS connections are older than the agent: detected mid-stream.
            tracer = Tracer(self, "capture", "--port", str(nats_port), "--port", str(checkout_port),
                            "--port", str(mail_port))
        body = '{"order": "%s"}' % os.urandom(8).hex()
        headers = []
        if propagate:
            self.trace_id = os.urandom(16).hex()
            self.upstream_span_id = os.urandom(8).hex()
            headers = ["-H", f"traceparent: 00-{self.trace_id}-{self.upstream_span_id}-01"]
        curl("-X", "POST", *headers, "--data-binary", body, f"http://127.0.0.1:{checkout_port}/checkout")
        handled = [wait_for_line(sub, "handled") for sub in subs]
        records, log = tracer.stop()
        return records, log, handled, body, subject

    def chain(self, records, log, subject, body):
        by_kind = {}
        for span in records:
            by_kind.setdefault(span["kind"], []).append(span)
        producers = [s for s in by_kind.get("PRODUCER", []) if s["attributes"]["messaging.destination.name"] == subject]
        self.assertEqual(len(producers), 1, log)
        producer = producers[0]
        servers = [s for s in by_kind.get("SERVER", []) if s["service"] == "checkout"]
        self.assertEqual(len(servers), 1, log)
        server = servers[0]
        self.assertEqual(server["attributes"]["url.path"], "/checkout")
        self.assertEqual(producer["service"], "checkout")
        self.assertEqual(producer["name"], f"publish {subject}")
        self.assertEqual(producer["parent_span_id"], server["span_id"])
        self.assertEqual(producer["trace_id"], server["trace_id"])
        attributes = producer["attributes"]
        self.assertEqual(attributes["messaging.system"], "nats")
        self.assertEqual(attributes["messaging.operation.type"], "publish")
        self.assertEqual(attributes["messaging.message.body.size"], len(body))
        self.assertGreater(producer["end_time_unix_nano"], server["start_time_unix_nano"] - 1)
        consumers = [s for s in by_kind.get("CONSUMER", []) if s["attributes"]["messaging.destination.name"] == subject]
        return server, producer, consumers, by_kind

    def assert_consumer_chain(self, consumer, producer, by_kind, log):
        self.assertEqual(consumer["service"], "notify")
        self.assertEqual(consumer["parent_span_id"], producer["span_id"], log)
        self.assertEqual(consumer["trace_id"], producer["trace_id"])
        self.assertEqual(consumer["attributes"]["messaging.operation.type"], "process")
        self.assertGreaterEqual(consumer["start_time_unix_nano"], producer["start_time_unix_nano"])
        clients = [s for s in by_kind.get("CLIENT", []) if s["service"] == "notify"]
        self.assertEqual(len(clients), 1, log)
        client = clients[0]
        self.assertEqual(client["attributes"]["url.path"], "/send")
        self.assertEqual(client["parent_span_id"], consumer["span_id"], log)
        self.assertEqual(client["trace_id"], consumer["trace_id"])
        # The consumer span covers the processing, the HTTP call included.
        self.assertGreaterEqual(consumer["end_time_unix_nano"], client["end_time_unix_nano"])
        mail = [s for s in by_kind.get("SERVER", []) if s["service"] == "mail"]
        self.assertEqual(len(mail), 1, log)
        self.assertEqual(mail[0]["parent_span_id"], client["span_id"])
        self.assertEqual(mail[0]["trace_id"], consumer["trace_id"])
        # One trace: nothing else of the flow fell out of it.
        trace = [s for s in by_kind.get("SERVER", []) + by_kind.get("PRODUCER", []) + by_kind.get("CONSUMER", [])
                 + clients if s["trace_id"] == consumer["trace_id"] and s["service"] in ("checkout", "notify", "mail")]
        self.assertEqual(sorted(s["kind"] for s in trace), ["CLIENT", "CONSUMER", "PRODUCER", "SERVER", "SERVER"])

    def test_traceparent_in_message_headers(self):
        records, log, handled, body, subject = self.run_checkout(22100, propagate=True, tracer_first=True)
        server, producer, consumers, by_kind = self.chain(records, log, subject, body)
        self.assertEqual(server["trace_id"], self.trace_id)
        self.assertEqual(server["parent_span_id"], self.upstream_span_id)
        # The producer span is the one the publisher put in the header the subscriber got.
        header = handled[0].split()[-1]
        self.assertEqual(header, f"00-{self.trace_id}-{producer['span_id']}-01")
        self.assertEqual(producer["attributes"]["messaging.operation.name"], "HPUB")
        self.assertEqual(len(consumers), 1, log)
        self.assertEqual(consumers[0]["attributes"]["flowtracer.parent.source"], "traceparent")
        self.assert_consumer_chain(consumers[0], producer, by_kind, log)
        # The caller -> callee table has the publisher -> subscriber edge, named by subject.
        self.assertRegex(log, r"\ncheckout +notify via orders\.cre\S* +1 +0 ")

    def test_plain_pub_linked_on_this_host(self):
        # The tracer starts after the clients connected: NATS is found mid-connection.
        records, log, handled, body, subject = self.run_checkout(22110, propagate=False, tracer_first=False)
        server, producer, consumers, by_kind = self.chain(records, log, subject, body)
        self.assertEqual(handled[0].split()[-1], "-")  # no headers at all
        self.assertEqual(producer["attributes"]["messaging.operation.name"], "PUB")
        self.assertEqual(len(consumers), 1, log)
        self.assertEqual(consumers[0]["attributes"]["flowtracer.parent.source"], "payload_match")
        self.assert_consumer_chain(consumers[0], producer, by_kind, log)

    def test_agent_exports_the_same_trace_over_otlp(self):
        # `flowtracer agent` runs the same pipeline as capture: NATS spans reach OTLP linked.
        records, log, handled, body, subject = self.run_checkout(22140, propagate=False, tracer_first=True,
                                                                 agent=True)
        server, producer, consumers, by_kind = self.chain(records, log, subject, body)
        self.assertEqual(len(consumers), 1, log)
        self.assertEqual(consumers[0]["attributes"]["flowtracer.parent.source"], "payload_match")
        self.assert_consumer_chain(consumers[0], producer, by_kind, log)

    def test_fan_out_two_subscribers(self):
        records, log, handled, body, subject = self.run_checkout(22120, propagate=False, tracer_first=True,
                                                                 subscribers=("notify", "audit"))
        server, producer, consumers, by_kind = self.chain(records, log, subject, body)
        self.assertEqual(sorted(c["service"] for c in consumers), ["audit", "notify"], log)
        for consumer in consumers:
            self.assertEqual(consumer["parent_span_id"], producer["span_id"])
            self.assertEqual(consumer["trace_id"], server["trace_id"])
            self.assertEqual(consumer["attributes"]["flowtracer.parent.source"], "payload_match")
        self.assert_consumer_chain([c for c in consumers if c["service"] == "notify"][0], producer, by_kind, log)

    def test_burst_every_delivery_linked(self):
        """2000 publishes back to back: many messages per read on the subscriber's side,
        every consumer span still linked to its own producer span. The subscriber reads at
        most 16 KiB per call, what the kernel copies of one call (--max-payload-bytes)."""
        count, nats_port = 2000, 22130
        subject = "load.events"
        self.start_nats(nats_port)
        tracer = Tracer(self, "capture", "--port", str(nats_port))
        subscriber = self.start_service("sink", "subscriber", "--nats", str(nats_port), "--subject", subject,
                                        "--read-bytes", "16384")
        burst = Process([sys.executable, SERVICES, "burst", "--nats", str(nats_port), "--subject", subject,
                         "--count", str(count)], env=dict(os.environ, OTEL_SERVICE_NAME="source"), cwd=HERE,
                        ready_line="published", timeout_s=60)
        self.addCleanup(burst.stop)
        for _ in range(count):
            wait_for_line(subscriber, "handled", timeout_s=30)
        records, log = tracer.stop(settle_s=1.0)
        producers = {s["span_id"]: s for s in records if s["kind"] == "PRODUCER" and s["service"] == "source"}
        consumers = [s for s in records if s["kind"] == "CONSUMER" and s["service"] == "sink"]
        self.assertEqual(len(producers), count, log)
        self.assertEqual(len(consumers), count, log)
        parents = [c["parent_span_id"] for c in consumers]
        self.assertEqual(set(parents), set(producers), log)  # each producer exactly once
        for consumer in consumers:
            producer = producers[consumer["parent_span_id"]]
            self.assertEqual(consumer["trace_id"], producer["trace_id"])
            self.assertEqual(consumer["attributes"]["messaging.message.body.size"],
                             producer["attributes"]["messaging.message.body.size"])
            self.assertEqual(consumer["attributes"]["flowtracer.parent.source"], "payload_match")
        self.assertNotIn("NATS", log.split("losses and oddities")[-1] if "losses" in log else "", log)

    def test_reads_larger_than_the_copy_limit_lose_messages_visibly(self):
        """A subscriber reading 64 KiB at a time under a burst: messages past the first
        16 KiB of a read are not copied by the kernel. They are lost, and said to be."""
        count, nats_port = 2000, 22140
        subject = "load.big.reads"
        self.start_nats(nats_port)
        tracer = Tracer(self, "capture", "--port", str(nats_port))
        subscriber = self.start_service("sink", "subscriber", "--nats", str(nats_port), "--subject", subject)
        burst = Process([sys.executable, SERVICES, "burst", "--nats", str(nats_port), "--subject", subject,
                         "--count", str(count)], env=dict(os.environ, OTEL_SERVICE_NAME="source"), cwd=HERE,
                        ready_line="published", timeout_s=60)
        self.addCleanup(burst.stop)
        for _ in range(count):
            wait_for_line(subscriber, "handled", timeout_s=30)
        records, log = tracer.stop(settle_s=1.0)
        consumers = [s for s in records if s["kind"] == "CONSUMER" and s["service"] == "sink"]
        if len(consumers) < count:
            self.assertRegex(log, r"NATS bytes not captured \(messages in them lost\) +[1-9]")
        print(f"\n64 KiB reads: {len(consumers)} of {count} deliveries seen", file=sys.stderr)

    def test_request_reply(self):
        """checkout asks pricing over NATS and waits for the answer: the request, its
        processing, the reply and its receipt are one trace under the HTTP request."""
        nats_port, checkout_port = 22150, 22151
        subject = "price.get"
        self.start_nats(nats_port)
        tracer = Tracer(self, "capture", "--port", str(nats_port), "--port", str(checkout_port))
        responder = self.start_service("pricing", "responder", "--nats", str(nats_port), "--subject", subject)
        self.start_service("checkout", "publisher", str(checkout_port), "--nats", str(nats_port),
                           "--subject", subject, "--request")
        wait_for_port(checkout_port)
        curl("-X", "POST", "--data-binary", "sku-42", f"http://127.0.0.1:{checkout_port}/checkout")
        wait_for_line(responder, "handled")
        records, log = tracer.stop()
        server = [s for s in records if s["kind"] == "SERVER" and s["service"] == "checkout"]
        self.assertEqual(len(server), 1, log)
        trace = [s for s in records if s["trace_id"] == server[0]["trace_id"] and s["kind"] in ("PRODUCER", "CONSUMER")]
        by_name = {(s["service"], s["kind"], s["name"]): s for s in trace}
        request = by_name[("checkout", "PRODUCER", "publish price.get")]
        served = by_name[("pricing", "CONSUMER", "process price.get")]
        reply = by_name[("pricing", "PRODUCER", "publish _INBOX")]
        answer = by_name[("checkout", "CONSUMER", "process _INBOX")]
        self.assertEqual(len(trace), 4, log)
        self.assertEqual(request["parent_span_id"], server[0]["span_id"])
        self.assertTrue(request["attributes"]["messaging.nats.reply_to"].startswith("_INBOX."))
        self.assertEqual(served["parent_span_id"], request["span_id"])
        self.assertEqual(reply["parent_span_id"], served["span_id"])  # sent while processing
        self.assertEqual(reply["attributes"]["messaging.destination.name"], request["attributes"]["messaging.nats.reply_to"])
        self.assertEqual(answer["parent_span_id"], reply["span_id"])
        self.assertEqual(answer["attributes"]["messaging.message.body.size"], len("price for sku-42"))
