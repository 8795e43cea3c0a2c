"""A TCP proxy on 127.0.0.1 that adds a round-trip delay: half of it in each direction.

    .venv/bin/python bench/rtt_proxy.py --upstream 127.0.0.1:2525 --rtt-ms 20 --port 2526

Every chunk read from one side is written to the other at its arrival time plus RTT/2, in
order, while reading goes on: the stream is delayed, never stalled, like a link with a fixed
latency and plenty of bandwidth. Replies that wait for a command therefore cost one full RTT,
and commands written back to back (pipelining) share it. It prints ``listening on PORT`` once
it accepts connections, and runs until it is terminated.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import selectors
import signal


async def _forward(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, delay: float
) -> None:
    """Copy ``reader`` to ``writer``, each chunk ``delay`` seconds after it arrived."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[tuple[float, bytes] | None] = asyncio.Queue()

    async def deliver() -> None:
        while (item := await queue.get()) is not None:
            due, chunk = item
            wait = due - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            writer.write(chunk)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()

    delivering = asyncio.create_task(deliver())
    try:
        while chunk := await reader.read(1 << 16):
            queue.put_nowait((loop.time() + delay, chunk))
    except ConnectionError:
        pass
    finally:
        queue.put_nowait(None)
        with contextlib.suppress(ConnectionError):
            await delivering


async def _serve_one(
    client_reader: asyncio.StreamReader,
    client_writer: asyncio.StreamWriter,
    upstream: tuple[str, int],
    delay: float,
) -> None:
    try:
        server_reader, server_writer = await asyncio.open_connection(*upstream)
    except OSError:
        client_writer.close()
        return
    try:
        await asyncio.gather(
            _forward(client_reader, server_writer, delay),
            _forward(server_reader, client_writer, delay),
        )
    finally:
        for writer in (client_writer, server_writer):
            writer.close()


async def run_proxy(port: int, upstream: tuple[str, int], rtt_seconds: float) -> None:
    """Listen on 127.0.0.1:``port`` (0: any free port) until SIGTERM or SIGINT."""
    delay = rtt_seconds / 2
    clients: set[asyncio.StreamWriter] = set()
    handlers: set[asyncio.Task[None]] = set()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        clients.add(writer)
        handlers.add(task)
        try:
            await _serve_one(reader, writer, upstream, delay)
        finally:
            clients.discard(writer)
            handlers.discard(task)

    server = await asyncio.start_server(handle, "127.0.0.1", port)
    listening = server.sockets[0].getsockname()[1]
    print(f"listening on {listening}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    async with server:
        await stop.wait()
        for writer in list(clients):  # their forwarders see the end and finish
            writer.close()
        if handlers:
            await asyncio.wait(list(handlers), timeout=5)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else "")
    parser.add_argument("--upstream", required=True, help="HOST:PORT to forward to")
    parser.add_argument("--rtt-ms", type=float, default=20.0, help="round trip added, ms")
    parser.add_argument("--port", type=int, default=0, help="port to listen on (0: any)")
    args = parser.parse_args(argv)
    host, _, port = args.upstream.rpartition(":")
    # select() takes its timeout in microseconds; epoll's is rounded up to a millisecond,
    # which would make each forward a little later than due (a longer RTT than asked for).
    with asyncio.Runner(
        loop_factory=lambda: asyncio.SelectorEventLoop(selectors.SelectSelector())
    ) as runner:
        runner.run(run_proxy(args.port, (host, int(port)), args.rtt_ms / 1000))


if __name__ == "__main__":
    main()
