"""One exception tree. Every message is written for the person running the tool.

The CLI prints ``str(error)`` on one line and exits with ``error.exit_code``.
"""

from __future__ import annotations


class NewsletterError(Exception):
    """Base class: a problem the user can fix, with a message saying what to check."""

    exit_code = 1


class ConfigError(NewsletterError):
    """A configuration file or environment variable is wrong or missing."""

    exit_code = 2


class UsageError(NewsletterError):
    """A command-line argument or input file given by the user is wrong."""

    exit_code = 2


class ArticleError(NewsletterError):
    """One article file or feed entry cannot be read; the others still go out."""


class SourceError(NewsletterError):
    """A whole source (a folder or a feed) cannot be read."""


class StoreError(NewsletterError):
    """The database cannot be opened or is in an unexpected state."""


class TemplateError(NewsletterError):
    """A digest template is missing or fails to render."""


class SubscriberError(NewsletterError):
    """A subscriber address or record is invalid."""


class DeliveryError(NewsletterError):
    """Mail cannot be handed to the SMTP server (unreachable, bad credentials, ...)."""

    exit_code = 3


class DeliveryPaused(DeliveryError):
    """Too many consecutive failures: the send stopped and can be resumed later."""


class SendInProgress(NewsletterError):
    """Another process holds the send lock on this database."""

    exit_code = 4


class MailboxError(NewsletterError):
    """The bounce mailbox cannot be read (missing folder, server unreachable, login refused)."""

    exit_code = 3


class BounceCheckInProgress(NewsletterError):
    """Another process is reading the bounce mailbox of this database."""

    exit_code = 4


class TokenError(NewsletterError):
    """A signed link token is malformed, tampered with, foreign or expired."""
