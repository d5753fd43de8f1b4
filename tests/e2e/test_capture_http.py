"""HTTP/1.x spans, end to end: `flowtracer capture --format json` while real servers
(python3, nginx) answer real clients (curl, python, raw sockets, wrk) on loopback."""
import http.client
import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
import unittest

from harness import FLOWTRACER, HOOKS, E2ETest, Process, Tracer, curl, free_port, start_test_server, wait_for_port


def spans_of(records, kind, **attributes):
    return [s for s in records if s["kind"] == kind
            and all(s["attributes"].get(k) == v for k, v in attributes.items())]


def lost_events(log):
    """Events the agent reported lost in the kernel (its closing report), 0 if none."""
    for line in log.splitlines():
        if "events lost, ring buffer full" in line:
            return int(line.split()[-1])
    return 0


def duration_ms(span):
    return (span["end_time_unix_nano"] - span["start_time_unix_nano"]) / 1e6


class CaptureHttpTest(E2ETest):
    def test_python_service_statuses(self):
        port = free_port()
        server = start_test_server(self, port, name="billing")
        tracer = Tracer(self, "capture", "--port", str(port))
        for path in ("/ok", "/status/404", "/status/500", "/users/123", "/users/456"):
            curl(f"http://127.0.0.1:{port}{path}")
        records, log = tracer.stop()

        servers = spans_of(records, "SERVER", **{"server.port": port})
        self.assertEqual(sorted(s["attributes"]["url.path"] for s in servers),
                         ["/ok", "/status/404", "/status/500", "/users/123", "/users/456"], log)
        for span in servers:
            self.assertEqual(span["service"], "billing")
            self.assertEqual(span["attributes"]["process.pid"], server.pid)
            self.assertEqual(span["attributes"]["http.request.method"], "GET")
            self.assertEqual(len(span["trace_id"]), 32)
            self.assertEqual(len(span["span_id"]), 16)
        by_path = {s["attributes"]["url.path"]: s for s in servers}
        self.assertEqual(by_path["/status/404"]["attributes"]["http.response.status_code"], 404)
        self.assertEqual(by_path["/status/404"]["status"], "UNSET")  # 4xx is not a server error
        self.assertEqual(by_path["/status/500"]["status"], "ERROR")
        self.assertEqual(by_path["/status/500"]["attributes"]["error.type"], "500")
        self.assertEqual(by_path["/users/123"]["name"], "GET /users/{id}")
        self.assertEqual(by_path["/users/123"]["attributes"]["http.route"], "/users/{id}")

        clients = spans_of(records, "CLIENT", **{"server.port": port})
        self.assertEqual(len(clients), 5)
        client_404 = [c for c in clients if c["attributes"]["http.response.status_code"] == 404][0]
        self.assertEqual(client_404["status"], "ERROR")  # 4xx is an error for the client
        self.assertEqual(client_404["service"], "curl")
        # Same host: each server span's parent is the curl span on the other end.
        client_ids = {c["span_id"]: c for c in clients}
        for span in servers:
            parent = client_ids[span["parent_span_id"]]
            self.assertEqual(parent["trace_id"], span["trace_id"])
            self.assertEqual(parent["attributes"]["url.path"], span["attributes"]["url.path"])

    def test_binary_alone_captures_without_its_modules(self):
        # The exporters' libraries live in modules beside the binary; capture needs none.
        directory = tempfile.mkdtemp(prefix="ft-alone.")
        self.addCleanup(shutil.rmtree, directory, True)
        alone = os.path.join(directory, "flowtracer")
        shutil.copy(FLOWTRACER, alone)
        port = free_port()
        start_test_server(self, port, name="billing")
        tracer = Tracer(self, "capture", "--port", str(port), binary=alone)
        curl(f"http://127.0.0.1:{port}/ok")
        curl(f"http://127.0.0.1:{port}/status/404")
        records, log = tracer.stop()
        servers = spans_of(records, "SERVER", **{"server.port": port})
        self.assertEqual(sorted(s["attributes"]["url.path"] for s in servers), ["/ok", "/status/404"], log)
        # Asking for what a module serves says which file is missing, and where it was looked for.
        result = subprocess.run([alone, "capture", "--duration", "1s", "--prometheus-port", str(free_port())],
                                capture_output=True, text=True, timeout=30)
        self.assertEqual(result.returncode, 1, result.stderr)
        self.assertIn("flowtracer-http.so", result.stderr)
        self.assertIn(directory, result.stderr)
        # `check` says which modules are missing, and that capture works without them.
        result = subprocess.run([alone, "check"], capture_output=True, text=True, timeout=60)
        self.assertEqual(result.returncode, 0, result.stdout + result.stderr)
        for module in ("flowtracer-otlp-http.so", "flowtracer-otlp-grpc.so", "flowtracer-http.so"):
            self.assertRegex(result.stdout, module.replace(".", r"\.") + r"\s+no\s")
        self.assertIn("capture works", result.stdout)
        # A module from another build (say, an older install) is refused, not loaded.
        source = os.path.join(directory, "other.c")
        with open(source, "w") as f:
            f.write('const char* flowtracer_module_build_id(void) { return "0.0.1-other"; }\n'
                    'void flowtracer_create_http_endpoint(void) {}\n')
        subprocess.run(["cc", "-shared", "-fPIC", source, "-o", os.path.join(directory, "flowtracer-http.so")],
                       check=True, timeout=60)
        result = subprocess.run([alone, "check"], capture_output=True, text=True, timeout=60)
        self.assertRegex(result.stdout, r"flowtracer-http\.so\s+no\s.*from another flowtracer build \(0\.0\.1-other")

    def test_ring_buffer_size_is_chosen_and_reported(self):
        port = free_port()
        start_test_server(self, port, name="billing")
        output = tempfile.NamedTemporaryFile(prefix="flowtracer-", suffix=".json", delete=False).name
        self.addCleanup(os.unlink, output)
        proc = subprocess.Popen([FLOWTRACER, "-v", "capture", "--hooks", HOOKS, "--ring-buffer-mb", "1", "--duration", "4s",
                                 "--port", str(port), "--format", "json", "--output", output],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.addCleanup(lambda: proc.poll() is None and proc.kill())
        deadline = time.monotonic() + 30
        stderr = ""
        while "capturing with" not in stderr and time.monotonic() < deadline and proc.poll() is None:
            stderr += proc.stderr.readline()
        curl(f"http://127.0.0.1:{port}/ok")
        _, rest = proc.communicate(timeout=30)
        stderr += rest
        self.assertEqual(proc.returncode, 0, stderr)
        self.assertRegex(stderr, r"ring buffer: at most \d+ KiB of its 1024 KiB")
        with open(output) as f:
            records = [json.loads(line) for line in f if line.strip()]
        self.assertEqual([s["attributes"]["url.path"] for s in spans_of(records, "SERVER", **{"server.port": port})],
                         ["/ok"], stderr)

    def test_untraced_caller_is_one_table_row_over_many_connections(self):
        # Only the server is traced (--pid): this process is a caller the agent never sees
        # as a span. Over more connections (client ports) than the table has edges it is
        # still one row, named by its address, counting every server span.
        port = free_port()
        server = start_test_server(self, port, name="billing")
        tracer = Tracer(self, "capture", "--pid", str(server.pid))
        connections = 10200  # past the table's 10 000 edges
        request = f"GET /ok HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n".encode()
        deadline = time.monotonic() + 150
        for _ in range(connections):
            self.assertLess(time.monotonic(), deadline, "the connections took too long")
            with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
                s.sendall(request)
                while s.recv(4096):
                    pass
        records, log = tracer.stop(settle_s=1.0)
        servers = spans_of(records, "SERVER", **{"server.port": port})
        lost = lost_events(log)
        self.assertGreaterEqual(len(servers) + lost, connections, log)
        rows = [line.split() for line in log.splitlines()
                if line.split()[:2] == ["127.0.0.1", "billing"]]
        self.assertEqual(len(rows), 1, log)
        self.assertEqual(int(rows[0][2]), len(servers), log)  # CALLS
        self.assertNotIn("(other)", log)

    def test_bodies_cookies_chunked_and_delay(self):
        port = free_port()
        start_test_server(self, port, name="ledger")
        tracer = Tracer(self, "capture", "--port", str(port))
        cookie = "session=" + "c" * 8192
        curl("-H", f"Cookie: {cookie}", f"http://127.0.0.1:{port}/cookie")
        curl("-X", "POST", "--data-binary", "x" * 5000, f"http://127.0.0.1:{port}/echo")
        curl(f"http://127.0.0.1:{port}/chunked")
        curl(f"http://127.0.0.1:{port}/big/200000")
        curl(f"http://127.0.0.1:{port}/delay/200")
        curl("-I", f"http://127.0.0.1:{port}/head")
        records, log = tracer.stop()
        servers = {s["attributes"]["url.path"]: s for s in spans_of(records, "SERVER", **{"server.port": port})}
        self.assertEqual(set(servers), {"/cookie", "/echo", "/chunked", "/big/200000", "/delay/200", "/head"}, log)
        self.assertEqual(servers["/echo"]["attributes"]["http.request.method"], "POST")
        self.assertEqual(servers["/echo"]["attributes"]["http.request.body.size"], 5000)
        self.assertEqual(servers["/chunked"]["attributes"]["http.response.body.size"], len("first,second,third\n"))
        self.assertEqual(servers["/big/200000"]["attributes"]["http.response.body.size"], 200000)
        self.assertEqual(servers["/head"]["attributes"]["http.request.method"], "HEAD")
        self.assertEqual(servers["/head"]["attributes"]["http.response.body.size"], 0)
        delayed = duration_ms(servers["/delay/200"])
        self.assertGreaterEqual(delayed, 200)
        self.assertLess(delayed, 400)
        for path, span in servers.items():
            if path != "/delay/200":
                self.assertLess(duration_ms(span), 200, path)

    def test_keep_alive_and_pipelining(self):
        port = free_port()
        start_test_server(self, port, name="gateway")
        tracer = Tracer(self, "capture", "--port", str(port))
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        for i in range(100):
            conn.request("GET", f"/keepalive/{i}")
            conn.getresponse().read()
        conn.close()
        # Three requests in one write: the server answers them in order on one connection.
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            s.sendall(b"".join(b"GET /pipelined/%d HTTP/1.1\r\nHost: x\r\n\r\n" % i for i in range(3)))
            received = b""
            deadline = time.monotonic() + 10
            while received.count(b"HTTP/1.1 200") < 3 and time.monotonic() < deadline:
                received += s.recv(65536)
        records, log = tracer.stop()
        servers = spans_of(records, "SERVER", **{"server.port": port})
        keepalive = [s for s in servers if s["attributes"]["url.path"].startswith("/keepalive/")]
        self.assertEqual(len(keepalive), 100, log)
        self.assertEqual(len({s["attributes"]["client.port"] for s in keepalive}), 1)
        self.assertEqual({s["name"] for s in keepalive}, {"GET /keepalive/{id}"})
        pipelined = sorted(s["attributes"]["url.path"] for s in servers if "/pipelined/" in s["attributes"]["url.path"])
        self.assertEqual(pipelined, ["/pipelined/0", "/pipelined/1", "/pipelined/2"])

    def _nginx(self, conf_body):
        if not shutil.which("nginx"):
            self.skipTest("nginx is not installed (scripts/install-deps.sh installs it)")
        prefix = tempfile.mkdtemp(prefix="flowtracer-nginx-")
        self.addCleanup(shutil.rmtree, prefix, True)
        os.makedirs(os.path.join(prefix, "logs"))
        with open(os.path.join(prefix, "index.html"), "w") as f:
            f.write("hello from nginx\n")
        conf = os.path.join(prefix, "nginx.conf")
        with open(conf, "w") as f:
            f.write(f"""
worker_processes 1;
pid {prefix}/nginx.pid;
error_log {prefix}/logs/error.log;
events {{ worker_connections 256; }}
http {{
  access_log off;
  client_body_temp_path {prefix}; proxy_temp_path {prefix};
  fastcgi_temp_path {prefix}; uwsgi_temp_path {prefix}; scgi_temp_path {prefix};
  {conf_body.replace('PREFIX', prefix)}
}}""")
        server = Process(["nginx", "-p", prefix, "-c", conf, "-g", "daemon off;"])
        self.addCleanup(server.stop)
        return server

    def test_nginx_static_and_reverse_proxy(self):
        backend, front = free_port(), free_port()
        start_test_server(self, backend, name="backend")
        self._nginx(f"""
  upstream backend {{ server 127.0.0.1:{backend}; keepalive 4; }}
  server {{
    listen 127.0.0.1:{front};
    location /static/ {{ alias PREFIX/; }}
    location /api/ {{ proxy_pass http://backend/; proxy_http_version 1.1; proxy_set_header Connection ""; }}
  }}""")
        wait_for_port(front)
        tracer = Tracer(self, "capture", "--port", str(front), "--port", str(backend))
        curl(f"http://127.0.0.1:{front}/static/index.html")
        curl(f"http://127.0.0.1:{front}/api/orders/42")
        curl(f"http://127.0.0.1:{front}/api/status/500")
        records, log = tracer.stop()

        nginx_servers = spans_of(records, "SERVER", **{"server.port": front})
        self.assertEqual(sorted(s["attributes"]["url.path"] for s in nginx_servers),
                         ["/api/orders/42", "/api/status/500", "/static/index.html"], log)
        self.assertEqual({s["service"] for s in nginx_servers}, {"nginx"})
        statuses = {s["attributes"]["url.path"]: s["attributes"]["http.response.status_code"] for s in nginx_servers}
        self.assertEqual(statuses["/static/index.html"], 200)
        self.assertEqual(statuses["/api/status/500"], 500)
        proxied = spans_of(records, "CLIENT", **{"server.port": backend})
        # nginx strips the /api/ prefix on the way to the backend.
        self.assertEqual(sorted(s["attributes"]["url.path"] for s in proxied), ["/orders/42", "/status/500"])
        self.assertEqual({s["attributes"]["url.path"]: s["status"] for s in proxied},
                         {"/orders/42": "UNSET", "/status/500": "ERROR"})
        self.assertEqual({s["service"] for s in proxied}, {"nginx"})
        backend_servers = spans_of(records, "SERVER", **{"server.port": backend})
        self.assertEqual(len(backend_servers), 2)
        self.assertEqual({s["service"] for s in backend_servers}, {"backend"})
        # One trace per request through the proxy: curl -> nginx -> backend.
        for path in ("/orders/42", "/status/500"):
            backend_span = [s for s in backend_servers if s["attributes"]["url.path"] == path][0]
            proxy_client = [s for s in proxied if s["attributes"]["url.path"] == path][0]
            nginx_server = [s for s in nginx_servers if s["attributes"]["url.path"] == "/api" + path][0]
            self.assertEqual(backend_span["parent_span_id"], proxy_client["span_id"])
            self.assertEqual(proxy_client["parent_span_id"], nginx_server["span_id"])
            self.assertEqual(len({backend_span["trace_id"], proxy_client["trace_id"], nginx_server["trace_id"]}), 1)

    def _nginx_answering_ok(self):
        """nginx on a free port answering every request with 200 "ok"; returns the port."""
        port = free_port()
        self._nginx(f"""
  server {{ listen 127.0.0.1:{port}; location / {{ return 200 "ok\\n"; }} }}""")
        wait_for_port(port)
        return port

    def test_wrk_load_is_counted_exactly(self):
        if not shutil.which("wrk"):
            self.skipTest("wrk is not installed")
        port = self._nginx_answering_ok()
        tracer = Tracer(self, "capture", "--port", str(port))
        out = subprocess.run(["wrk", "-t1", "-c4", "-d2s", f"http://127.0.0.1:{port}/wrk"], capture_output=True,
                             text=True, timeout=60).stdout
        records, log = tracer.stop(settle_s=1.0)
        completed = int(out.split(" requests in ")[0].split()[-1])
        servers = spans_of(records, "SERVER", **{"server.port": port})
        # wrk saturates the machine, and on a small one the agent then sheds events (counted,
        # never silent) rather than slow the traced programs: every request is then either a
        # span or part of the reported loss. Without loss the count is exact.
        lost = lost_events(log)
        # wrk counts responses it read; requests still in flight when it stopped are
        # answered by nginx (server spans) but not counted by wrk: at most one per connection.
        if lost == 0:
            self.assertGreaterEqual(len(servers), completed, log)
            self.assertTrue(all(s["attributes"]["http.response.status_code"] == 200 for s in servers))
        else:
            # Each lost request or response event costs at most one span; a request whose
            # response was lost ends without a status.
            self.assertGreaterEqual(len(servers) + lost, completed, log)
            answered = [s for s in servers if "http.response.status_code" in s["attributes"]]
            self.assertGreater(len(answered), 0, log)
            self.assertTrue(all(s["attributes"]["http.response.status_code"] == 200 for s in answered))
        self.assertLessEqual(len(servers), completed + 4, log)

    def test_fixed_rate_load_is_counted_exactly(self):
        # Below saturation (the agent's budget: nothing lost at 20 000 requests/s) every
        # request must be a span, with no loss reported.
        if not shutil.which("h2load"):
            self.skipTest("h2load is not installed")
        port = self._nginx_answering_ok()
        tracer = Tracer(self, "capture", "--port", str(port))
        out = subprocess.run(["h2load", "--h1", "-c4", "--rps", "500", "-n", "4000",
                              f"http://127.0.0.1:{port}/rate"], capture_output=True, text=True, timeout=60).stdout
        records, log = tracer.stop(settle_s=1.0)
        succeeded = int(out.split(" succeeded")[0].split()[-1])
        self.assertEqual(succeeded, 4000, out)
        servers = spans_of(records, "SERVER", **{"server.port": port})
        self.assertEqual(lost_events(log), 0, log)
        self.assertEqual(len(servers), 4000, log)
        self.assertTrue(all(s["attributes"]["http.response.status_code"] == 200 for s in servers))

    def test_cpu_budget_sheds_whole_connections(self):
        # wrk at saturation costs the agent far more than 1% of a core: with --max-cpu 1 it
        # traces a share of the connections, says so, and counts the rest. Both ends of a
        # connection are traced or shed together, so what is traced still pairs up.
        if not shutil.which("wrk"):
            self.skipTest("wrk is not installed")
        port = self._nginx_answering_ok()
        tracer = Tracer(self, "capture", "--port", str(port), "--max-cpu", "1")
        out = subprocess.run(["wrk", "-t1", "-c16", "-d5s", f"http://127.0.0.1:{port}/shed"], capture_output=True,
                             text=True, timeout=60).stdout
        records, log = tracer.stop(settle_s=1.0)
        completed = int(out.split(" requests in ")[0].split()[-1])
        self.assertIn("of connections", log)  # "CPU ...% of a core (budget 1.0%): tracing ...% of connections"
        shed = [line for line in log.splitlines() if "connections left untraced to keep within --max-cpu" in line]
        self.assertEqual(len(shed), 1, log)
        self.assertGreater(int(shed[0].split()[-1]), 0, log)
        servers = spans_of(records, "SERVER", **{"server.port": port})
        clients = spans_of(records, "CLIENT", **{"server.port": port})
        self.assertTrue(all(s["attributes"].get("http.response.status_code") == 200
                            for s in servers if "error.type" not in s["attributes"]), log)
        # Until the first decision (a second in) everything is traced and the ring may
        # overflow: each lost event costs at most one span on one side. Besides those, a
        # request cut by a shedding or by the end of the run may lack its other end; never
        # a one-sided trace at large.
        in_flight = int(next((line.split()[-1] for line in log.splitlines()
                              if "in flight on a connection when it was shed" in line), "0"))
        self.assertLessEqual(abs(len(servers) - len(clients)), lost_events(log) + in_flight + 2 * 16, log)
        # After the first decisions the traced share is small: most requests have no span.
        self.assertLess(len(servers), completed / 2, log)


if __name__ == "__main__":
    unittest.main()
