"""This sender's part of the SMTP limits, kept in step with the throttle and the other senders.

Several engines may send one outbox at once (``newsletter worker``, ``send-now``). ``share``
(the senders' heartbeats, :mod:`newsletter.delivery.shares`) gives this engine its part of
``connections`` and ``max_per_second``, so that all of them together stay within the
configured ones; this sender's throttle takes that part as its ceilings.

A reply asking to slow down (421, or a 4xx saying "rate limit", "too many connections", ...)
halves the sending rate and the number of connections for the rest of the run; after
``quiet_seconds`` without one, they creep back up (:mod:`newsletter.delivery.throttle`).
``max_per_second`` and ``connections`` stay ceilings. Each change is one log line.
"""

from __future__ import annotations

import logging
import queue
from collections.abc import Callable

from newsletter.config import SmtpSettings
from newsletter.delivery.shares import Share
from newsletter.delivery.throttle import AdaptiveThrottle, ThrottleChange
from newsletter.delivery.worker import ConnectionGate
from newsletter.models import Recipient

log = logging.getLogger("newsletter.delivery.engine")  # its lines read as the engine's


class SenderLimits:
    """How many connections this sender may open and how many rows it may hold in flight.

    ``gate`` lets the workers' connections open; ``inbox`` is theirs too: an empty chunk wakes
    an idle connection so that one given up hangs up now, not when it next has work.
    """

    def __init__(
        self,
        smtp: SmtpSettings,
        throttle: AdaptiveThrottle,
        inbox: queue.SimpleQueue[list[Recipient] | None],
        share: Callable[[], Share | None] | None,
    ) -> None:
        self.smtp = smtp
        self.throttle = throttle
        self.inbox = inbox
        self.share_source = share
        self.label: object = None  # what log lines name (the digest id)
        self.gate = ConnectionGate(throttle.limits().connections)
        self.max_claimed = 2 * smtp.connections * smtp.claim_batch  # the in-flight bound
        self.no_share = False  # more senders than connections, and none is ours: wait
        self._share: Share | None = None
        self._sharing = False  # the throttle's ceilings are being set to this sender's share
        self._allowed = throttle.limits().connections  # what the gate was last set to
        throttle.add_listener(self._throttle_changed)

    def _throttle_changed(self, change: ThrottleChange) -> None:
        """One log line per change; the gate follows the connection limit."""
        self._allow(0 if self.no_share else change.after.connections)
        # Slower because another sender took its share is no trouble; a server's reply is.
        level = logging.WARNING if change.slower and not self._sharing else logging.INFO
        log.log(level, "digest %s: %s", self.label, change.describe())

    def _allow(self, connections: int) -> None:
        """Let this many connections be open. Fewer than before: the connections over it hang up
        after their chunk, and idle ones are woken (an empty chunk) to hang up now, so the
        connections this sender gave up are closed soon, not when it next has work."""
        before = self._allowed
        self._allowed = connections
        self.gate.set_allowed(connections)
        for _ in range(max(0, before - connections)):
            self.inbox.put([])

    def follow(self) -> None:
        """Take this sender's part of the limits when it changed (another sender came or went)."""
        if self.share_source is None:
            return
        share = self.share_source()
        if share == self._share:
            return
        self._share = share
        if share is not None and share.connections == 0:
            if not self.no_share:
                log.info(
                    "digest %s: %d senders share %d connections: none is free for this one, "
                    "which waits for one",
                    self.label,
                    share.senders,
                    self.smtp.connections,
                )
            self.no_share = True
            self._allow(0)
            return
        self.no_share = False
        per_second = self.smtp.max_per_second if share is None else share.per_second
        connections = self.smtp.connections if share is None else share.connections
        self.max_claimed = 2 * connections * self.smtp.claim_batch  # the bound, for our share
        senders = 1 if share is None else share.senders
        self._sharing = True
        try:
            self.throttle.set_ceiling(
                per_second,
                connections,
                f"{senders} sender{'s' if senders > 1 else ''} share [smtp] connections and "
                "max_per_second",
            )
        finally:
            self._sharing = False
        self._allow(self.throttle.limits().connections)
