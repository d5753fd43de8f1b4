"""The capture layer, end to end: `flowtracer sockets` against real servers and clients
on loopback. Checks the 4-tuples, roles, byte counts and call families the agent reports
against what the programs themselves sent and received."""
import json
import socket
import subprocess
import unittest

from harness import E2ETest, IO_CLIENT, Tracer, curl, free_port, start_test_server


def find(records, **fields):
    return [r for r in records if all(r.get(k) == v for k, v in fields.items())]


class SocketsTest(E2ETest):
    def test_curl_against_python_http_server(self):
        port = free_port()
        start_test_server(self, port)
        tracer = Tracer(self, "sockets", "--port", str(port))
        stats = curl("-w", "%{local_port} %{size_request} %{size_header} %{size_download}",
                     f"http://127.0.0.1:{port}/hello").split()
        records, _ = tracer.stop()
        local_port, sent, header, body = map(int, stats)

        client = find(records, role="client", local_port=local_port)
        self.assertEqual(len(client), 1, records)
        client = client[0]
        self.assertEqual(client["comm"], "curl")
        self.assertEqual((client["local_address"], client["remote_address"]), ("127.0.0.1", "127.0.0.1"))
        self.assertEqual(client["remote_port"], port)
        self.assertEqual(client["family"], "ipv4")
        self.assertEqual(client["bytes_sent"], sent)
        self.assertEqual(client["bytes_received"], header + body)
        self.assertTrue(client["closed"])
        self.assertEqual(client["kernel_bytes_sent"], sent)
        self.assertEqual(client["kernel_bytes_received"], header + body)
        self.assertTrue(client["sent_prefix"].startswith("GET /hello HTTP/1.1\r\n"))

        server = find(records, role="server", local_port=port, remote_port=local_port)
        self.assertEqual(len(server), 1, records)
        self.assertEqual(server[0]["bytes_received"], sent)
        self.assertEqual(server[0]["bytes_sent"], header + body)
        self.assertEqual(server[0]["received_prefix"], client["sent_prefix"])

    def _io_client_run(self, host, family, ipv6=False):
        port = free_port(family)
        start_test_server(self, port, ipv6=ipv6)
        tracer = Tracer(self, "sockets", "--port", str(port))
        out = subprocess.run([IO_CLIENT, host, str(port), "/io"], check=True, capture_output=True,
                             text=True, timeout=30).stdout
        records, _ = tracer.stop()
        sent = json.loads(out)
        client = find(records, role="client", local_port=sent["local_port"])
        self.assertEqual(len(client), 1, "one keep-alive connection carried all three requests")
        client = client[0]
        self.assertEqual(client["bytes_sent"], sent["bytes_sent"])
        self.assertEqual(client["bytes_received"], sent["bytes_received"])
        self.assertEqual(client["kernel_bytes_sent"], sent["bytes_sent"])
        for call in ("write", "writev", "sendmsg", "readv", "recvmsg", "read"):
            self.assertIn(call, client["calls"], client["calls"])
        # The first request went out in 3-byte writes: the agent reassembles it whole.
        self.assertTrue(client["sent_prefix"].startswith("GET /io?call=write HTTP/1.1\r\nHost: test\r\n"
                                                         "User-Agent: io_client\r\nX-Padding: "))
        self.assertIn("GET /io?call=writev HTTP/1.1\r\n", client["sent_prefix"])
        self.assertIn("GET /io?call=sendmsg HTTP/1.1\r\n", client["sent_prefix"])
        self.assertEqual(client["sent_prefix"].count("GET /io"), 3)
        self.assertEqual(client["received_prefix"].count("HTTP/1.1 200 OK"), 3)
        server = find(records, role="server", local_port=port, remote_port=sent["local_port"])
        self.assertEqual(len(server), 1)
        self.assertEqual(server[0]["bytes_received"], sent["bytes_sent"])
        self.assertEqual(server[0]["bytes_sent"], sent["bytes_received"])
        return client, server[0]

    def test_every_call_family_and_keep_alive(self):
        client, _ = self._io_client_run("127.0.0.1", socket.AF_INET)
        self.assertEqual(client["family"], "ipv4")

    def test_ipv6_loopback(self):
        client, server = self._io_client_run("::1", socket.AF_INET6, ipv6=True)
        self.assertEqual(client["family"], "ipv6")
        self.assertEqual((client["local_address"], client["remote_address"]), ("::1", "::1"))
        self.assertEqual(server["local_address"], "::1")

    def test_port_filter_excludes_other_traffic(self):
        traced, other = free_port(), free_port()
        start_test_server(self, traced)
        start_test_server(self, other)
        tracer = Tracer(self, "sockets", "--port", str(traced))
        curl(f"http://127.0.0.1:{other}/other")
        curl(f"http://127.0.0.1:{traced}/traced")
        records, _ = tracer.stop()
        self.assertTrue(find(records, remote_port=traced))
        self.assertFalse([r for r in records if other in (r["local_port"], r["remote_port"])])


if __name__ == "__main__":
    unittest.main()
