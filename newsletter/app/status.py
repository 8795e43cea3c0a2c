"""What was sent: recent digests, their deliveries per state and why deliveries failed."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from newsletter.app.context import Context
from newsletter.store import digests as digest_rows


@dataclass(frozen=True)
class DigestStatus:
    """One digest for ``newsletter status``: deliveries per state, the commonest failures."""

    id: int
    subject: str
    state: str
    slot: str | None
    created_at: datetime
    counts: dict[str, int]
    failures: list[tuple[str, int]]


def digest_status(ctx: Context, *, limit: int = 10) -> list[DigestStatus]:
    """Recent digests with their delivery counts per state and the reasons of failures."""
    with ctx.store.atomic() as conn:
        recent = digest_rows.recent_digests(conn, limit=limit)
        counts = digest_rows.delivery_counts(conn, [d.id for d in recent])
        return [
            DigestStatus(
                d.id,
                d.subject,
                d.state.value,
                d.slot,
                d.created_at,
                counts[d.id],
                digest_rows.failure_reasons(conn, d.id) if counts[d.id].get("failed") else [],
            )
            for d in recent
        ]


def digest_failure_reasons(ctx: Context, digest_id: int) -> list[tuple[str, int]]:
    """The most common reasons the deliveries of a digest failed, with their counts."""
    with ctx.store.atomic() as conn:
        return digest_rows.failure_reasons(conn, digest_id)
