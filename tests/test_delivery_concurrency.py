"""Connections and rate, measured on the server side (never by sleeping in the test)."""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field

import pytest
from aiosmtpd.smtp import SMTP as SMTPServer
from aiosmtpd.smtp import Envelope, Session

from newsletter import app
from newsletter.app import Context
from newsletter.models import SubscriberState
from newsletter.store import subscribers as subscriber_rows
from tests.pipelining_servers import advertise_pipelining
from tests.smtp_servers import RecordingHandler, SmtpTestServer

pytestmark = pytest.mark.both_stores  # see tests/conftest.py


@pytest.fixture(params=["plain", "pipelining"], autouse=True)
def smtp_flavour(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Every test here runs against a server without PIPELINING and one offering it."""
    if request.param == "pipelining":
        advertise_pipelining(monkeypatch)
    return str(request.param)


@dataclass
class SessionHandler(RecordingHandler):
    """Also counts the messages accepted on each connection (keyed by the client's address)."""

    per_session: Counter[str] = field(default_factory=Counter)

    async def handle_DATA(self, server: SMTPServer, session: Session, envelope: Envelope) -> str:
        reply = await super().handle_DATA(server, session, envelope)
        with self.lock:
            self.per_session[repr(session.peer)] += 1
        return reply


def add_readers(ctx: Context, count: int) -> list[str]:
    emails = [f"reader{i}@example.org" for i in range(count)]
    with ctx.store.atomic() as conn:
        subscriber_rows.insert_many(
            conn, [(e, "", {}) for e in emails], state=SubscriberState.ACTIVE, now=ctx.clock()
        )
    return emails


def test_connections_are_parallel_bounded_and_reused(make_context):
    handler = SessionHandler()
    with SmtpTestServer(handler) as server:
        ctx = make_context(
            smtp={"port": server.port, "connections": 3, "reconnect_after": 50, "claim_batch": 8}
        )
        emails = add_readers(ctx, 300)
        probes = handler.sessions  # aiosmtpd's controller connects once to see it is up

        summary = app.send_now(ctx)

    assert summary.report is not None and summary.report.counts == {"sent": 300}
    assert Counter(handler.recipients()) == Counter(emails)
    assert handler.max_open_sessions == 3  # in parallel, and never more than configured
    assert max(handler.per_session.values()) == 50  # reused up to reconnect_after, no further
    assert sum(handler.per_session.values()) == 300
    # 300 messages over 3 connections, a fresh one every 50: 6 sessions, +1 per connection
    # at most for the partly used last ones.
    assert 6 <= handler.sessions - probes <= 6 + 3
    assert handler.open_sessions == 0  # every connection was closed (QUIT) at the end


def test_the_rate_limit_spaces_messages_evenly_across_connections(make_context):
    handler = RecordingHandler(clock=time.monotonic)
    rate = 50.0
    count = 40
    with SmtpTestServer(handler) as server:
        ctx = make_context(smtp={"port": server.port, "connections": 2, "max_per_second": rate})
        add_readers(ctx, count)

        summary = app.send_now(ctx)

    assert summary.report is not None and summary.report.counts == {"sent": count}
    accepted = sorted(handler.accepted_at)
    assert len(accepted) == count
    # Evenly spaced slots 1/rate apart: the whole send cannot be faster than (n - 1) / rate.
    assert accepted[-1] - accepted[0] >= (count - 1) / rate * 0.9
    # Smooth, not bursts: any 0.2 s holds about rate * 0.2 messages, never a pile of them.
    window = 0.2
    busiest = max(sum(1 for t in accepted if start <= t < start + window) for start in accepted)
    assert busiest <= rate * window + 3


def test_without_a_rate_limit_both_connections_share_the_work(make_context):
    handler = SessionHandler()
    with SmtpTestServer(handler) as server:
        ctx = make_context(smtp={"port": server.port, "connections": 2, "claim_batch": 4})
        add_readers(ctx, 120)
        probes = handler.sessions

        app.send_now(ctx)

    assert handler.sessions - probes == 2 and handler.max_open_sessions == 2
    assert sorted(handler.per_session.values())[0] >= 20  # neither connection sat idle
