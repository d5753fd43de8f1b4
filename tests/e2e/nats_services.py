"""Services that talk NATS for the end-to-end tests (minimal client: nats_client.py).

usage:
  nats_services.py publisher HTTP_PORT --nats PORT --subject S [--propagate]
      An HTTP service: each POST /checkout publishes its body on S from the handling
      thread. With --propagate it behaves like an OpenTelemetry SDK: it continues the
      request's traceparent (or starts a trace) in an HPUB header; without it, plain PUB.
  nats_services.py subscriber --nats PORT --subject S [--call URL] [--read-bytes N]
      Subscribes to S; for each message, on the thread that read it, GETs URL.
  nats_services.py publisher HTTP_PORT --nats PORT --subject S --request
      As above, but each POST /checkout is a request: it waits for the reply on its inbox
      (on the handling thread) and answers the HTTP request with it.
  nats_services.py responder --nats PORT --subject S
      Answers each message on S to its reply subject, from the thread that read it.
  nats_services.py burst --nats PORT --subject S --count N
      Publishes N distinct messages back to back, waits for the server to have them, exits.
Both print "ready" once connected."""
import argparse
import http.client
import os
import sys
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from nats_client import NatsClient


def new_traceparent(incoming):
    span_id = os.urandom(8).hex()
    parts = (incoming or "").split("-")
    if len(parts) == 4 and len(parts[1]) == 32:
        return f"00-{parts[1]}-{span_id}-01"
    return f"00-{os.urandom(16).hex()}-{span_id}-01"


def run_publisher(args):
    nats = NatsClient(args.nats, name="publisher")
    lock = threading.Lock()
    inbox = f"_INBOX.{os.urandom(6).hex()}"
    if args.request:
        nats.subscribe(inbox + ".*")
        nats.flush()
    requests_sent = [0]

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *_):
            pass

        def do_POST(self):
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            headers = None
            if args.propagate:
                headers = {"traceparent": new_traceparent(self.headers.get("traceparent"))}
            with lock:
                if args.request:
                    requests_sent[0] += 1
                    nats.publish(args.subject, body, headers=headers, reply=f"{inbox}.{requests_sent[0]}")
                    reply = nats.next_message()[3] + b"\n"
                else:
                    nats.publish(args.subject, body, headers=headers)
                    reply = b"published\n"
            self.send_response(202)
            self.send_header("Content-Length", str(len(reply)))
            self.end_headers()
            self.wfile.write(reply)

    class Server(ThreadingHTTPServer):
        daemon_threads = True

    server = Server(("127.0.0.1", args.port), Handler)
    print("ready", flush=True)
    server.serve_forever()


def run_subscriber(args):
    nats = NatsClient(args.nats, name="subscriber", read_bytes=args.read_bytes)
    nats.subscribe(args.subject)
    nats.flush()
    print("ready", flush=True)
    while True:
        try:
            subject, _, headers, payload = nats.next_message(timeout_s=3600)
        except Exception as error:  # the server went away: the test is over
            print(f"stopped: {error}", flush=True)
            return
        if args.call:
            target = urllib.parse.urlsplit(args.call)
            conn = http.client.HTTPConnection(target.hostname, target.port, timeout=10)
            conn.request("GET", target.path or "/")
            conn.getresponse().read()
            conn.close()
        print(f"handled {subject} {len(payload)} {headers.get('traceparent', '-')}", flush=True)


def run_responder(args):
    nats = NatsClient(args.nats, name="responder")
    nats.subscribe(args.subject)
    nats.flush()
    print("ready", flush=True)
    while True:
        try:
            subject, reply, _, payload = nats.next_message(timeout_s=3600)
        except Exception as error:
            print(f"stopped: {error}", flush=True)
            return
        if reply:
            nats.publish(reply, b"price for " + payload)
        print(f"handled {subject} {reply}", flush=True)


def run_burst(args):
    nats = NatsClient(args.nats, name="burst")
    started = time.monotonic()
    for index in range(args.count):
        nats.publish(args.subject, b'{"n": %d, "pad": "%s"}' % (index, b"x" * (index % 200)))
    nats.flush()
    print(f"published {args.count} in {time.monotonic() - started:.3f}s", flush=True)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("role", choices=["publisher", "subscriber", "responder", "burst"])
    parser.add_argument("port", type=int, nargs="?")
    parser.add_argument("--nats", type=int, required=True)
    parser.add_argument("--subject", required=True)
    parser.add_argument("--propagate", action="store_true")
    parser.add_argument("--request", action="store_true")
    parser.add_argument("--call", default="")
    parser.add_argument("--count", type=int, default=1)
    parser.add_argument("--read-bytes", type=int, default=65536)
    args = parser.parse_args()
    if args.role == "publisher":
        run_publisher(args)
    elif args.role == "responder":
        run_responder(args)
    elif args.role == "burst":
        run_burst(args)
    else:
        run_subscriber(args)


if __name__ == "__main__":
    sys.exit(main())
