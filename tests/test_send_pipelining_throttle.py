"""Throttling through the real engine: a server that says "too fast" gets fewer messages a
second and fewer connections, the send finishes, and nothing fails for it.

The servers measure on the real clock (a rate per second is what they enforce); the tests
assert what the server saw and the final rows, never how long anything took.
"""

from __future__ import annotations

import logging
from collections import Counter

import pytest

from newsletter import app
from newsletter.config import SmtpSettings
from newsletter.delivery import engine
from newsletter.delivery.smtp import ConnectFailed, SmtpConnector
from newsletter.delivery.throttle import is_throttle_reply
from tests.pipelining_servers import (
    BUSY_GREETING,
    THROTTLE_REPLY,
    PipeliningServer,
    ServerOptions,
    SessionLog,
)
from tests.test_delivery_faults import add_many, delivery_rows

ENGINE_LOG = "newsletter.delivery.engine"


def readers(count: int) -> list[str]:
    return [f"reader{i:03d}@example.org" for i in range(count)]


def throttle_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage() for r in caplog.records if r.name == ENGINE_LOG and "sending " in r.message
    ]


def most_open_at_once(sessions: list[SessionLog]) -> int:
    """The most greeted sessions open at the same time, on the server's clock."""
    events = []
    for session in sessions:
        if not session.refused:
            assert session.closed_at is not None
            events += [(session.opened_at, 1), (session.closed_at, -1)]
    most = current = 0
    for _, change in sorted(events):  # a close sorts before an open at the same instant
        current += change
        most = max(most, current)
    return most


def test_a_rate_limit_slows_the_send_down_and_nothing_fails(
    make_context, caplog: pytest.LogCaptureFixture
):
    """421 "rate limit" above 30 messages a second: halve the rate and the connections."""
    emails = readers(80)
    with PipeliningServer(ServerOptions(throttle_per_second=30)) as server:
        ctx = make_context(smtp={"port": server.port, "connections": 2, "claim_batch": 4})
        add_many(ctx, emails)

        with caplog.at_level(logging.INFO, logger=ENGINE_LOG):
            summary = app.send_now(ctx)

    assert summary.report is not None and summary.report.counts == {"sent": 80}
    rows = delivery_rows(ctx)
    assert {(state, error) for state, _, error in rows.values()} == {("sent", None)}
    assert Counter(server.recipients()) == Counter(emails)  # each exactly once
    assert server.throttled_at, "the server never throttled: the test proves nothing"
    # Retried, never failed: one more attempt for each throttled message.
    assert sum(attempts - 1 for _, attempts, _ in rows.values()) == len(server.throttled_at)
    # It slowed down: a client going on at full speed would hit the limit again within 30
    # messages of its last throttle reply; this one got all the rest through.
    last = server.throttled_at[-1]
    assert sum(1 for m in server.received if m.at > last) > 30
    assert len(server.throttled_at) < len(emails) // 2
    [line] = throttle_lines(caplog)
    assert line.startswith("digest 1: sending slower: ")
    assert ", 1 connection (was no rate limit, 2 connections): " in line
    assert line.endswith(f"the server answered {THROTTLE_REPLY}")
    # From the first throttle reply on, one connection at a time: the other one hung up.
    after = [s for s in server.sessions if s.opened_at > server.throttled_at[0]]
    assert after and most_open_at_once(after) == 1


def test_too_many_connections_leaves_one_connection_at_the_full_rate(
    make_context, caplog: pytest.LogCaptureFixture
):
    """The server greets a second connection with 421: the others wait, nothing fails."""
    emails = readers(40)
    with PipeliningServer(ServerOptions(max_connections=1)) as server:
        ctx = make_context(smtp={"port": server.port, "connections": 3, "claim_batch": 4})
        add_many(ctx, emails)

        with caplog.at_level(logging.INFO, logger=ENGINE_LOG):
            summary = app.send_now(ctx)

    assert summary.report is not None and summary.report.counts == {"sent": 40}
    refused = sum(s.refused for s in server.sessions)
    assert 1 <= refused <= 2  # the two other workers' first connections, then they waited
    rows = delivery_rows(ctx)
    assert Counter(attempts for _, attempts, _ in rows.values()) == {1: 40 - refused, 2: refused}
    assert {(state, error) for state, _, error in rows.values()} == {("sent", None)}
    assert Counter(server.recipients()) == Counter(emails)
    assert throttle_lines(caplog) == [
        "digest 1: sending slower: no rate limit, 1 connection (was no rate limit, "
        f"3 connections): the server answered {BUSY_GREETING}"
    ]


def test_connections_come_back_after_a_quiet_period(
    make_context, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
):
    """Once the server takes two connections again, a quiet period brings the second back."""
    monkeypatch.setattr(engine, "THROTTLE_QUIET_SECONDS", 0.3)
    emails = readers(120)
    options = ServerOptions(max_connections=1, reply_delay=0.002)  # a send that lasts a while

    def lift_the_limit(accepted: int) -> None:  # once the second connection was refused
        if any(session.refused for session in server.sessions):
            options.max_connections = None

    server = PipeliningServer(options, on_accepted=lift_the_limit)
    with server:
        ctx = make_context(smtp={"port": server.port, "connections": 2, "claim_batch": 4})
        add_many(ctx, emails)

        with caplog.at_level(logging.INFO, logger=ENGINE_LOG):
            summary = app.send_now(ctx)

    assert summary.report is not None and summary.report.counts == {"sent": 120}
    assert Counter(server.recipients()) == Counter(emails)
    lines = throttle_lines(caplog)
    assert lines[0].startswith("digest 1: sending slower: no rate limit, 1 connection")
    assert lines[1] == (
        "digest 1: sending faster: no rate limit, 2 connections (was no rate limit, "
        "1 connection): no throttling for 0.3 s"
    )
    assert len(lines) == 2
    greeted = [s for s in server.sessions if not s.refused]
    assert most_open_at_once(greeted) == 2  # the waiting worker connected again


def test_a_refused_greeting_carries_its_reply_without_control_characters():
    """What the server greets with is logged (the throttle's line): nothing may reach the
    terminal or the log as a control sequence."""
    options = ServerOptions(
        max_connections=0, busy_greeting="421 4.7.0 \x1b[2Jtoo many\x07 connections\x00"
    )
    with PipeliningServer(options) as server:
        connector = SmtpConnector(SmtpSettings(host=server.host, port=server.port))
        with pytest.raises(ConnectFailed) as raised:
            connector.check()

    assert (raised.value.code, raised.value.text) == (421, "4.7.0 [2Jtoo many connections")
    assert is_throttle_reply(raised.value.code, raised.value.text)
    assert str(raised.value) == (
        f"cannot connect to the SMTP server {server.host}:{server.port}: "
        "421 4.7.0 [2Jtoo many connections (check [smtp] host, port and security)"
    )
