"""An IMAP bounce mailbox: new messages are those without our keyword.

``done`` stores ``\\Seen`` and the ``$NewsletterProcessed`` keyword on the message, after the
caller recorded the result; messages are fetched with ``BODY.PEEK[]`` so reading alone marks
nothing, and an interrupted message is offered again on the next run. On a server that does
not allow keywords, ``\\Seen`` alone marks a message (then keep mail clients off the folder).

TLS always: ``imaps`` (implicit) or ``imap`` with STARTTLS, which is required. The password is
used for the login only: it is never logged, kept on the reader or put in an error message.
"""

from __future__ import annotations

import base64
import contextlib
import imaplib
import logging
import re
import ssl
from collections.abc import Iterator
from typing import Any

from newsletter.bounces.mailboxes.base import ClosesOnExit, MailboxMessage, first_message_id
from newsletter.bounces.mailboxes.location import ImapLocation
from newsletter.errors import MailboxError

log = logging.getLogger(__name__)

PROCESSED_KEYWORD = "$NewsletterProcessed"
_UID = re.compile(rb"\bUID (\d+)")
_NOT_PRINTABLE_ASCII = re.compile(r"[^\x20-\x7e]+")


class ImapReader(ClosesOnExit):
    """Reads one IMAP folder over TLS. Connects and logs in when created."""

    def __init__(
        self,
        location: ImapLocation,
        password: str,
        *,
        ssl_context: ssl.SSLContext | None = None,
        timeout: float = 30.0,
    ) -> None:
        self.location = location
        self._where = f"{location.host}:{location.port}"
        context = ssl_context or ssl.create_default_context()
        self._conn = self._connect(context, timeout)
        try:
            self._login(password)
            self._uidvalidity, self._keywords = self._select()
        except BaseException:
            self._drop()
            raise
        self._uids: dict[str, bytes] = {}  # key -> UID, for messages offered

    def new_messages(self) -> Iterator[MailboxMessage]:
        """The messages not marked processed, in UID (arrival) order."""
        criteria = ("NOT", "KEYWORD", PROCESSED_KEYWORD) if self._keywords else ("UNSEEN",)
        data = self._uid("search", "SEARCH", *criteria)
        uids = sorted({int(uid) for uid in b" ".join(d for d in data if d).split()})
        for uid in uids:
            raw = self._fetch(str(uid).encode())
            if raw is None:  # expunged since the search
                continue
            key = f"imap:{self.location.folder}:{self._uidvalidity}:{uid}"
            self._uids[key] = str(uid).encode()
            yield MailboxMessage(key, first_message_id(raw), raw)

    def done(self, message: MailboxMessage) -> None:
        """Flag the message processed on the server. Idempotent."""
        uid = self._uids.get(message.key)
        if uid is None:
            raise ValueError(f"{message.key} was not offered by this reader")
        flags = f"(\\Seen {PROCESSED_KEYWORD})" if self._keywords else "(\\Seen)"
        self._uid("store", "STORE", uid.decode(), "+FLAGS.SILENT", flags)

    def close(self) -> None:
        """Log out (quietly: the flags that matter are already stored)."""
        try:
            self._conn.logout()
        except (imaplib.IMAP4.error, OSError):
            self._drop()

    def _connect(self, context: ssl.SSLContext, timeout: float) -> imaplib.IMAP4:
        host, port = self.location.host, self.location.port
        try:
            if self.location.tls == "implicit":
                return imaplib.IMAP4_SSL(host, port, ssl_context=context, timeout=timeout)
            conn = imaplib.IMAP4(host, port, timeout=timeout)
        except (imaplib.IMAP4.error, OSError) as exc:
            raise MailboxError(
                f"cannot connect to IMAP server {self._where}: {_reason(exc)}"
            ) from exc
        try:
            if "STARTTLS" not in conn.capabilities:
                raise MailboxError(
                    f"IMAP server {self._where} does not offer STARTTLS; "
                    "use an imaps:// URL, the password is never sent in clear"
                )
            conn.starttls(ssl_context=context)
        except (imaplib.IMAP4.error, OSError) as exc:
            conn.shutdown()
            raise MailboxError(f"STARTTLS with {self._where} failed: {_reason(exc)}") from exc
        except MailboxError:
            conn.shutdown()
            raise
        return conn

    def _login(self, password: str) -> None:
        user = self.location.user
        try:
            if password.isascii() and user.isascii():
                self._conn.login(user, password)
            else:  # LOGIN is ASCII-only; AUTHENTICATE PLAIN carries UTF-8
                plain = f"\0{user}\0{password}".encode()
                self._conn.authenticate("PLAIN", lambda _challenge: plain)
        except (imaplib.IMAP4.error, OSError) as exc:
            reason = _reason(exc).replace(password, "***") if password else _reason(exc)
            raise MailboxError(
                f"IMAP login as {user!r} on {self._where} was refused ({reason}); "
                "check the user in [bounces] mailbox and NEWSLETTER_BOUNCES__PASSWORD"
            ) from None

    def _select(self) -> tuple[int, bool]:
        folder = self.location.folder
        try:
            typ, data = self._conn.select(_quoted(folder))
        except (imaplib.IMAP4.error, OSError) as exc:
            raise MailboxError(
                f"cannot open folder {folder!r} on {self._where}: {_reason(exc)}"
            ) from exc
        if typ != "OK":
            raise MailboxError(
                f"cannot open folder {folder!r} on {self._where}: {_text(data)}; "
                "check the folder in [bounces] mailbox"
            )
        _, validity = self._conn.response("UIDVALIDITY")
        _, permanent = self._conn.response("PERMANENTFLAGS")
        try:
            uidvalidity = int(validity[0]) if validity and validity[0] else 0
        except ValueError:
            uidvalidity = 0
        keywords = any(isinstance(f, bytes) and b"\\*" in f for f in permanent or [])
        if not keywords:
            log.warning(
                "IMAP folder %r does not allow keywords: marking messages \\Seen only", folder
            )
        return uidvalidity, keywords

    def _fetch(self, uid: bytes) -> bytes | None:
        data = self._uid("fetch", "FETCH", uid.decode(), "(BODY.PEEK[])")
        for item in data:
            if isinstance(item, tuple) and len(item) == 2 and _UID.search(item[0]):
                return bytes(item[1])
        return None

    def _uid(self, action: str, command: str, *args: str) -> list[Any]:
        """Run ``UID command args``; ``MailboxError`` unless the server says OK."""
        try:
            typ, data = self._conn.uid(command, *args)
        except (imaplib.IMAP4.error, OSError) as exc:
            raise MailboxError(f"IMAP {action} on {self._where} failed: {_reason(exc)}") from exc
        if typ != "OK":
            raise MailboxError(f"IMAP {action} on {self._where} failed: {_text(data)}")
        return list(data)

    def _drop(self) -> None:
        with contextlib.suppress(OSError):
            self._conn.shutdown()


def _quoted(folder: str) -> str:
    """An IMAP quoted string for a folder name (modified UTF-7 for non-ASCII, RFC 3501 5.1.3)."""
    encoded = _modified_utf7(folder)
    return '"' + encoded.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _modified_utf7(text: str) -> str:
    def encode(run: re.Match[str]) -> str:
        utf16 = run.group(0).encode("utf-16-be", "surrogatepass")
        return "&" + base64.b64encode(utf16).decode().rstrip("=").replace("/", ",") + "-"

    return _NOT_PRINTABLE_ASCII.sub(encode, text.replace("&", "&-"))


def _reason(exc: BaseException) -> str:
    """An exception as one line; imaplib's carry the server's reply as bytes."""
    text = _text(exc.args[0]) if len(exc.args) == 1 else str(exc)
    return " ".join(text.split()) or type(exc).__name__


def _text(data: object) -> str:
    if isinstance(data, list):
        return " ".join(_text(item) for item in data if item is not None)
    if isinstance(data, bytes):
        return data.decode("utf-8", "replace")
    return str(data)
