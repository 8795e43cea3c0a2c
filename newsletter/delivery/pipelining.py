"""Many SMTP transactions on one connection, pipelined (RFC 2920) when the server offers it.

:class:`SmtpSession` works on an already connected and greeted ``smtplib.SMTP`` (so TLS,
STARTTLS and AUTH from :func:`newsletter.delivery.smtp.connect` still apply). With
``PIPELINING`` it writes MAIL FROM, RCPT TO and DATA as one group and reads the three replies;
the message body then waits, and goes out with the next message's group right behind its
end-of-data dot, so the previous message's final reply and the next group's replies come back
together: about one round trip per message. Without ``PIPELINING`` it sends one command at a
time (what ``smtplib.sendmail`` does), with the same outcomes.

Every reply is matched to its command. A message gets exactly one outcome:

- :class:`Accepted`: the server took responsibility for it (2xx to the end of data);
- :class:`Refused`: never with this content or address (5xx to RCPT TO, DATA or the end of
  data; ``code`` is None when it could not even be written as SMTP);
- :class:`Deferred`: not now (4xx to any command, or 5xx to MAIL FROM: a sender problem is
  ours, never the recipient's, so it is retried and counts towards pausing the send);
- :class:`Unconfirmed`: its content and end-of-data dot went out but the connection ended
  before the reply (dropped, timed out): it may have been delivered, and the caller sends it
  again later (the one kind of duplicate a resend can make);
- :class:`NotSent`: the connection ended (dropped, or the server closed with 421 to an earlier
  command) before its content went out: it was certainly not delivered.

With pipelining, at most two messages per connection are on the wire at any time: one whose
dot awaits its reply, and the next one's MAIL, RCPT and DATA. Only the first can be
Unconfirmed.

When every RCPT of a message was refused, what DATA answers is never taken as acceptance: a
refusal ends the transaction with RSET before the next MAIL, and a 354 (some servers accept
DATA anyway) is answered with a lone dot, as RFC 2920 section 3.1 says.
"""

from __future__ import annotations

import contextlib
import logging
import re
import smtplib
import socket
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Literal, cast

log = logging.getLogger(__name__)

Stage = Literal["local", "mail", "rcpt", "data", "end"]

DEFAULT_TIMEOUT_SECONDS = 60.0  # for a client created without a socket timeout
MAX_COMMAND_OCTETS = 512  # RFC 5321 4.5.3.1.4, CRLF included
MAX_REPLY_CHARS = 500  # a reply is stored and logged: keep it one readable line
_NOT_ON_COMMAND_LINE = frozenset("\r\n\0")
_PATH_BREAKERS = frozenset('<>"')  # only inside a quoted local part
_EOL = re.compile(rb"\r\n|\r|\n")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


@dataclass(frozen=True, slots=True)
class OutgoingMessage:
    """One message for one recipient. ``id`` (the delivery id) comes back in its outcome.

    ``smtputf8``: the addresses need SMTPUTF8 (the caller decides, from the addresses and
    whether the server offers it); without it, a non-ASCII address is refused locally.
    ``crlf``: the caller built ``data`` with CRLF line ends only, so the three passes over it
    that would find (and repair) a bare CR or LF are skipped.
    """

    id: int
    sender: str
    recipient: str
    data: bytes
    smtputf8: bool = False
    crlf: bool = False


@dataclass(frozen=True, slots=True)
class Accepted:
    """The server accepted the message (2xx to the end of data)."""

    id: int
    code: int
    text: str


@dataclass(frozen=True, slots=True)
class Refused:
    """Refused for good; ``code`` is None when it was refused here, before the server saw it."""

    id: int
    code: int | None
    text: str
    stage: Stage

    @property
    def reason(self) -> str:
        return self.text if self.code is None else f"{self.code} {self.text}"


@dataclass(frozen=True, slots=True)
class Deferred:
    """Refused for now (4xx, or a 5xx to MAIL FROM); retry later."""

    id: int
    code: int
    text: str
    stage: Stage

    @property
    def reason(self) -> str:
        return f"{self.code} {self.text}"


@dataclass(frozen=True, slots=True)
class Unconfirmed:
    """Sent whole, but the connection ended before its final reply: it may have arrived."""

    id: int
    reason: str


@dataclass(frozen=True, slots=True)
class NotSent:
    """The connection ended before the content went out: it certainly did not arrive."""

    id: int
    reason: str


Outcome = Accepted | Refused | Deferred | Unconfirmed | NotSent
_Kind = Literal["rset", "mail", "rcpt", "data", "end", "dot"]
_GROUP: tuple[_Kind, _Kind, _Kind] = ("mail", "rcpt", "data")


@dataclass(slots=True)
class _InFlight:
    """A message between its MAIL FROM and its outcome."""

    message: OutgoingMessage
    mail_accepted: bool = False
    outcome: Outcome | None = None
    body: bytes | None = None  # the message as DATA content, once prepared


@dataclass(frozen=True, slots=True)
class _Expected:
    """One reply the server owes us: to which command, for which message (None: RSET, dot)."""

    kind: _Kind
    flight: _InFlight | None = None


@dataclass(slots=True)
class _Round:
    """One write and the replies it is owed; collects the outcomes decided while reading."""

    chunks: list[bytes] = field(default_factory=list)
    expected: list[_Expected] = field(default_factory=list)
    outcomes: list[Outcome] = field(default_factory=list)


class SmtpSession:
    """Sends messages over one connected SMTP client; see the module docstring.

    ``submit`` returns the outcomes it learnt (with pipelining, usually the previous message's);
    ``flush`` sends the message still held and returns the rest. Call ``flush`` after the last
    message, and before handing the client to anything else. Not thread-safe: one per thread.
    """

    def __init__(
        self,
        client: smtplib.SMTP,
        *,
        pipelining: bool = True,
        timeout: float | None = None,
    ) -> None:
        client.ehlo_or_helo_if_needed()
        if client.sock is None:
            raise smtplib.SMTPServerDisconnected("the SMTP client is not connected")
        self.client = client
        self._sock: socket.socket = client.sock
        if timeout is not None or self._sock.gettimeout() is None:
            self._sock.settimeout(timeout or DEFAULT_TIMEOUT_SECONDS)
        with contextlib.suppress(OSError):  # whole groups go out at once: Nagle only delays
            self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        esmtp = bool(client.does_esmtp)
        self.pipelining = pipelining and esmtp and client.has_extn("pipelining")
        self._size = esmtp and client.has_extn("size")
        self._smtputf8 = esmtp and client.has_extn("smtputf8")
        self._8bitmime = esmtp and client.has_extn("8bitmime")
        self._held: _Round = _Round()  # a body (or a lone dot) owed to the server, not yet sent
        self._rset_needed = False  # a transaction is open that no end of data closed
        self.closed_reason: str | None = None

    @property
    def open(self) -> bool:
        """False once the connection was lost or closed by the server: make a new session."""
        return self.closed_reason is None

    @property
    def offers_smtputf8(self) -> bool:
        """The server takes SMTPUTF8 (RFC 6531) messages."""
        return self._smtputf8

    def send_all(self, messages: Iterable[OutgoingMessage]) -> Iterator[Outcome]:
        """Each message's outcome, as they become known; flushes after the last message."""
        for message in messages:
            yield from self.submit(message)
        yield from self.flush()

    def submit(self, message: OutgoingMessage) -> list[Outcome]:
        """Start sending ``message``; returns the outcomes that became known meanwhile."""
        problem = self._local_problem(message)
        if problem is not None:
            return [Refused(message.id, None, problem, "local")]
        if not self.open:
            return [NotSent(message.id, f"not sent: {self.closed_reason}")]
        flight = _InFlight(message)
        commands = self._commands(message)
        if self.pipelining:
            round_ = self._take_held()
            if self._rset_needed:
                round_.chunks.append(b"RSET\r\n")
                round_.expected.append(_Expected("rset"))
                self._rset_needed = False
            for kind, command in zip(_GROUP, commands, strict=True):
                round_.chunks.append(command)
                round_.expected.append(_Expected(kind, flight))
            return self._exchange(round_, prepare=flight)
        outcomes: list[Outcome] = []
        if self._rset_needed:
            self._rset_needed = False
            outcomes += self._exchange(_Round([b"RSET\r\n"], [_Expected("rset")]))
        for kind, command in zip(_GROUP, commands, strict=True):
            if not self.open:
                outcomes.append(NotSent(message.id, f"not sent: {self.closed_reason}"))
                return outcomes
            outcomes += self._exchange(_Round([command], [_Expected(kind, flight)]))
            if flight.outcome is not None:
                return outcomes
        return outcomes + self.flush()

    def flush(self) -> list[Outcome]:
        """Send the body still held (if any) and return its outcome."""
        round_ = self._take_held()
        if not round_.chunks:
            return []
        return self._exchange(round_)

    # -- writing ---------------------------------------------------------------------------
    def _local_problem(self, message: OutgoingMessage) -> str | None:
        """Why this message cannot be written as SMTP commands here, or None."""
        for role, address in (("sender", message.sender), ("recipient", message.recipient)):
            if not _NOT_ON_COMMAND_LINE.isdisjoint(address):
                return f"the {role} address contains a line break or NUL"
            if _breaks_the_path(address):
                return f"the {role} address has '<', '>' or '\"' outside a quoted local part"
            if not address.isascii() and not message.smtputf8:
                return f"the {role} address is not ASCII and SMTPUTF8 was not requested"
        if not message.recipient:
            return "the recipient address is empty"
        if message.smtputf8 and not self._smtputf8:
            return "the address needs SMTPUTF8, which the SMTP server does not offer"
        longest = max(len(message.sender.encode()), len(message.recipient.encode()))
        if longest + 60 > MAX_COMMAND_OCTETS:  # room for the verb and the parameters
            return "the address is too long for an SMTP command"
        return None

    def _commands(self, message: OutgoingMessage) -> tuple[bytes, bytes, bytes]:
        params = f" SIZE={len(message.data)}" if self._size else ""
        if message.smtputf8:  # UTF-8 headers are 8-bit content too
            params += " SMTPUTF8" + (" BODY=8BITMIME" if self._8bitmime else "")
        encoding = "utf-8" if message.smtputf8 else "ascii"
        return (
            f"MAIL FROM:<{message.sender}>{params}\r\n".encode(encoding),
            f"RCPT TO:<{message.recipient}>\r\n".encode(encoding),
            b"DATA\r\n",
        )

    def _take_held(self) -> _Round:
        held, self._held = self._held, _Round()
        return held

    # -- one write, then its replies in order -------------------------------------------------
    def _exchange(self, round_: _Round, *, prepare: _InFlight | None = None) -> list[Outcome]:
        """Write the round, then read its replies; ``prepare``'s body is built meanwhile."""
        try:
            self._sock.sendall(b"".join(round_.chunks))
        except OSError as exc:
            self._lose(f"connection lost while sending: {_describe(exc)}")
            return self._unconfirm(round_, 0)
        if prepare is not None:  # while the commands travel: off the round trip's critical path
            prepare.body = wire_body(prepare.message.data, crlf=prepare.message.crlf)
        for index, expected in enumerate(round_.expected):
            try:
                code, raw = self.client.getreply()
            except (OSError, smtplib.SMTPException) as exc:
                self._lose(f"connection lost: {_describe(exc)}")
                return self._unconfirm(round_, index)
            text = _reply_text(raw)
            if not self._interpret(expected, code, text, round_):
                return self._unconfirm(round_, index + 1)
        return round_.outcomes

    def _interpret(self, expected: _Expected, code: int, text: str, round_: _Round) -> bool:
        """Apply one reply; False when the connection is over (the rest stays unconfirmed)."""
        flight = expected.flight
        kind = expected.kind
        if flight is None:  # RSET, or the lone dot after a DATA that should have failed
            if code == 421 or not 200 <= code < 600:
                return self._closing(f"{kind} answered {code} {text}")
            if code >= 400:
                log.debug("the SMTP server answered %s %s to %s", code, text, kind)
            return True
        decided = flight.outcome is not None
        if kind == "data" and code == 354:
            if decided:  # the server accepts DATA after refusing the sender or every recipient
                self._held.chunks.append(b".\r\n")
                self._held.expected.append(_Expected("dot"))
            else:
                body = flight.body
                if body is None:
                    body = wire_body(flight.message.data, crlf=flight.message.crlf)
                flight.body = None
                self._held.chunks.append(body)
                self._held.expected.append(_Expected("end", flight))
            return True
        success = 200 <= code < 300 and kind != "data"
        if success and kind == "mail":
            flight.mail_accepted = True
        if success and kind == "end" and not decided:
            self._decide(flight, Accepted(flight.message.id, code, text), round_)
        if success:
            return True
        if not 400 <= code < 600:  # out of step with the server: nothing after it is sure
            reason = f"unexpected reply {code} {text} to {kind}"
            if not decided:
                self._decide(flight, Unconfirmed(flight.message.id, reason), round_)
            return self._closing(reason)
        if not decided:
            self._decide(flight, _refusal(flight.message.id, kind, code, text), round_)
        if kind != "end" and flight.mail_accepted and (kind == "data" or not self.pipelining):
            self._rset_needed = True  # the transaction stays open until RSET
        if code == 421:
            return self._closing(f"the server closed the connection: {code} {text}")
        return True

    def _decide(self, flight: _InFlight, outcome: Outcome, round_: _Round) -> None:
        flight.outcome = outcome
        round_.outcomes.append(outcome)

    def _closing(self, reason: str) -> bool:
        self._lose(reason)
        return False

    def _lose(self, reason: str) -> None:
        """The connection is over: close it without QUIT; what was held is lost with it."""
        if self.closed_reason is None:
            self.closed_reason = reason
        self.client.close()

    def _unconfirm(self, round_: _Round, start: int) -> list[Outcome]:
        """Every message of this round from ``start`` on (and held) without an outcome: those
        whose end of data was written are unconfirmed, the others were not sent."""
        reason = self.closed_reason or "connection lost"
        written = [(e, e.kind == "end") for e in round_.expected[start:]]
        held = [(e, False) for e in self._take_held().expected]  # bodies that never left
        for expected, sent in [*written, *held]:
            flight = expected.flight
            if flight is not None and flight.outcome is None:
                kind = Unconfirmed if sent else NotSent
                self._decide(flight, kind(flight.message.id, reason), round_)
        return round_.outcomes


def _breaks_the_path(address: str) -> bool:
    """A '<' or '>' that would end ``<address>`` early (the server would read another
    address), or a quote that is not one quoted local part. Inside a quoted local part they
    are plain characters (RFC 5321 4.1.2: ``"a>b"@example.org`` is one mailbox)."""
    if "<" not in address and ">" not in address and '"' not in address:
        return False
    if not address.startswith('"'):
        return True
    i = 1
    while i < len(address) and address[i] != '"':
        i += 2 if address[i] == "\\" else 1  # a quoted pair: the next character is literal
    domain = address[i + 1 :]
    return i >= len(address) or not domain.startswith("@") or not _PATH_BREAKERS.isdisjoint(domain)


def _refusal(message_id: int, kind: _Kind, code: int, text: str) -> Refused | Deferred:
    """5xx to RCPT, DATA, the end of data (or 552, too big, to MAIL) is for good."""
    stage = cast(Stage, kind)  # only MAIL, RCPT, DATA and the end of data carry a message
    if code >= 500 and (kind != "mail" or code == 552):
        return Refused(message_id, code, text, stage)
    return Deferred(message_id, code, text, stage)


def wire_body(data: bytes, *, crlf: bool = False) -> bytes:
    """``data`` as DATA content: CRLF line ends, dot-stuffed, ending with CRLF ``.`` CRLF.

    ``crlf``: ``data`` is known to have CRLF line ends only; otherwise they are checked.
    """
    pairs = 0 if crlf else data.count(b"\r\n")
    if not crlf and (data.count(b"\n") != pairs or data.count(b"\r") != pairs):
        data = _EOL.sub(b"\r\n", data)  # a bare CR or LF never goes on the wire
    stuffed = data.replace(b"\n.", b"\n..")
    if stuffed[:1] == b".":
        stuffed = b"." + stuffed
    return stuffed + (b".\r\n" if stuffed[-2:] == b"\r\n" else b"\r\n.\r\n")


def _reply_text(raw: bytes) -> str:
    """A reply as one printable line: multi-line replies joined, control characters dropped."""
    text = " ".join(raw.decode("utf-8", "replace").split())
    return _CONTROL.sub("", text)[:MAX_REPLY_CHARS]


def _describe(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "timed out"
    text = str(exc) or type(exc).__name__
    return "timed out" if text.endswith("timed out") else text
