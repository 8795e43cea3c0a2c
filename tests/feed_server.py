"""A small HTTP server on 127.0.0.1 for the feed tests.

Routes are functions that write the response themselves, so a test can serve a file, redirect,
answer 304, stream forever or not answer at all. Every request is recorded with the status the
server sent. ``/feeds/<name>`` serves ``tests/feeds/<name>`` unless a route overrides it.

Handlers never run for long: the ones that hold back an answer wait on ``server.release``,
which :meth:`FeedServer.stop` sets before it joins the handler threads.
"""

from __future__ import annotations

import gzip
import threading
from collections.abc import Callable, Iterator
from contextlib import suppress
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType

FEEDS_DIR = Path(__file__).parent / "feeds"
MAX_HANDLER_SECONDS = 10.0  # upper bound for any handler that waits for the test to finish
CONTENT_TYPES = {".xml": "application/rss+xml", ".rdf": "application/rdf+xml", ".html": "text/html"}


@dataclass
class Exchange:
    """One request as the server saw it, and the status it answered with."""

    path: str
    headers: dict[str, str]  # lower-case names
    status: int | None = None


Route = Callable[["Handler"], None]


class Handler(BaseHTTPRequestHandler):
    server: _Server
    timeout = MAX_HANDLER_SECONDS  # socket timeout while reading the request

    def do_GET(self) -> None:
        self.exchange = Exchange(self.path, {k.lower(): v for k, v in self.headers.items()})
        self.server.owner.exchanges.append(self.exchange)
        route = self.server.owner.routes.get(self.path) or self._file_route()
        with suppress(ConnectionError):  # the client gave up (timeout, size limit)
            route(self)

    def send_response(self, code: int, message: str | None = None) -> None:
        self.exchange.status = code
        super().send_response(code, message)

    def reply(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        if not any(name.lower() == "content-length" for name in headers or {}):
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _file_route(self) -> Route:
        path = FEEDS_DIR / self.path.removeprefix("/feeds/")
        if not self.path.startswith("/feeds/") or not path.is_file():
            return lambda handler: handler.reply(404, b"not found", {"Content-Type": "text/plain"})
        return serve_file(path.name)

    def log_message(self, format: str, *args: object) -> None:
        pass


class _Server(ThreadingHTTPServer):
    daemon_threads = False
    block_on_close = True  # server_close() joins every handler thread
    owner: FeedServer


@dataclass
class FeedServer:
    routes: dict[str, Route] = field(default_factory=dict)
    exchanges: list[Exchange] = field(default_factory=list)
    release: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        self._server = _Server(("127.0.0.1", 0), Handler)
        self._server.owner = self
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    def url(self, path: str) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}{path}"

    def seen(self, path: str) -> list[Exchange]:
        return [exchange for exchange in self.exchanges if exchange.path == path]

    def start(self) -> FeedServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.release.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(MAX_HANDLER_SECONDS)

    def __enter__(self) -> FeedServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


# -- routes --------------------------------------------------------------------------------


def serve_file(name: str, *, content_type: str | None = None, **headers: str) -> Route:
    """``tests/feeds/<name>``; extra headers as keyword arguments (``ETag="x"``)."""
    path = FEEDS_DIR / name
    kind = content_type or CONTENT_TYPES.get(path.suffix, "application/octet-stream")
    return serve_bytes(path.read_bytes(), content_type=kind, **headers)


def serve_bytes(body: bytes, *, content_type: str = "application/rss+xml", **headers: str) -> Route:
    all_headers = {"Content-Type": content_type, **_header_names(headers)}
    return lambda handler: handler.reply(200, body, all_headers)


def status(code: int, body: bytes = b"") -> Route:
    return lambda handler: handler.reply(code, body, {"Content-Type": "text/plain"})


def redirect(location: str, code: int = 302) -> Route:
    return lambda handler: handler.reply(code, b"", {"Location": location})


def conditional(name: str, *, etag: str, last_modified: str) -> Route:
    """Serve a file with validators; answer 304 when the request carries matching ones."""
    body = (FEEDS_DIR / name).read_bytes()
    validators = {"ETag": etag, "Last-Modified": last_modified}

    def route(handler: Handler) -> None:
        if (
            handler.headers.get("If-None-Match") == etag
            or handler.headers.get("If-Modified-Since") == last_modified
        ):
            handler.send_response(304)
            for name, value in validators.items():
                handler.send_header(name, value)
            handler.end_headers()
            return
        handler.reply(200, body, {"Content-Type": "application/rss+xml", **validators})

    return route


def never_answer(handler: Handler) -> None:
    """Hold the request until the server stops (the client times out long before)."""
    handler.server.owner.release.wait(MAX_HANDLER_SECONDS)


@dataclass
class Endless:
    """A body without Content-Length that goes on for ``total`` bytes unless the client leaves."""

    total: int
    written: int = 0
    done: threading.Event = field(default_factory=threading.Event)

    def __call__(self, handler: Handler) -> None:
        try:
            handler.send_response(200)
            handler.send_header("Content-Type", "application/rss+xml")
            handler.end_headers()
            for chunk in _feed_chunks():
                if self.written >= self.total:
                    break
                handler.wfile.write(chunk)
                self.written += len(chunk)
        finally:
            self.done.set()


def gzip_bomb(decoded_size: int) -> Route:
    """A small gzip body (honest Content-Length) that inflates to ``decoded_size`` bytes."""
    raw = bytearray()
    for chunk in _feed_chunks():
        if len(raw) >= decoded_size:
            break
        raw += chunk
    body = gzip.compress(bytes(raw[:decoded_size]))
    headers = {"Content-Type": "application/rss+xml", "Content-Encoding": "gzip"}
    return lambda handler: handler.reply(200, body, headers)


def _feed_chunks() -> Iterator[bytes]:
    yield b'<?xml version="1.0" encoding="utf-8"?>\n<rss version="2.0"><channel><title>Big</title>'
    number = 0
    while True:
        number += 1
        item = f"<item><title>Item {number}</title><description>{'x' * 900}</description></item>"
        yield item.encode()


def _header_names(headers: dict[str, str]) -> dict[str, str]:
    """Python keyword names to header names: ``Last_Modified`` -> ``Last-Modified``."""
    return {name.replace("_", "-"): value for name, value in headers.items()}
