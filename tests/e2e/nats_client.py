"""A minimal NATS client over plain sockets (the test machines have no pip): enough of
the client protocol for the end-to-end tests to publish (PUB, HPUB) and subscribe
(SUB, MSG, HMSG) against a real nats-server. `transcript` keeps every byte sent and
received, so tests can also save what a real server said."""
import json
import socket
import time


class NatsError(Exception):
    pass


class NatsClient:
    def __init__(self, port, host="127.0.0.1", name="test", timeout_s=10, read_bytes=65536):
        self.read_bytes = read_bytes
        self.sock = socket.create_connection((host, port), timeout=timeout_s)
        self.buffer = b""
        self.sent = []       # each sendall() call's bytes
        self.received = []   # each recv() call's bytes
        self.next_sid = 1
        self.info = json.loads(self._read_line().split(b" ", 1)[1])
        connect = {"verbose": False, "pedantic": False, "headers": True, "no_responders": True,
                   "name": name, "lang": "python-sockets", "version": "0.1", "protocol": 1}
        self._send(b"CONNECT " + json.dumps(connect).encode() + b"\r\nPING\r\n")
        self._expect_pong()

    def _send(self, data):
        self.sent.append(data)
        self.sock.sendall(data)

    def _fill(self):
        data = self.sock.recv(self.read_bytes)
        if not data:
            raise NatsError("connection closed by the server")
        self.received.append(data)
        self.buffer += data

    def _read_line(self):
        while b"\r\n" not in self.buffer:
            self._fill()
        line, self.buffer = self.buffer.split(b"\r\n", 1)
        return line

    def _read_exactly(self, count):
        while len(self.buffer) < count:
            self._fill()
        data, self.buffer = self.buffer[:count], self.buffer[count:]
        return data

    def _expect_pong(self):
        while True:
            line = self._read_line()
            if line == b"PONG":
                return
            if line == b"PING":
                self._send(b"PONG\r\n")
            elif line.startswith(b"-ERR"):
                raise NatsError(line.decode())

    def flush(self):
        """Round trip to the server: everything sent before was processed. Deliveries
        that arrive meanwhile are dropped: flush before subscribing, not while."""
        self._send(b"PING\r\n")
        self._expect_pong()

    def publish(self, subject, payload, headers=None, reply=None):
        reply_part = f" {reply}" if reply else ""
        if headers:
            block = b"NATS/1.0\r\n" + b"".join(f"{k}: {v}\r\n".encode() for k, v in headers.items()) + b"\r\n"
            head = f"HPUB {subject}{reply_part} {len(block)} {len(block) + len(payload)}\r\n".encode()
            self._send(head + block + payload + b"\r\n")
        else:
            self._send(f"PUB {subject}{reply_part} {len(payload)}\r\n".encode() + payload + b"\r\n")

    def subscribe(self, subject, queue=None):
        sid = self.next_sid
        self.next_sid += 1
        queue_part = f" {queue}" if queue else ""
        self._send(f"SUB {subject}{queue_part} {sid}\r\n".encode())
        return sid

    def next_message(self, timeout_s=10):
        """(subject, reply, headers dict, payload) of the next delivery; answers PINGs."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            line = self._read_line()
            verb = line.split(b" ", 1)[0].upper()
            if verb == b"PING":
                self._send(b"PONG\r\n")
                continue
            if verb not in (b"MSG", b"HMSG"):
                continue  # PONG, +OK, INFO updates
            fields = line.decode().split()
            if verb == b"MSG":
                subject, reply = fields[1], (fields[3] if len(fields) == 5 else "")
                header_bytes, total = 0, int(fields[-1])
            else:
                subject, reply = fields[1], (fields[3] if len(fields) == 6 else "")
                header_bytes, total = int(fields[-2]), int(fields[-1])
            data = self._read_exactly(total + 2)[:total]
            headers = {}
            for header_line in data[:header_bytes].decode().split("\r\n")[1:]:
                if ":" in header_line:
                    key, value = header_line.split(":", 1)
                    headers[key.strip()] = value.strip()
            return subject, reply, headers, data[header_bytes:]
        raise NatsError("no message in time")

    def close(self):
        self.sock.close()
