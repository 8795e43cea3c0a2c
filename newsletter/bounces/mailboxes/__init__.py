"""Readers for the bounce mailbox: a Maildir on disk or an IMAP folder.

    with open_mailbox(settings_url, password=password) as reader:
        for message in reader.new_messages():
            record(message.key, classify(message.raw))   # idempotent, committed
            reader.done(message)                          # only after the commit

Each message is offered until ``done`` is called for it, so a crash between reading and
``done`` offers it again; the caller makes recording idempotent by ``message.key``.
"""

from __future__ import annotations

import ssl

from newsletter.bounces.mailboxes.base import MailboxMessage, MailboxReader
from newsletter.bounces.mailboxes.imap import PROCESSED_KEYWORD, ImapReader
from newsletter.bounces.mailboxes.location import (
    ImapLocation,
    MaildirLocation,
    parse_mailbox_url,
)
from newsletter.bounces.mailboxes.maildir import MaildirReader
from newsletter.errors import ConfigError, MailboxError

__all__ = [
    "PROCESSED_KEYWORD",
    "ImapLocation",
    "ImapReader",
    "MailboxError",
    "MailboxMessage",
    "MailboxReader",
    "MaildirLocation",
    "MaildirReader",
    "open_mailbox",
    "parse_mailbox_url",
]


def open_mailbox(
    location: str | MaildirLocation | ImapLocation,
    *,
    password: str | None = None,
    ssl_context: ssl.SSLContext | None = None,
    timeout: float = 30.0,
) -> MailboxReader:
    """A reader for a ``[bounces] mailbox`` URL (or parsed location); IMAP needs ``password``."""
    where = parse_mailbox_url(location) if isinstance(location, str) else location
    if isinstance(where, MaildirLocation):
        return MaildirReader(where.path)
    if not password:
        raise ConfigError(
            "[bounces] mailbox is an IMAP folder: set its password in NEWSLETTER_BOUNCES__PASSWORD"
        )
    return ImapReader(where, password, ssl_context=ssl_context, timeout=timeout)
