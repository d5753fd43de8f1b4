"""Two-tier HTTP/1.1 services for the metrics end-to-end tests, on loopback only.

usage: metrics_services.py PORT [--downstream http://127.0.0.1:PORT]

Routes:
  /status/<code>/<id>     answers <code>
  /forward/<code>/<id>    asks the downstream for /status/<code>/<id> on a new connection,
                          then answers with the downstream's status
  anything else           200
"""
import argparse
import http.client
import sys
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    downstream = None
    # Head and body go out in two writes: without this, Nagle and delayed ACKs add 40 ms
    # to every keep-alive request.
    disable_nagle_algorithm = True

    def log_message(self, *args):
        pass

    def _send(self, code):
        body = b"status %d\n" % code
        self.send_response(code)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        parts = urllib.parse.urlsplit(self.path).path.strip("/").split("/")
        if parts[0] == "status" and len(parts) > 1:
            self._send(int(parts[1]))
        elif parts[0] == "forward" and len(parts) > 2 and self.downstream:
            conn = http.client.HTTPConnection(self.downstream.hostname, self.downstream.port, timeout=10)
            conn.request("GET", "/status/%s/%s" % (parts[1], parts[2]))
            response = conn.getresponse()
            response.read()
            conn.close()
            self._send(response.status)
        else:
            self._send(200)


class Server(ThreadingHTTPServer):
    daemon_threads = True


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("port", type=int)
    parser.add_argument("--downstream")
    args = parser.parse_args()
    if args.downstream:
        Handler.downstream = urllib.parse.urlsplit(args.downstream)
    server = Server(("127.0.0.1", args.port), Handler)
    print("ready", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    sys.exit(main())
