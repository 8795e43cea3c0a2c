"""Each sender's share of ``[smtp] connections`` and ``max_per_second`` when several share them.

Senders (``newsletter worker`` processes, a ``send-now``) on one database each keep a row in
it with a heartbeat (:mod:`newsletter.app.senders`); the live rows, sorted by name, are the
order the connections are dealt in. With ``C`` connections and ``n`` senders, the sender at
rank ``r`` gets ``C // n`` connections, one more if ``r < C % n``; its rate is the same share
of ``max_per_second`` (its connections / ``C``). So the shares add up to the ceilings exactly,
and a sender beyond the ``C``-th gets no connection and sends nothing until one leaves.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Share:
    """What one sender may use: messages per second (None: no limit) and connections (0:
    none, it waits for a share)."""

    per_second: float | None
    connections: int
    senders: int  # how many share the ceilings

    def describe(self) -> str:
        rate = "no rate limit" if self.per_second is None else f"{self.per_second:.3g} msg/s"
        plural = "" if self.connections == 1 else "s"
        return f"{self.connections} connection{plural}, {rate} (of {self.senders} senders)"


def share_of(max_per_second: float | None, connections: int, *, rank: int, senders: int) -> Share:
    """The share of the sender at ``rank`` (0-based) among ``senders`` live senders."""
    if senders < 1 or not 0 <= rank < senders:
        raise ValueError(f"rank {rank} is not among {senders} senders")
    mine = connections // senders + (1 if rank < connections % senders else 0)
    rate = None if max_per_second is None else max_per_second * mine / connections
    return Share(rate, mine, senders)
