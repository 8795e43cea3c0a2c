"""Opening SMTP connections and sorting SMTP errors into permanent and temporary."""

from __future__ import annotations

import re
import smtplib
import socket
import ssl
import threading
import time
from dataclasses import dataclass

from newsletter.config import SmtpSettings
from newsletter.errors import DeliveryError

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
IDLE_CHECK_SECONDS = 10.0  # a connection idle this long is checked with NOOP before reuse


class ConnectFailed(DeliveryError):
    """No usable connection (unreachable, refused, bad login); ``code`` and ``text`` are the
    server's reply when it gave one (a ``421 too many connections`` greeting, say)."""

    def __init__(self, message: str, code: int | None = None, text: str = "") -> None:
        super().__init__(message)
        self.code = code
        self.text = text


def _where(settings: SmtpSettings) -> str:
    return f"{settings.host}:{settings.port}"


def connect(settings: SmtpSettings) -> smtplib.SMTP:
    """An authenticated SMTP connection, or ``DeliveryError`` with one line saying what to check."""
    try:
        if settings.security == "tls":
            client: smtplib.SMTP = smtplib.SMTP_SSL(
                settings.host,
                settings.port,
                timeout=settings.timeout,
                context=ssl.create_default_context(),
            )
        else:
            client = smtplib.SMTP(settings.host, settings.port, timeout=settings.timeout)
        client.ehlo()
        if settings.security == "starttls":
            client.starttls(context=ssl.create_default_context())
            client.ehlo()
    except (OSError, smtplib.SMTPException) as exc:
        raise ConnectFailed(
            f"cannot connect to the SMTP server {_where(settings)}: {_describe(exc)} "
            "(check [smtp] host, port and security)",
            *_reply(exc),
        ) from exc
    if settings.username:
        password = settings.password.get_secret_value() if settings.password else ""
        try:
            client.login(settings.username, password)
        except smtplib.SMTPAuthenticationError as exc:
            close_quietly(client)
            raise ConnectFailed(
                f"the SMTP server {_where(settings)} rejected the login for {settings.username!r}: "
                f"{exc.smtp_code} {_text(exc.smtp_error)} "
                "(check [smtp] username and password, or NEWSLETTER_SMTP__PASSWORD)"
            ) from exc
        except (OSError, smtplib.SMTPException) as exc:
            close_quietly(client)
            raise ConnectFailed(
                f"cannot log in to {_where(settings)}: {_describe(exc)}", *_reply(exc)
            ) from exc
    return client


def is_alive(client: smtplib.SMTP) -> bool:
    """NOOP answered 250: the server has not dropped this (idle) connection."""
    try:
        return client.noop()[0] == 250
    except (OSError, smtplib.SMTPException):
        return False


class SmtpConnector:
    """Opens the connections of one send: ``open`` gives a new connection each time.

    ``check`` opens the first one at once, so a wrong host or password stops the send before
    any row is touched; that connection is not wasted, the first ``open`` returns it (checked
    with NOOP if it sat idle). ``close`` closes it if nobody took it. Thread-safe.
    """

    def __init__(self, settings: SmtpSettings) -> None:
        self.settings = settings
        self._spare: smtplib.SMTP | None = None
        self._spare_since = 0.0
        self._lock = threading.Lock()

    def check(self) -> None:
        """Connect (and log in) now; ``ConnectFailed`` with one line saying what to check."""
        with self._lock:
            if self._spare is None:
                self._spare = connect(self.settings)
                self._spare_since = time.monotonic()

    def open(self) -> smtplib.SMTP:
        """A connected, greeted and authenticated client; ``ConnectFailed`` if there is none."""
        with self._lock:
            spare, self._spare = self._spare, None
            idle = time.monotonic() - self._spare_since
        if spare is not None:
            if idle <= IDLE_CHECK_SECONDS or is_alive(spare):
                return spare
            drop(spare)
        return connect(self.settings)

    def close(self) -> None:
        """Close the connection ``check`` opened if no ``open`` took it."""
        with self._lock:
            spare, self._spare = self._spare, None
        close_quietly(spare)


class SmtpUtf8Unsupported(smtplib.SMTPNotSupportedError):
    """The message needs SMTPUTF8 (a non-ASCII local part) and the server does not offer it."""


def send_message(
    client: smtplib.SMTP, sender: str, recipient: str, data: bytes, *, smtputf8: bool = False
) -> None:
    """One SMTP transaction for one recipient: what ``client.sendmail`` does, with less work.

    It raises what ``sendmail`` raises (``SMTPSenderRefused``, ``SMTPRecipientsRefused``,
    ``SMTPDataError``, ``SMTPServerDisconnected``, ``OSError``) and leaves the connection
    ready for the next message (RSET) or closed (421). The savings, per message: addresses
    are written as they are (they were validated on the way in) instead of being parsed again,
    and dot-stuffing is a byte replace instead of a regular expression over the whole message
    (the same transformation as smtplib's: a dot at the start of any line is doubled).

    ``smtputf8``: the addresses or headers are UTF-8 (RFC 6531). Sent with the SMTPUTF8
    parameter when the server offers it; otherwise ``SmtpUtf8Unsupported`` before any command.
    """
    client.ehlo_or_helo_if_needed()
    options = ""
    if smtputf8:
        if not client.has_extn("smtputf8"):
            raise SmtpUtf8Unsupported(smtputf8_refusal(recipient))
        options = " SMTPUTF8" + (" BODY=8BITMIME" if client.has_extn("8bitmime") else "")
    client.command_encoding = "utf-8" if smtputf8 else "ascii"
    if client.does_esmtp and client.has_extn("size"):
        options += f" SIZE={len(data)}"
    client.putcmd("mail", f"FROM:<{sender}>{options}")
    code, reply = client.getreply()
    if code != 250:
        _abort(client, code)
        raise smtplib.SMTPSenderRefused(code, reply, sender)
    client.putcmd("rcpt", f"TO:<{recipient}>")
    code, reply = client.getreply()
    if code not in (250, 251):
        _abort(client, code)
        raise smtplib.SMTPRecipientsRefused({recipient: (code, reply)})
    client.putcmd("data")
    code, reply = client.getreply()
    if code != 354:
        _abort(client, code)
        raise smtplib.SMTPDataError(code, reply)
    stuffed = data.replace(b"\n.", b"\n..")
    if stuffed[:1] == b".":
        stuffed = b"." + stuffed
    end = b".\r\n" if stuffed[-2:] == b"\r\n" else b"\r\n.\r\n"
    client.send(stuffed + end)
    code, reply = client.getreply()
    if code != 250:
        _abort(client, code)
        raise smtplib.SMTPDataError(code, reply)


def smtputf8_refusal(recipient: str) -> str:
    """Why a message to ``recipient`` (a non-ASCII local part) cannot go to this server."""
    return (
        f"the server does not offer SMTPUTF8, which the address {recipient!r} needs "
        "(its local part is not ASCII)"
    )


def _abort(client: smtplib.SMTP, code: int) -> None:
    """After a refusal: 421 means the server is closing; otherwise end the transaction."""
    if code == 421:
        client.close()
        return
    try:
        client.rset()
    except (OSError, smtplib.SMTPException):
        client.close()  # the next command reports the connection as lost


def close_quietly(client: smtplib.SMTP | None) -> None:
    """QUIT if the server still listens; a connection that is already gone is fine."""
    if client is None:
        return
    try:
        client.quit()
    except (OSError, smtplib.SMTPException):
        client.close()


def drop(client: smtplib.SMTP | None) -> None:
    """Close a connection that failed, without QUIT (it could hang until the timeout)."""
    if client is not None:
        client.close()


def _text(raw: bytes | str) -> str:
    """A server's reply as one line without control characters (it is shown and logged)."""
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)
    return _CONTROL.sub("", " ".join(text.split()))


def _reply(exc: BaseException) -> tuple[int | None, str]:
    """The server's reply carried by an smtplib error, if it carries one."""
    if isinstance(exc, smtplib.SMTPResponseException):
        return exc.smtp_code, _text(exc.smtp_error)[:500]
    return None, ""


def _describe(exc: BaseException) -> str:
    if isinstance(exc, smtplib.SMTPResponseException):
        return f"{exc.smtp_code} {_text(exc.smtp_error)}"
    if isinstance(exc, socket.timeout | TimeoutError):
        return "timed out"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, socket.gaierror):
        return "unknown host"
    return str(exc) or type(exc).__name__


@dataclass(frozen=True)
class SendFailure:
    """Why one message was not accepted. ``connection_lost``: reconnect before the next one."""

    permanent: bool
    reason: str
    connection_lost: bool


def classify(exc: BaseException, recipient: str) -> SendFailure:
    """Sort an exception from ``sendmail`` into permanent/temporary and connection state.

    Only a refusal that concerns the message or its recipient is permanent (5xx to RCPT or
    DATA). A refused sender (MAIL FROM) is a problem of our account or configuration, never
    the recipient's, so it stays temporary and counts towards pausing the send.
    """
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        code, message = exc.recipients.get(recipient, (450, b"recipient refused"))
        return SendFailure(code >= 500, f"{code} {_text(message)}", connection_lost=code == 421)
    if isinstance(exc, smtplib.SMTPSenderRefused):
        code = exc.smtp_code
        return SendFailure(
            False, f"sender refused: {_describe(exc)}", connection_lost=code == 421 or code < 400
        )
    if isinstance(exc, smtplib.SMTPNotSupportedError):
        return SendFailure(True, str(exc), connection_lost=False)
    if isinstance(exc, smtplib.SMTPServerDisconnected):
        return SendFailure(False, f"connection lost: {_describe(exc)}", connection_lost=True)
    if isinstance(exc, smtplib.SMTPResponseException):
        code = exc.smtp_code
        return SendFailure(code >= 500, _describe(exc), connection_lost=code == 421 or code < 400)
    return SendFailure(False, f"connection problem: {_describe(exc)}", connection_lost=True)
