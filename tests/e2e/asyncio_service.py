"""A Python asyncio (event loop) HTTP/1.1 service for the end-to-end tests, on loopback.

usage: asyncio_service.py PORT [--downstream URL] [--delay-ms MAX]

  /call/<id>   waits 0..MAX ms (random), then GET URL + "/<id>" on a new connection to the
               --downstream service, then answers 200; other paths answer 200 after the
               same wait. Keep-alive; one event loop thread serves every connection.
Prints "ready" once listening."""
import argparse
import asyncio
import random
import sys
import urllib.parse


async def read_head(reader):
    """The request or status line and headers (lowercase names), or None at EOF."""
    line = await reader.readline()
    if not line:
        return None, {}
    headers = {}
    while True:
        header = await reader.readline()
        if header in (b"\r\n", b"\n", b""):
            break
        name, _, value = header.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()
    return line.decode("latin-1").rstrip("\r\n"), headers


async def call(url):
    target = urllib.parse.urlsplit(url)
    reader, writer = await asyncio.open_connection(target.hostname, target.port)
    try:
        writer.write(f"GET {target.path} HTTP/1.1\r\nHost: {target.netloc}\r\nConnection: close\r\n\r\n".encode())
        await writer.drain()
        status_line, headers = await read_head(reader)
        await reader.readexactly(int(headers.get("content-length", "0")))
        return int(status_line.split()[1])
    finally:
        writer.close()


async def serve(reader, writer, downstream, max_delay_ms):
    try:
        while True:
            request_line, headers = await read_head(reader)
            if request_line is None:
                break
            await reader.readexactly(int(headers.get("content-length", "0")))
            path = request_line.split()[1]
            parts = [p for p in path.split("?")[0].split("/") if p]
            await asyncio.sleep(random.uniform(0, max_delay_ms) / 1000)
            status = 200
            if parts and parts[0] == "call" and downstream:
                suffix = "".join("/" + p for p in parts[1:])
                status = 200 if await call(downstream + suffix) == 200 else 502
            body = b"ok\n"
            writer.write(b"HTTP/1.1 %d OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n\r\n%s"
                         % (status, len(body), body))
            await writer.drain()
    except (ConnectionError, asyncio.IncompleteReadError):
        pass
    finally:
        writer.close()


async def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("port", type=int)
    parser.add_argument("--downstream", default="")
    parser.add_argument("--delay-ms", type=float, default=0)
    args = parser.parse_args()
    server = await asyncio.start_server(lambda r, w: serve(r, w, args.downstream, args.delay_ms),
                                        "127.0.0.1", args.port)
    print("ready", flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
