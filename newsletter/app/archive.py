"""The archive: the digests that were sent, as anyone may read them again.

An archived digest shows nobody's data: its personal fields get neutral values (no name, no
address, no token) and its unsubscribe link leads to the subscribe page.

**"View in browser".** A digest is rendered before its row exists, so its id is not known
yet; the link names a random per-digest *archive key* instead, made with the digest and
stored with it (``/archive/d/<key>`` redirects to ``/archive/<id>``). The link is then an
ordinary value of the render stage, the same for every recipient: it is counted exactly by
the size guarantee, needs no per-message work, and is not a personal field the template
checks would restrict (the template may test it: it is None when the archive is private).
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass

from newsletter.app.context import Context
from newsletter.config import Settings
from newsletter.message import fill_tokens
from newsletter.models import DigestState, MailingKind
from newsletter.personalization import TokenSet
from newsletter.store import digest_reports
from newsletter.store import digests as digest_rows

MAX_DIGEST_ID = 2**31 - 1  # ids are INTEGER (32 bits on PostgreSQL): a larger one is no digest
ARCHIVE_KEY_PATH = "/archive/d/"
_ARCHIVE_KEY = re.compile(r"[A-Za-z0-9_-]{16}")
UNSENT_ARCHIVE_KEY = "preview-not-sent"  # in previews and test copies: no digest has it


def new_archive_key() -> str:
    """A fresh random archive key (96 bits, 16 URL-safe characters)."""
    return secrets.token_urlsafe(12)


def is_archive_key(value: str) -> bool:
    return _ARCHIVE_KEY.fullmatch(value) is not None


def view_in_browser_url(settings: Settings, archive_key: str) -> str | None:
    """The "View in browser" link for a digest; None when the archive is not public."""
    if not settings.web.public_archive:
        return None
    return f"{settings.web.base_url}{ARCHIVE_KEY_PATH}{archive_key}"


def neutral_values(settings: Settings) -> dict[str, str]:
    """Personal fields of nobody in particular (attributes stay empty)."""
    return {
        "name": "reader",
        "email": "your email address",
        "unsubscribe_url": f"{settings.web.base_url}/subscribe",
    }


def sent_digests(ctx: Context) -> list[digest_rows.DigestSummary]:
    """Every sent digest, newest first, without its bodies."""
    with ctx.store.atomic() as conn:
        return digest_rows.list_digests(conn, sent_only=True)


@dataclass(frozen=True)
class ArchivedDigest:
    """A sent digest and its HTML with the personal fields of nobody in particular."""

    digest: digest_rows.StoredDigest
    html: str


def archived_digest(ctx: Context, digest_id: int) -> ArchivedDigest | None:
    """The sent digest ``digest_id``; None when there is no such digest or it was not sent."""
    if not 0 < digest_id <= MAX_DIGEST_ID:
        return None
    with ctx.store.atomic() as conn:
        digest = digest_rows.get_digest(conn, digest_id)
    if digest is None or digest.state is not DigestState.SENT:
        return None
    if digest.kind is not MailingKind.DIGEST:  # a confirmation email is nobody's archive
        return None
    tokens = TokenSet(nonce=digest.token_nonce)
    html = fill_tokens(digest.html, tokens, neutral_values(ctx.settings), escape=True)
    return ArchivedDigest(digest, html)


def digest_for_archive_key(ctx: Context, archive_key: str) -> int | None:
    """The id of the digest a "View in browser" link names, if there is one."""
    if not is_archive_key(archive_key):
        return None
    with ctx.store.atomic() as conn:
        return digest_rows.digest_id_for_archive_key(conn, archive_key)


@dataclass(frozen=True)
class FeedEntry:
    """One sent digest in the archive's Atom feed: what it was and what it carried."""

    digest: digest_rows.DigestSummary
    articles: list[digest_reports.CarriedArticle]


def feed_entries(ctx: Context, *, limit: int = 20) -> list[FeedEntry]:
    """The newest sent digests for the Atom feed, with their articles."""
    with ctx.store.atomic() as conn:
        newest = digest_rows.list_digests(conn, sent_only=True)[:limit]
        return [FeedEntry(d, digest_reports.digest_articles_of(conn, d.id)) for d in newest]
