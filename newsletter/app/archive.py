"""The archive: the digests that were sent, as anyone may read them again."""

from __future__ import annotations

from dataclasses import dataclass

from newsletter.app.context import Context
from newsletter.message import fill_tokens
from newsletter.models import DigestState, MailingKind
from newsletter.personalization import TokenSet
from newsletter.store import digests as digest_rows

# Personal fields in archived digests: nobody in particular.
NEUTRAL_VALUES = {"name": "reader", "email": "", "unsubscribe_url": "#"}


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
    with ctx.store.atomic() as conn:
        digest = digest_rows.get_digest(conn, digest_id)
    if digest is None or digest.state is not DigestState.SENT:
        return None
    if digest.kind is not MailingKind.DIGEST:  # a confirmation email is nobody's archive
        return None
    tokens = TokenSet(nonce=digest.token_nonce)
    return ArchivedDigest(digest, fill_tokens(digest.html, tokens, NEUTRAL_VALUES, escape=True))
