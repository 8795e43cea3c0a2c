"""Pipelined delivery (RFC 2920) through the real engine: ``send_now``, the outbox, a real server.

The server (``tests/pipelining_servers.py``) offers PIPELINING and misbehaves on purpose in the
middle of a pipelined group. Each test asserts the final state of every delivery row and what
the server kept: every recipient exactly once, except the duplicates the outbox documents (a
message whose end of data went out and whose reply never came back).
"""

from __future__ import annotations

import signal
import threading
from collections import Counter
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from newsletter import app
from newsletter.store.schema import deliveries, subscribers
from tests.conftest import clear_newsletter_env
from tests.pipelining_servers import PipeliningServer, Rule, ServerOptions, SessionLog
from tests.test_delivery_faults import add_many, delivery_rows, digest_state
from tests.test_delivery_resume import (
    CLAIM_BATCH,
    CONNECTIONS,
    cli_setup,
    signal_when,
    start_send_now,
)

SENT_ONCE = ("sent", 1, None)


def readers(count: int) -> list[str]:
    return [f"reader{i:02d}@example.org" for i in range(count)]


def pipelined_groups(sessions: list[SessionLog]) -> int:
    """How many messages went out as one MAIL, RCPT, DATA group behind the previous dot."""
    return sum(
        1
        for session in sessions
        for turn in session.turns
        for i in range(len(turn) - 3)
        if turn[i : i + 4] == [".", "MAIL", "RCPT", "DATA"]
    )


def test_the_engine_sends_one_group_per_message_across_chunks(make_context):
    emails = readers(40)
    with PipeliningServer() as server:
        ctx = make_context(smtp={"port": server.port, "connections": 2, "claim_batch": 4})
        add_many(ctx, emails)

        summary = app.send_now(ctx)

    assert summary.report is not None and summary.report.counts == {"sent": 40}
    assert set(delivery_rows(ctx).values()) == {SENT_ONCE}
    assert Counter(server.recipients()) == Counter(emails)
    assert server.violations == []
    assert len(server.sessions) == 2  # the send's first check connection is one of the two
    for session in server.sessions:
        assert session.turns[:2] == [["EHLO"], ["MAIL", "RCPT", "DATA"]]
        assert session.turns[-1] == ["QUIT"]
    # Each message's commands travel behind the previous message's content, across chunks of
    # 4 too (a TCP read may split a few of them; a round trip per message would split all).
    assert pipelined_groups(server.sessions) >= 0.8 * (40 - 2)


@dataclass(frozen=True)
class Fault:
    """What the server does to reader20, and what must become of it."""

    rule: Rule
    row: tuple[str, int, str | None]  # reader20's delivery row at the end
    received: int  # how often the server kept reader20's message
    options: ServerOptions = field(default_factory=ServerOptions)
    timeout: float = 10.0


FAULTS = {
    "refused RCPT": Fault(
        Rule(rcpt="550 5.1.1 <reader20@example.org>: no such user"),
        ("failed", 1, "550 5.1.1 <reader20@example.org>: no such user"),
        received=0,
    ),
    "refused RCPT, DATA accepted anyway": Fault(  # the lone dot is no acceptance
        Rule(rcpt="550 5.1.1 <reader20@example.org>: no such user"),
        ("failed", 1, "550 5.1.1 <reader20@example.org>: no such user"),
        received=0,
        options=ServerOptions(data_without_rcpt="354 go ahead", end_without_rcpt="250 2.0.0 liar"),
    ),
    "451 to RCPT once": Fault(Rule(rcpt="451 4.3.0 try later", first=1), ("sent", 2, None), 1),
    "421 to DATA once": Fault(
        Rule(data="421 4.7.0 closing connection", first=1), ("sent", 2, None), 1
    ),
    "554 after the dot": Fault(
        Rule(end="554 5.7.1 rejected as spam"), ("failed", 1, "554 5.7.1 rejected as spam"), 0
    ),
    "421 after the dot once": Fault(
        Rule(end="421 4.7.0 too busy, closing", first=1), ("sent", 2, None), 1
    ),
    # The server kept the message but the reply never came: sent again, the one duplicate.
    "dropped after the dot once": Fault(Rule(drop_after_dot=True, first=1), ("sent", 2, None), 2),
    "final reply slower than the timeout once": Fault(
        Rule(end_delay=3.0, first=1), ("sent", 2, None), 2, timeout=1.0
    ),
}


@pytest.mark.parametrize("fault", FAULTS.values(), ids=FAULTS.keys())
def test_a_fault_in_the_middle_of_a_group_settles_every_row_exactly(make_context, fault: Fault):
    """One connection, so reader21's commands are always on the wire behind reader20's."""
    emails = readers(30)
    faulty = "reader20@example.org"
    with PipeliningServer(fault.options, rules={faulty: fault.rule}) as server:
        ctx = make_context(
            smtp={"port": server.port, "connections": 1, "claim_batch": 4, "timeout": fault.timeout}
        )
        add_many(ctx, emails)

        summary = app.send_now(ctx)

    rows = delivery_rows(ctx)
    assert rows.pop(faulty) == fault.row
    assert set(rows.values()) == {SENT_ONCE}  # reader21 too: its content had not left
    expected = Counter(e for e in emails if e != faulty) + Counter({faulty: fault.received})
    assert Counter(server.recipients()) == expected
    assert server.violations == []
    assert summary.report is not None and summary.report.finished
    assert digest_state(ctx) == "sent"
    with ctx.store.atomic() as conn:
        state = conn.execute(
            select(subscribers.c.state).where(subscribers.c.email == faulty)
        ).scalar_one()
    assert state == ("bounced" if "5.1.1" in str(fault.row[2]) else "active")


# fate: (the server's rule, the final row, how often the server keeps the message)
FATES: dict[str, tuple[Rule | None, tuple[str, int, str | None], int]] = {
    "accepted": (None, SENT_ONCE, 1),
    "no such user": (
        Rule(rcpt="550 5.1.1 no such user"),
        ("failed", 1, "550 5.1.1 no such user"),
        0,
    ),
    "busy once": (Rule(rcpt="450 4.2.1 mailbox busy", first=1), ("sent", 2, None), 1),
    "refused at DATA": (Rule(data="554 5.7.1 not here"), ("failed", 1, "554 5.7.1 not here"), 0),
    "too big": (Rule(end="552 5.3.4 too big"), ("failed", 1, "552 5.3.4 too big"), 0),
    "queue full once": (Rule(end="451 4.3.0 queue full", first=1), ("sent", 2, None), 1),
    "closing at DATA once": (Rule(data="421 4.7.0 closing", first=1), ("sent", 2, None), 1),
    "closing after the dot once": (Rule(end="421 4.7.0 closing", first=1), ("sent", 2, None), 1),
    "dropped after the dot once": (Rule(drop_after_dot=True, first=1), ("sent", 2, None), 2),
}


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    fates=st.lists(st.sampled_from(sorted(FATES)), min_size=1, max_size=10),
    pipelining=st.booleans(),
    connections=st.integers(1, 2),
)
def test_any_mix_of_faults_ends_in_each_rows_own_fate(
    make_context,
    tmp_path_factory: pytest.TempPathFactory,
    fates: list[str],
    pipelining: bool,
    connections: int,
):
    emails = readers(len(fates))
    rules = {e: rule for e, f in zip(emails, fates, strict=True) if (rule := FATES[f][0])}
    database = tmp_path_factory.mktemp("fates") / "newsletter.db"  # one per example
    with PipeliningServer(ServerOptions(pipelining=pipelining), rules=rules) as server:
        # A ceiling far above what the test sends: halving it after a 421 costs nothing.
        ctx = make_context(
            store={"url": f"sqlite:///{database}"},
            smtp={"port": server.port, "connections": connections, "max_per_second": 5000.0},
        )
        add_many(ctx, emails)

        app.send_now(ctx)

    rows = delivery_rows(ctx)
    assert {e: rows[e] for e in emails} == {
        e: FATES[f][1] for e, f in zip(emails, fates, strict=True)
    }
    expected = Counter({e: FATES[f][2] for e, f in zip(emails, fates, strict=True)})
    assert Counter(server.recipients()) == +expected
    assert server.violations == []


def test_a_slow_pipelining_server_gets_everything_once(make_context):
    emails = readers(20)
    with PipeliningServer(ServerOptions(reply_delay=0.01)) as server:
        ctx = make_context(smtp={"port": server.port, "connections": 2, "claim_batch": 4})
        add_many(ctx, emails)

        summary = app.send_now(ctx)

    assert summary.report is not None and summary.report.counts == {"sent": 20}
    assert set(delivery_rows(ctx).values()) == {SENT_ONCE}
    assert Counter(server.recipients()) == Counter(emails)
    assert pipelined_groups(server.sessions) >= 0.8 * (20 - 2)


def test_international_addresses_go_out_pipelined_with_smtputf8_only_where_needed(make_context):
    with PipeliningServer(ServerOptions(smtputf8=True)) as server:
        ctx = make_context(smtp={"port": server.port})
        add_many(ctx, ["jörg@bücher.de", "jurgen@bücher.de", "ada@example.org"])

        summary = app.send_now(ctx)

    assert summary.report is not None and summary.report.counts == {"sent": 3}
    params = {m.recipients[0]: m.mail_params for m in server.received}
    assert set(params) == {"jörg@bücher.de", "jurgen@xn--bcher-kva.de", "ada@example.org"}
    assert {"SMTPUTF8", "BODY=8BITMIME"} <= set(params["jörg@bücher.de"])
    assert not {"SMTPUTF8", "BODY=8BITMIME"} & set(params["jurgen@xn--bcher-kva.de"])
    assert not {"SMTPUTF8", "BODY=8BITMIME"} & set(params["ada@example.org"])


def test_without_smtputf8_only_that_delivery_fails_and_nothing_reaches_the_wire(make_context):
    with PipeliningServer(ServerOptions(smtputf8=False)) as server:
        ctx = make_context(smtp={"port": server.port, "connections": 1})
        add_many(ctx, ["ada@example.org", "jörg@bücher.de", "jurgen@bücher.de"])

        app.send_now(ctx)

    rows = delivery_rows(ctx)
    assert rows.pop("jörg@bücher.de") == (
        "failed",
        1,
        "the server does not offer SMTPUTF8, which the address 'jörg@bücher.de' needs "
        "(its local part is not ASCII)",
    )
    assert set(rows.values()) == {SENT_ONCE}
    assert server.recipients() == ["ada@example.org", "jurgen@xn--bcher-kva.de"]
    assert all(command.isascii() for s in server.sessions for command in s.commands)


def test_a_stop_finishes_what_is_on_the_wire_and_the_next_run_sends_the_rest(make_context):
    """Pipelined, a connection has at most two messages on the wire: both are finished."""
    stop = threading.Event()
    connections = 2

    def press_ctrl_c(accepted: int) -> None:
        if accepted == 25:
            stop.set()

    with PipeliningServer(on_accepted=press_ctrl_c) as server:
        ctx = make_context(smtp={"port": server.port, "connections": connections, "claim_batch": 4})
        add_many(ctx, readers(100))

        first = app.send_now(ctx, stop=stop)

        assert first.interrupted and first.report is not None
        rows = delivery_rows(ctx)
        sent = {email for email, (state, _, _) in rows.items() if state == "sent"}
        assert {state for state, _, _ in rows.values()} == {"sent", "pending"}
        assert sent == set(server.recipients())  # recorded exactly what arrived
        # The one whose reply set the stop, then at most two per connection: the other
        # connection's dot in flight and held message, this one's held message.
        assert 25 <= len(sent) <= 25 + 2 * connections - 1

        second = app.send_now(ctx)

    assert [r.counts for r in second.resumed] == [{"sent": 100}]
    assert second.resumed[0].released_in_flight == 0
    assert Counter(server.recipients()) == Counter(readers(100))  # nobody twice


# -- SIGKILL mid-send, pipelined, then resume -------------------------------------------------
def test_sigkill_mid_pipelined_send_then_resume_misses_nobody(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    clear_newsletter_env(monkeypatch)
    count = 1000
    everyone = {f"reader{i:05d}@example.org" for i in range(count)}
    # Each reply a little late, so the kill lands in the middle of the send.
    with PipeliningServer(ServerOptions(reply_delay=0.001)) as server:
        config, ctx = cli_setup(tmp_path, server.port, count)
        try:
            child = start_send_now(config)
            code = signal_when(child, lambda: len(server.received), count * 0.3, signal.SIGKILL)
            assert code == -signal.SIGKILL
            assert len(server.received) < count, "the kill landed after the send had finished"
            with ctx.store.atomic() as conn:
                in_flight = set(
                    conn.execute(
                        select(subscribers.c.email)
                        .join(deliveries, deliveries.c.subscriber_id == subscribers.c.id)
                        .where(deliveries.c.state == "sending")
                    ).scalars()
                )
            assert len(in_flight) <= 2 * CONNECTIONS * CLAIM_BATCH

            server.options.reply_delay = 0.0
            summary = app.send_now(ctx)  # the next run finishes the unfinished digest first
        finally:
            ctx.close()

    assert [r.released_in_flight for r in summary.resumed] == [len(in_flight)]
    assert summary.resumed[0].counts == {"sent": count}
    received = Counter(server.recipients())
    assert set(received) == everyone
    assert {email for email, n in received.items() if n > 1} <= in_flight
    assert max(received.values()) <= 2
    ids: dict[str, set[str]] = {}
    for message in server.received:
        parsed = message_from_bytes(message.data, policy=policy.default)
        ids.setdefault(message.recipients[0], set()).add(str(parsed["Message-ID"]))
    assert all(len(found) == 1 for found in ids.values())  # a duplicate shows once in clients
    assert pipelined_groups(server.sessions) > count / 2  # the killed send was pipelining
