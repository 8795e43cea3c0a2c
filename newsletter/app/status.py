"""What was sent: recent digests, their deliveries per state, why deliveries failed, and
their bounce and complaint rates."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from newsletter.app.context import Context
from newsletter.models import HARD_BOUNCE_CODES
from newsletter.store import bounce_reports as report_rows
from newsletter.store import digests as digest_rows


@dataclass(frozen=True)
class DigestStatus:
    """One digest for ``newsletter status``: deliveries per state, the commonest failures,
    and how many recipients bounced for good or complained.

    ``hard_bounces`` counts the addresses refused at SMTP time as gone and those a bounce
    report said so later (``bounces check``); ``complaints`` the spam reports.
    """

    id: int
    subject: str
    state: str
    slot: str | None
    created_at: datetime
    counts: dict[str, int]
    failures: list[tuple[str, int]]
    hard_bounces: int = 0
    complaints: int = 0

    @property
    def attempted(self) -> int:
        """Deliveries handed to the server, accepted or refused."""
        return self.counts.get("sent", 0) + self.counts.get("failed", 0)

    @property
    def bounce_rate(self) -> float | None:
        """Hard bounces per delivery attempted (None: nothing attempted yet)."""
        return self.hard_bounces / self.attempted if self.attempted else None

    @property
    def complaint_rate(self) -> float | None:
        """Complaints per delivery accepted, as mailbox providers count them (Gmail and
        Yahoo want it below 0.3%); None when nothing was accepted yet."""
        sent = self.counts.get("sent", 0)
        return self.complaints / sent if sent else None


def digest_status(ctx: Context, *, limit: int = 10) -> list[DigestStatus]:
    """Recent digests with their delivery counts per state, the reasons of failures and
    their bounce and complaint counts."""
    with ctx.store.atomic() as conn:
        recent = digest_rows.recent_digests(conn, limit=limit)
        ids = [d.id for d in recent]
        counts = digest_rows.delivery_counts(conn, ids)
        refused = report_rows.refused_at_smtp_time(conn, ids, HARD_BOUNCE_CODES)
        reported = report_rows.outcomes_per_digest(conn, ids)
        return [
            DigestStatus(
                d.id,
                d.subject,
                d.state.value,
                d.slot,
                d.created_at,
                counts[d.id],
                digest_rows.failure_reasons(conn, d.id) if counts[d.id].get("failed") else [],
                hard_bounces=refused[d.id] + reported[d.id].get("hard", 0),
                complaints=reported[d.id].get("complaint", 0),
            )
            for d in recent
        ]


def digest_failure_reasons(ctx: Context, digest_id: int) -> list[tuple[str, int]]:
    """The most common reasons the deliveries of a digest failed, with their counts."""
    with ctx.store.atomic() as conn:
        return digest_rows.failure_reasons(conn, digest_id)
