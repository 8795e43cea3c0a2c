"""Real SMTP servers for tests: aiosmtpd on 127.0.0.1, with handlers that misbehave on purpose."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP as SMTPServer
from aiosmtpd.smtp import Envelope, Session

from newsletter.inbox import free_port


@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    data: bytes

    def parse(self) -> EmailMessage:
        message = message_from_bytes(self.data, policy=policy.default)
        assert isinstance(message, EmailMessage)
        return message


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
        reply = self.data_reply(envelope, self.attempts[rcpt]) if self.data_reply else None
        if reply:
            return reply
        with self.lock:
            self.received.append(
                Received(
                    str(envelope.mail_from),
                    list(envelope.rcpt_tos),
                    envelope.original_content or b"",
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
    """``with SmtpTestServer() as server:`` a real SMTP server on an ephemeral loopback port."""

    def __init__(self, handler: RecordingHandler | None = None, **smtp_kwargs: Any) -> None:
        self.handler = handler or RecordingHandler()
        self.host = "127.0.0.1"
        self.port = free_port()
        self._controller = CountingController(
            self.handler, hostname=self.host, port=self.port, ready_timeout=10, **smtp_kwargs
        )

    def __enter__(self) -> SmtpTestServer:
        self._controller.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._controller.stop()

    @property
    def received(self) -> list[Received]:
        return self.handler.received

    def messages(self) -> list[EmailMessage]:
        return [r.parse() for r in self.handler.received]
