"""Small HTTP/1.1 services for the end-to-end tests, on loopback only.

usage: servers.py PORT [--name NAME] [--downstream URL ...] [--ipv6]

Routes:
  /status/<code>        answers <code> with a short body
  /delay/<ms>           sleeps, then 200
  /chunked              a chunked response of three chunks
  /echo                 (POST) answers with the request body's length
  /big/<bytes>          a body of that many bytes
  /call[/<suffix>]      calls every --downstream URL (with /<suffix> appended) in turn,
                        then 200 (a service chain that passes a request id along)
  anything else         200 with a short body
"""
import argparse
import http.client
import socket
import sys
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    downstream = []

    def log_message(self, *args):
        pass

    def _send(self, code, body=b"ok\n", headers=None):
        self.send_response(code)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def do_HEAD(self):
        self.do_GET()

    def do_POST(self):
        length = int(self.headers.get("Content-Length", 0))
        body = self.rfile.read(length)
        self._send(200, b"%d\n" % len(body))

    def do_GET(self):
        path = urllib.parse.urlsplit(self.path).path
        parts = path.strip("/").split("/")
        if parts[0] == "status" and len(parts) > 1:
            self._send(int(parts[1]), b"status %s\n" % parts[1].encode())
        elif parts[0] == "delay" and len(parts) > 1:
            time.sleep(int(parts[1]) / 1000.0)
            self._send(200, b"delayed\n")
        elif parts[0] == "big" and len(parts) > 1:
            self._send(200, b"x" * int(parts[1]))
        elif parts[0] == "chunked":
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for chunk in (b"first,", b"second,", b"third\n"):
                self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            self.wfile.write(b"0\r\n\r\n")
        elif parts[0] == "call":
            suffix = "".join("/" + p for p in parts[1:])
            for url in self.downstream:
                target = urllib.parse.urlsplit(url)
                conn = http.client.HTTPConnection(target.hostname, target.port, timeout=10)
                conn.request("GET", (target.path or "") + suffix or "/")
                conn.getresponse().read()
                conn.close()
            self._send(200, b"called\n")
        else:
            self._send(200)


class Server(ThreadingHTTPServer):
    daemon_threads = True


class Server6(Server):
    address_family = socket.AF_INET6


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("port", type=int)
    parser.add_argument("--downstream", action="append", default=[])
    parser.add_argument("--ipv6", action="store_true")
    parser.add_argument("--name", default="")  # shows in ps; the service name comes from OTEL_SERVICE_NAME
    args = parser.parse_args()
    Handler.downstream = args.downstream
    server = (Server6 if args.ipv6 else Server)(("::1" if args.ipv6 else "127.0.0.1", args.port), Handler)
    print("ready", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    sys.exit(main())
