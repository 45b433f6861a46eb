#!/usr/bin/env python3
"""A TCP proxy on 127.0.0.1 that adds network latency, not a bandwidth cap.

    python3 bench/gcbench/delayproxy.py --target 127.0.0.1:9000 --rtt-ms 50 [--port 0]

Every chunk read from one side is forwarded to the other side RTT/2 after it
arrived, in order. Chunks are not held back by earlier ones beyond that: a
chunk's forward time is its arrival time + RTT/2, so a stream of chunks keeps
its throughput and only gains a fixed delay (a long, fat pipe, not a thin one).
A new connection costs one more RTT before its first byte reaches the server,
like a TCP handshake would: the client's first chunk is forwarded at
max(arrival, accept + RTT) + RTT/2. A half-close (EOF) travels with the same
delay as data.

Counters: connections accepted, bytes client->server ("up") and
server->client ("down"). The proxy prints one line `port N` on stdout once
it listens. On SIGTERM or SIGINT it closes everything, prints the counters as
one JSON line on stdout and exits 0. With --stats-file it also writes them
there. Python 3.11 standard library only.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys

CHUNK = 256 * 1024


class Counters:
    def __init__(self) -> None:
        self.connections = 0
        self.connect_errors = 0
        self.bytes_up = 0      # client -> server
        self.bytes_down = 0    # server -> client
        self.chunks_up = 0
        self.chunks_down = 0

    def as_dict(self) -> dict[str, int]:
        return dict(vars(self))


async def pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, delay: float,
               first_not_before: float, counters: Counters, up: bool) -> None:
    """Copies reader to writer, each chunk delayed by `delay` seconds after it
    arrived (and not before `first_not_before` + delay for the first one).
    Reading never waits for writing: the queue between them is unbounded, so
    the delay adds latency without limiting throughput."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

    async def read_side() -> None:
        not_before = first_not_before
        try:
            while True:
                data = await reader.read(CHUNK)
                now = loop.time()
                queue.put_nowait((max(now, not_before) + delay, data))
                if not data:
                    return
                if up:
                    counters.bytes_up += len(data)
                    counters.chunks_up += 1
                else:
                    counters.bytes_down += len(data)
                    counters.chunks_down += 1
        except (ConnectionError, OSError):
            queue.put_nowait((loop.time() + delay, b""))

    async def write_side() -> None:
        while True:
            due, data = await queue.get()
            wait = due - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            if not data:
                # EOF: pass the half-close on, so HTTP keep-alive and
                # "read until EOF" peers behave as they would directly.
                if writer.can_write_eof():
                    try:
                        writer.write_eof()
                    except (ConnectionError, OSError):
                        pass
                return
            writer.write(data)
            await writer.drain()

    rd = asyncio.create_task(read_side())
    try:
        await write_side()
    finally:
        rd.cancel()


async def handle(client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter, target: tuple[str, int],
                 rtt: float, counters: Counters, tasks: set[asyncio.Task]) -> None:
    loop = asyncio.get_running_loop()
    accepted = loop.time()
    counters.connections += 1
    try:
        server_r, server_w = await asyncio.open_connection(*target)
    except OSError as err:
        counters.connect_errors += 1
        print(f"delayproxy: connect to {target[0]}:{target[1]}: {err}", file=sys.stderr, flush=True)
        client_w.close()
        return
    half = rtt / 2
    up = asyncio.create_task(pump(client_r, server_w, half, accepted + rtt, counters, True))
    down = asyncio.create_task(pump(server_r, client_w, half, 0.0, counters, False))
    for t in (up, down):
        tasks.add(t)
        t.add_done_callback(tasks.discard)
    try:
        await asyncio.gather(up, down)
    except (ConnectionError, OSError):
        pass
    finally:
        for w in (server_w, client_w):
            w.close()


async def main_async(args: argparse.Namespace) -> Counters:
    host, _, port = args.target.rpartition(":")
    target = (host or "127.0.0.1", int(port))
    rtt = args.rtt_ms / 1000.0
    counters = Counters()
    tasks: set[asyncio.Task] = set()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    async def on_conn(r, w):
        t = asyncio.current_task()
        tasks.add(t)
        try:
            await handle(r, w, target, rtt, counters, tasks)
        except asyncio.CancelledError:
            pass  # shutting down
        finally:
            tasks.discard(t)

    server = await asyncio.start_server(on_conn, "127.0.0.1", args.port, backlog=512)
    print(f"port {server.sockets[0].getsockname()[1]}", flush=True)
    await stop.wait()
    server.close()
    for t in list(tasks):
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    return counters


def main() -> int:
    ap = argparse.ArgumentParser(description="TCP proxy on 127.0.0.1 that adds RTT/2 each way (no bandwidth cap).")
    ap.add_argument("--target", required=True, help="HOST:PORT to forward to")
    ap.add_argument("--rtt-ms", type=float, required=True, help="round-trip time to add, in milliseconds")
    ap.add_argument("--port", type=int, default=0, help="port to listen on (default: a free one)")
    ap.add_argument("--stats-file", help="also write the counters as JSON here at exit")
    args = ap.parse_args()
    counters = asyncio.run(main_async(args))
    out = json.dumps(dict(counters.as_dict(), rtt_ms=args.rtt_ms))
    if args.stats_file:
        with open(args.stats_file, "w") as f:
            f.write(out + "\n")
    print(out, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
