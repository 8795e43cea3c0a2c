"""Resending a digest to the recipients whose delivery failed, once the cause is fixed."""

from __future__ import annotations

import threading
from dataclasses import dataclass

from newsletter.app.context import Context
from newsletter.app.send import checked_connector, deliver_digest
from newsletter.app.send_lock import send_lock
from newsletter.app.senders import sender_presence
from newsletter.delivery.report import Progress, SendReport
from newsletter.errors import UsageError
from newsletter.models import DigestState, MailingKind
from newsletter.store import digests as digest_rows
from newsletter.store import outbox


@dataclass(frozen=True)
class ResendSummary:
    """What ``resend_failed`` did: how many deliveries it queued again, and the send."""

    digest_id: int
    requeued: int
    report: SendReport | None  # None: nothing to send


def resend_failed(
    ctx: Context,
    digest_id: int,
    *,
    stop: threading.Event | None = None,
    progress: Progress | None = None,
) -> ResendSummary:
    """Queue the failed deliveries of a digest again, once each, and deliver them.

    Each failed delivery of a subscriber who is still active goes back to ``pending`` with its
    attempts reset, in one committed UPDATE before anything is sent; the digest is then sent
    like an unfinished one (resumable the same way, under the same lock). Running it again, or
    twice at the same time, queues nothing twice: only rows still ``failed`` move. The digest
    ends ``sent`` once anybody received it, else ``failed`` again.
    """
    with send_lock(ctx) as lock:
        with ctx.store.atomic() as conn:
            digest = digest_rows.get_digest(conn, digest_id)
        if digest is None or digest.kind is not MailingKind.DIGEST:
            raise UsageError(f"there is no digest {digest_id} (newsletter status lists them)")
        connector = checked_connector(ctx)
        try:
            with ctx.store.atomic() as conn:
                requeued = outbox.requeue_failed(conn, digest_id, now=ctx.clock())
                if requeued:
                    digest_rows.set_digest_state(
                        conn, digest_id, DigestState.SENDING, now=ctx.clock()
                    )
            unfinished = digest.state in (DigestState.SENDING, DigestState.PAUSED)
            if not (requeued or unfinished):
                return ResendSummary(digest_id, 0, None)
            with sender_presence(ctx, "resend") as presence:  # shares the SMTP limits
                report = deliver_digest(
                    ctx,
                    digest_id,
                    lock=lock,
                    stop=stop,
                    progress=progress,
                    connector=connector,
                    presence=presence,
                )
        finally:
            connector.close()
    return ResendSummary(digest_id, requeued, report)
