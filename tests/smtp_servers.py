"""Real SMTP servers for tests: aiosmtpd on 127.0.0.1, strict, with handlers that misbehave on
purpose.

Strict like a picky MTA (Postfix with ``smtpd_forbid_bare_newline = reject``, qmail,
chasquid): a message with a bare LF or CR, a line over 998 octets, or 8-bit octets outside an
SMTPUTF8 or 8BITMIME transaction is refused with a 5xx. SMTPUTF8 is offered only when asked
(``SmtpTestServer(smtputf8=True)``). And every message received is checked against the wire
rules of ``tests/wire.py``: a message that breaks one is refused too, recorded in
``handler.violations``, and fails the test when the server stops.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from email.message import EmailMessage
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP as SMTPServer
from aiosmtpd.smtp import Envelope, Session

from newsletter.inbox import free_port
from tests import wire

FULL_CHECKS = 5  # messages per server checked with the full parse; the rest with the quick one


@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    data: bytes
    smtputf8: bool = False  # sent with the SMTPUTF8 parameter

    def parse(self) -> EmailMessage:
        return wire.parse(self.data, smtputf8=self.smtputf8)


def strict_refusal(envelope: Envelope) -> str | None:
    """The 5xx a strict MTA gives this message's raw bytes, or None if it takes them."""
    data = envelope.original_content or b""
    if b"\r" in data.replace(b"\r\n", b"") or b"\n" in data.replace(b"\r\n", b""):
        return "550 5.6.0 bare CR or LF in the message (RFC 5322 section 2.3)"
    if any(len(line) > wire.MAX_LINE_OCTETS for line in data.split(b"\r\n")):
        return "550 5.6.0 line over 998 octets (RFC 5322 section 2.1.1)"
    eight_bit = envelope.smtp_utf8 or "BODY=8BITMIME" in (o.upper() for o in envelope.mail_options)
    if not eight_bit and not data.isascii():
        return "550 5.6.7 8-bit data without SMTPUTF8 or BODY=8BITMIME"
    return None


@dataclass
class RecordingHandler:
    """Accepts everything and remembers it. ``rcpt_reply``/``data_reply`` can refuse per address."""

    received: list[Received] = field(default_factory=list)
    rcpt_reply: Callable[[str, int], str | None] | None = (
        None  # (address, attempt) -> reply or None
    )
    data_reply: Callable[[Envelope, int], str | None] | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)
    attempts: Counter[str] = field(default_factory=Counter)
    sessions: int = 0
    open_sessions: int = 0
    max_open_sessions: int = 0
    accepted_at: list[float] = field(default_factory=list)
    clock: Callable[[], float] | None = None
    violations: list[tuple[str, list[str]]] = field(default_factory=list)  # (rcpt, problems)
    checked: int = 0

    async def handle_RCPT(
        self,
        server: SMTPServer,
        session: Session,
        envelope: Envelope,
        address: str,
        options: list[str],
    ) -> str:
        with self.lock:
            self.attempts[address] += 1
            attempt = self.attempts[address]
        reply = self.rcpt_reply(address, attempt) if self.rcpt_reply else None
        if reply:
            return reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTPServer, session: Session, envelope: Envelope) -> str:
        rcpt = envelope.rcpt_tos[0] if envelope.rcpt_tos else ""
        content = envelope.original_content or b""
        refusal = strict_refusal(envelope)
        with self.lock:
            self.checked += 1
            full = self.checked <= FULL_CHECKS  # the stdlib's whole-message parse is slow
        found = (
            [refusal]
            if refusal
            else wire.problems(
                content, rcpt_tos=envelope.rcpt_tos, smtputf8=envelope.smtp_utf8, full=full
            )
        )
        if found:
            with self.lock:
                self.violations.append((rcpt, found))
            return refusal or "554 5.6.0 message does not conform: " + found[0][:200]
        reply = self.data_reply(envelope, self.attempts[rcpt]) if self.data_reply else None
        if reply:
            return reply
        with self.lock:
            self.received.append(
                Received(
                    str(envelope.mail_from),
                    list(envelope.rcpt_tos),
                    content,
                    smtputf8=bool(envelope.smtp_utf8),
                )
            )
            if self.clock:
                self.accepted_at.append(self.clock())
        return "250 Message accepted"

    def recipients(self) -> list[str]:
        with self.lock:
            return [r for m in self.received for r in m.rcpt_tos]


class CountingSMTP(SMTPServer):
    """Counts concurrent sessions (connections) on the server side."""

    def __init__(self, handler: Any, **kwargs: Any) -> None:
        super().__init__(handler, **kwargs)
        self._handler_ref = handler

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        h = self._handler_ref
        with h.lock:
            h.sessions += 1
            h.open_sessions += 1
            h.max_open_sessions = max(h.max_open_sessions, h.open_sessions)

    def connection_lost(self, exc: Exception | None) -> None:
        h = self._handler_ref
        with h.lock:
            h.open_sessions -= 1
        super().connection_lost(exc)


class CountingController(Controller):
    def factory(self) -> SMTPServer:
        return CountingSMTP(self.handler, **self.SMTP_kwargs)


class SmtpTestServer:
    """``with SmtpTestServer() as server:`` a real, strict SMTP server on a loopback port.

    ``smtputf8``: offer SMTPUTF8 (RFC 6531). Leaving the ``with`` block fails the test if any
    message broke the wire rules (unless the block already failed, or ``expect_violations``).
    """

    def __init__(
        self,
        handler: RecordingHandler | None = None,
        *,
        smtputf8: bool = False,
        expect_violations: bool = False,
        **smtp_kwargs: Any,
    ) -> None:
        self.handler = handler or RecordingHandler()
        self.host = "127.0.0.1"
        self.port = free_port()
        self.expect_violations = expect_violations
        self._controller = CountingController(
            self.handler,
            hostname=self.host,
            port=self.port,
            ready_timeout=10,
            enable_SMTPUTF8=smtputf8,
            **smtp_kwargs,
        )

    def __enter__(self) -> SmtpTestServer:
        self._controller.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *exc: object) -> None:
        self._controller.stop()
        violations = self.handler.violations
        if violations and exc_type is None and not self.expect_violations:
            lines = [f"{rcpt}: {'; '.join(found)}" for rcpt, found in violations[:5]]
            raise AssertionError(
                f"{len(violations)} messages broke the wire rules:\n  " + "\n  ".join(lines)
            )

    @property
    def received(self) -> list[Received]:
        return self.handler.received

    def messages(self) -> list[EmailMessage]:
        return [r.parse() for r in self.handler.received]
