"""A real SMTP server on 127.0.0.1 that advertises PIPELINING and misbehaves on purpose.

aiosmtpd reads pipelined commands correctly (it takes one line at a time from a buffered
stream) but does not advertise PIPELINING, cannot drop a connection between the end of data
and its reply, and hides how the commands arrived. This server is small and explicit: a
:class:`Rule` per recipient (and ``mail_rules`` per sender) says what to answer at each
stage (on every attempt, or only the first ``first`` times a recipient comes); it can answer
slowly, throttle (421 "rate limit" above N messages a second on its own injected clock) and
greet with 421 "too many connections" above N open sessions. It is strict like a careful
MTA: a bare CR or LF, or a line over 998 octets, in a command or in the data is refused. It
records every accepted message, and for each connection the commands in the order and in the
TCP reads ("turns") they arrived in, which shows how many round trips a client needed.

Also :class:`SmtpSink`: Postfix's ``smtp-sink`` on a free loopback port, and
:func:`advertise_pipelining`, which makes the aiosmtpd servers of :mod:`tests.smtp_servers`
offer PIPELINING, so the delivery tests written for them run pipelined too.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from newsletter.inbox import free_port
from tests.smtp_servers import RecordingHandler

MAX_LINE_OCTETS = 1000  # 998 and CRLF (RFC 5321 4.5.3.1.6)
THROTTLE_REPLY = "421 4.7.0 rate limit exceeded, try again later"
BUSY_GREETING = "421 4.7.0 Error: too many connections from 127.0.0.1"
SMTP_SINK = shutil.which("smtp-sink") or "/usr/sbin/smtp-sink"


class ManualClock:
    """A monotonic clock (seconds, float) that only moves when a test moves it."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass(frozen=True)
class Rule:
    """What the server does for one recipient instead of accepting (None: the normal reply)."""

    rcpt: str | None = None  # reply to RCPT TO, e.g. "550 5.1.1 no such user"
    data: str | None = None  # reply to DATA instead of 354
    end: str | None = None  # reply to the end of data instead of 250
    drop_after_dot: bool = False  # keep the message, close without a reply to the dot
    end_delay: float = 0.0  # seconds before the reply to the end of data
    first: int = 0  # only the first N times the recipient comes (RCPT TO); 0: every time


@dataclass
class ReceivedMessage:
    sender: str
    recipients: list[str]
    data: bytes  # unstuffed, CRLF line ends as received
    mail_params: list[str]
    at: float = 0.0  # when it was accepted, on the server's clock


@dataclass
class SessionLog:
    """One connection as the server saw it."""

    reads: list[list[str]] = field(default_factory=list)  # command verbs per TCP read
    opened_at: float = 0.0  # on the server's clock
    closed_at: float | None = None
    refused: bool = False  # greeted with 421: too many connections

    @property
    def turns(self) -> list[list[str]]:
        """The commands of each TCP read that carried at least one (data lines are not shown)."""
        return [turn for turn in self.reads if turn]

    @property
    def commands(self) -> list[str]:
        return [verb for turn in self.turns for verb in turn]


@dataclass
class ServerOptions:
    """Server-wide behaviour; tests may change it between connections."""

    pipelining: bool = True
    smtputf8: bool = False
    size: int = 10_000_000
    # What DATA and the end of data answer when no RCPT was accepted (354 / 250: a lax server).
    data_without_rcpt: str = "554 5.5.1 Error: no valid recipients"
    end_without_rcpt: str = "554 5.5.1 Error: no valid recipients"
    reply_delay: float = 0.0  # seconds before every reply (a slow server)
    throttle_per_second: int | None = None  # more messages than this in a second: 421
    max_connections: int | None = None  # more sessions open than this: a 421 greeting
    busy_greeting: str = BUSY_GREETING


class PipeliningServer:
    """``with PipeliningServer(options) as server:``; ``server.port`` is where it listens."""

    def __init__(
        self,
        options: ServerOptions | None = None,
        *,
        rules: dict[str, Rule] | None = None,
        mail_rules: dict[str, str] | None = None,
        clock: Callable[[], float] = time.monotonic,
        on_accepted: Callable[[int], None] | None = None,
    ) -> None:
        self.options = options or ServerOptions()
        self.rules: dict[str, Rule] = rules if rules is not None else {}
        self.mail_rules: dict[str, str] = mail_rules if mail_rules is not None else {}
        self.clock = clock
        self.on_accepted = on_accepted  # called with the count after each accepted message
        self.host = "127.0.0.1"
        self.port = 0
        self.received: list[ReceivedMessage] = []
        self.sessions: list[SessionLog] = []
        self.violations: list[str] = []  # strictness refusals (bare LF/CR, long lines)
        self.accepted_at: deque[float] = deque()  # server clock, for the throttle
        self.throttled_at: list[float] = []  # server clock, each THROTTLE_REPLY
        self.attempts: Counter[str] = Counter()  # RCPT TO per recipient
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.Server | None = None
        self._connections: set[_Connection] = set()

    def __enter__(self) -> PipeliningServer:
        self._thread.start()
        future = asyncio.run_coroutine_threadsafe(self._start(), self._loop)
        self.port = future.result(timeout=10)
        return self

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self._stop(), self._loop).result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()

    async def _start(self) -> int:
        self._server = await self._loop.create_server(
            lambda: _Connection(self), self.host, 0, family=socket.AF_INET
        )
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    async def _stop(self) -> None:
        assert self._server is not None
        self._server.close()
        for connection in list(self._connections):
            connection.abort()
        await self._server.wait_closed()

    def recipients(self) -> list[str]:
        """Every recipient of every accepted message, in order."""
        return [r for message in self.received for r in message.recipients]

    def rule_for(self, address: str) -> Rule | None:
        """The rule for this RCPT TO, counting it as one more attempt."""
        self.attempts[address] += 1
        rule = self.rules.get(address)
        if rule is None or (rule.first and self.attempts[address] > rule.first):
            return None
        return rule


class _Connection(asyncio.Protocol):
    """One SMTP session: chunks from the socket go through a queue to one task, in order."""

    def __init__(self, server: PipeliningServer) -> None:
        self.server = server
        self.log = SessionLog()
        self.chunks: asyncio.Queue[bytes | None] = asyncio.Queue()
        self.transport: asyncio.Transport | None = None
        self.task: asyncio.Task[None] | None = None
        self.buffer = bytearray()
        self.closed = False
        self._reset()

    def _reset(self) -> None:
        self.sender: str | None = None
        self.mail_params: list[str] = []
        self.recipients: list[str] = []
        self.rule: Rule | None = None  # the first accepted recipient's, for DATA and the end
        self.in_data = False
        self.data = bytearray()
        self.data_problem: str | None = None

    # -- asyncio.Protocol ---------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.log.opened_at = self.server.clock()
        self.server.sessions.append(self.log)
        self.server._connections.add(self)
        self.task = asyncio.get_running_loop().create_task(self._run())

    def data_received(self, data: bytes) -> None:
        self.chunks.put_nowait(data)

    def eof_received(self) -> bool | None:
        self.chunks.put_nowait(None)
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self.chunks.put_nowait(None)
        if self.log.closed_at is None:
            self.log.closed_at = self.server.clock()
        self.server._connections.discard(self)

    def abort(self) -> None:
        if self.task is not None:
            self.task.cancel()
        if self.transport is not None:
            self.transport.abort()

    # -- the session ----------------------------------------------------------------------------
    async def _run(self) -> None:
        limit = self.server.options.max_connections
        open_now = sum(1 for c in self.server._connections if not c.closed)  # this one included
        if limit is not None and open_now > limit:
            self.log.refused = True
            await self._reply(self.server.options.busy_greeting, close=True)
            return
        await self._reply("220 pipelining.test ESMTP ready")
        while not self.closed:
            chunk = await self.chunks.get()
            if chunk is None:
                break
            self.buffer += chunk
            turn: list[str] = []  # filled as the commands are read, seen by tests at once
            self.log.reads.append(turn)
            while not self.closed:
                end = self.buffer.find(b"\n")
                if end < 0:
                    if len(self.buffer) > 100_000 and not self.in_data:
                        await self._reply("500 5.5.2 line too long", close=True)
                    break
                line = bytes(self.buffer[: end + 1])
                del self.buffer[: end + 1]
                if self.in_data:
                    await self._data_line(line, turn)
                else:
                    await self._command(line, turn)
        self._close()

    async def _reply(self, text: str, *, close: bool = False, delay: float = 0.0) -> None:
        delay += self.server.options.reply_delay
        if delay:
            await asyncio.sleep(delay)
        if self.closed or self.transport is None:
            return
        self.transport.write(text.replace("\n", "\r\n").encode() + b"\r\n")
        if close or text.startswith("421"):
            self._close()

    def _close(self) -> None:
        self.closed = True
        if self.log.closed_at is None:  # before the client can even see the last reply
            self.log.closed_at = self.server.clock()
        if self.transport is not None:
            self.transport.close()

    def _strict(self, line: bytes) -> str | None:
        if not line.endswith(b"\r\n"):
            return "bare LF"
        if b"\r" in line[:-2]:
            return "bare CR"
        if len(line) > MAX_LINE_OCTETS:
            return "line over 998 octets"
        return None

    async def _command(self, line: bytes, turn: list[str]) -> None:
        problem = self._strict(line)
        text = line.rstrip(b"\r\n").decode("utf-8", "replace")
        verb, _, rest = text.partition(" ")
        verb = verb.upper()
        turn.append(verb)
        if problem is not None:
            self.server.violations.append(f"{problem} in a command")
            await self._reply(f"500 5.5.2 {problem} in a command")
            return
        options = self.server.options
        if verb in ("EHLO", "HELO"):
            self._reset()
            lines = ["pipelining.test"]
            if verb == "EHLO":
                lines += ["PIPELINING"] if options.pipelining else []
                lines += [f"SIZE {options.size}", "8BITMIME", "ENHANCEDSTATUSCODES"]
                lines += ["SMTPUTF8"] if options.smtputf8 else []
            await self._reply("\n".join(f"250-{x}" for x in lines[:-1]) + f"\n250 {lines[-1]}")
        elif verb == "MAIL":
            await self._mail(rest)
        elif verb == "RCPT":
            await self._rcpt(rest)
        elif verb == "DATA":
            await self._data()
        elif verb == "RSET":
            self._reset()
            await self._reply("250 2.0.0 Ok")
        elif verb == "NOOP":
            await self._reply("250 2.0.0 Ok")
        elif verb == "QUIT":
            await self._reply("221 2.0.0 Bye", close=True)
        else:
            await self._reply("502 5.5.2 Error: command not recognized")

    async def _mail(self, rest: str) -> None:
        if self.sender is not None:
            await self._reply("503 5.5.1 Error: nested MAIL command")
            return
        address, params = _path(rest, "FROM:")
        if address is None:
            await self._reply("501 5.5.4 Syntax: MAIL FROM:<address>")
            return
        if not address.isascii() and "SMTPUTF8" not in params:
            await self._reply("553 5.6.7 non-ASCII address without SMTPUTF8")
            return
        if address in self.server.mail_rules:
            await self._reply(self.server.mail_rules[address])
            return
        limit = self.server.options.throttle_per_second
        if limit is not None:
            now = self.server.clock()
            recent = self.server.accepted_at
            while recent and recent[0] <= now - 1.0:
                recent.popleft()
            if len(recent) >= limit:
                self.server.throttled_at.append(now)
                await self._reply(THROTTLE_REPLY)
                return
        self.sender = address
        self.mail_params = params
        await self._reply("250 2.1.0 Ok")

    async def _rcpt(self, rest: str) -> None:
        if self.sender is None:
            await self._reply("503 5.5.1 Error: need MAIL command")
            return
        address, _ = _path(rest, "TO:")
        if not address:
            await self._reply("501 5.5.4 Syntax: RCPT TO:<address>")
            return
        if not address.isascii() and "SMTPUTF8" not in self.mail_params:
            await self._reply("553 5.6.7 non-ASCII address without SMTPUTF8")
            return
        rule = self.server.rule_for(address)
        if rule is not None and rule.rcpt is not None:
            await self._reply(rule.rcpt)
            return
        if not self.recipients:
            self.rule = rule
        self.recipients.append(address)
        await self._reply("250 2.1.5 Ok")

    async def _data(self) -> None:
        if self.sender is None:
            await self._reply("503 5.5.1 Error: need MAIL command")
            return
        if not self.recipients:
            reply = self.server.options.data_without_rcpt
        else:
            rule = self.rule
            reply = rule.data if rule is not None and rule.data is not None else "354 End with ."
        if reply.startswith("354"):
            self.in_data = True
        await self._reply(reply)

    async def _data_line(self, line: bytes, turn: list[str]) -> None:
        if line == b".\r\n":
            turn.append(".")
            await self._end_of_data()
            return
        problem = self._strict(line)
        if problem is not None and self.data_problem is None:
            self.data_problem = problem
        self.data += line[1:] if line.startswith(b".") else line

    async def _end_of_data(self) -> None:
        rule = self.rule
        sender, recipients, data = self.sender or "", self.recipients, bytes(self.data)
        problem, params = self.data_problem, self.mail_params
        self._reset()
        if not recipients:
            await self._reply(self.server.options.end_without_rcpt)
            return
        if problem is not None:
            self.server.violations.append(f"{problem} in the data")
            await self._reply(f"554 5.6.0 Error: {problem} in the message")
            return
        reply = rule.end if rule is not None and rule.end is not None else None
        if reply is None or reply.startswith("2") or (rule is not None and rule.drop_after_dot):
            now = self.server.clock()
            self.server.received.append(ReceivedMessage(sender, recipients, data, params, now))
            self.server.accepted_at.append(now)
            if self.server.on_accepted is not None:
                self.server.on_accepted(len(self.server.received))
        if rule is not None and rule.drop_after_dot:
            self._close()
            return
        delay = rule.end_delay if rule is not None else 0.0
        number = len(self.server.received)
        await self._reply(reply or f"250 2.0.0 Ok: queued as Q{number}", delay=delay)


def _path(rest: str, keyword: str) -> tuple[str | None, list[str]]:
    """``FROM:<a@b> SIZE=1`` -> ("a@b", ["SIZE=1"]); a quoted local part may hold '>'."""
    if not rest.upper().startswith(keyword):
        return None, []
    rest = rest[len(keyword) :].strip()
    if not rest.startswith("<"):
        return None, []
    i, quoted = 1, False
    while i < len(rest) and (quoted or rest[i] != ">"):
        if quoted and rest[i] == "\\":
            i += 1  # a quoted pair
        elif rest[i] == '"':
            quoted = not quoted
        i += 1
    if i >= len(rest):
        return None, []
    return rest[1:i], [p.upper() for p in rest[i + 1 :].split()]


class SmtpSink:
    """``with SmtpSink("-Q", "."):`` Postfix's smtp-sink on a free loopback port.

    Each accepted message is dumped as a file into a temporary folder (smtp-sink's ``-d``),
    so a test can count and read what arrived. The folder is in the system's temporary
    directory, not under pytest's ``tmp_path``: as root, smtp-sink runs as ``nobody``, who
    cannot enter pytest's private folders.
    """

    def __init__(self, *options: str) -> None:
        self.folder = Path(tempfile.mkdtemp(prefix="smtp-sink-"))
        self.host = "127.0.0.1"
        self.port = free_port()
        self.options = options
        self.process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> SmtpSink:
        command = [SMTP_SINK, "-4", "-d", f"{self.folder}/%M.", *self.options]
        if os.geteuid() == 0:  # smtp-sink refuses to run as root without a user to switch to
            self.folder.chmod(0o777)
            command += ["-u", "nobody"]
        command += [f"{self.host}:{self.port}", "64"]
        self.process = subprocess.Popen(command, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                err = self.process.stderr.read().decode() if self.process.stderr else ""
                raise RuntimeError(f"smtp-sink exited at start: {err.strip()}")
            try:
                socket.create_connection((self.host, self.port), timeout=1).close()
                return self
            except OSError:
                time.sleep(0.02)  # polling for the listening socket, bounded by the deadline
        self.process.kill()
        raise RuntimeError("smtp-sink did not listen within 10 s")

    def __exit__(self, *exc: object) -> None:
        assert self.process is not None
        self.process.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=5)
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=5)
        if self.process.stderr is not None:
            self.process.stderr.close()
        shutil.rmtree(self.folder, ignore_errors=True)

    def dumps(self) -> list[bytes]:
        """The files smtp-sink wrote, one per accepted message."""
        return [path.read_bytes() for path in sorted(self.folder.iterdir()) if path.is_file()]


def advertise_pipelining(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every ``RecordingHandler`` (and subclass) offers PIPELINING in its EHLO reply; returns
    the list of EHLO names it was offered to, filled as clients greet.

    aiosmtpd reads pipelined commands correctly (one line at a time from a buffered stream,
    the message content included), so its handlers' faults stay where they were: a refused
    RCPT, a dropped connection during DATA, a slow reply.
    """
    offered: list[str] = []

    async def handle_EHLO(
        self: RecordingHandler,
        server: Any,
        session: Any,
        envelope: Any,
        hostname: str,
        responses: list[str],
    ) -> list[str]:
        session.host_name = hostname  # what aiosmtpd does itself when there is no EHLO hook
        offered.append(hostname)
        return [*responses[:-1], "250-PIPELINING", responses[-1]]

    monkeypatch.setattr(RecordingHandler, "handle_EHLO", handle_EHLO, raising=False)
    return offered
