"""The ``[bounces] mailbox`` setting: ``maildir:PATH``, ``imaps://user@host[:port]/FOLDER``
or ``imap://...`` (plain connection upgraded with STARTTLS, never used without it).

The password never appears in the URL (it comes from ``NEWSLETTER_BOUNCES__PASSWORD``), and
error messages never repeat the URL, in case someone put one there anyway.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from urllib.parse import unquote, urlsplit

from newsletter.errors import ConfigError

KEY = "[bounces] mailbox"
_FORMS = "maildir:/path/to/Maildir, imaps://user@host[:port]/FOLDER or imap://user@host/FOLDER"


@dataclass(frozen=True)
class MaildirLocation:
    """A Maildir folder on disk (the one holding ``new/``, ``cur/`` and ``tmp/``)."""

    path: Path


@dataclass(frozen=True)
class ImapLocation:
    """An IMAP folder; ``tls`` is ``implicit`` (imaps, port 993) or ``starttls`` (port 143)."""

    host: str
    port: int
    user: str
    folder: str
    tls: Literal["implicit", "starttls"]


def parse_mailbox_url(url: str) -> MaildirLocation | ImapLocation:
    """The location named by a ``[bounces] mailbox`` value; ``ConfigError`` saying what is
    wrong (without repeating the value) otherwise."""
    scheme, colon, rest = url.strip().partition(":")
    scheme = scheme.lower()
    if not colon:
        raise ConfigError(f"{KEY}: expected {_FORMS}")
    if scheme == "maildir":
        path = rest[2:] if rest.startswith("///") else rest
        if not path or path.startswith("//"):
            raise ConfigError(
                f"{KEY}: give the Maildir folder's path, as in maildir:/var/mail/bounces"
            )
        try:
            return MaildirLocation(Path(path).expanduser())
        except RuntimeError:  # ~user that does not exist
            raise ConfigError(f"{KEY}: cannot expand '~' in the Maildir path") from None
    if scheme in ("imap", "imaps"):
        return _imap_location(url.strip(), scheme)
    raise ConfigError(f"{KEY}: unknown kind {scheme!r}; expected {_FORMS}")


def _imap_location(url: str, scheme: str) -> ImapLocation:
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise ConfigError(
            f"{KEY}: the {scheme} URL is malformed (check the host and port)"
        ) from None
    if parts.password is not None:
        raise ConfigError(
            f"{KEY}: do not put the password in the URL; set NEWSLETTER_BOUNCES__PASSWORD"
        )
    if not parts.username or not parts.hostname:
        raise ConfigError(f"{KEY}: the {scheme} URL needs a user and a host: {_FORMS}")
    if parts.query or parts.fragment:
        raise ConfigError(f"{KEY}: the {scheme} URL takes no ?query or #fragment")
    folder = unquote(parts.path.removeprefix("/")) or "INBOX"
    implicit = scheme == "imaps"
    return ImapLocation(
        host=parts.hostname,
        port=port or (993 if implicit else 143),
        user=unquote(parts.username),
        folder=folder,
        tls="implicit" if implicit else "starttls",
    )
