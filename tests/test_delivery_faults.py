"""The delivery engine against SMTP servers that misbehave on purpose: exact final states.

Every fault is chosen by address, deterministically: 451/421 on the first attempt, 550
always, the connection dropped during DATA, a server slower than the client's timeout, a
server that refuses everything (the send pauses), bad credentials and a closed port (the
send stops before any row is touched).
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.smtp import SMTP as SMTPServer
from aiosmtpd.smtp import AuthResult, Envelope, Session
from sqlalchemy import select

from newsletter import app
from newsletter.app import Context
from newsletter.cli import cli
from newsletter.cli.base import run_guarded
from newsletter.errors import DeliveryError, DeliveryPaused
from newsletter.inbox import free_port
from newsletter.models import SubscriberState
from newsletter.store import subscribers as subscriber_rows
from newsletter.store.schema import deliveries, digests, subscribers
from tests.conftest import write_config
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
class FaultyHandler(RecordingHandler):
    """Also drops the connection during DATA, or answers slowly, for chosen addresses."""

    drop_on_first: set[str] = field(default_factory=set)
    slow_on_first: dict[str, float] = field(default_factory=dict)  # address -> seconds
    delay: float = 0.0  # every message
    dropped: int = 0

    async def handle_DATA(self, server: SMTPServer, session: Session, envelope: Envelope) -> str:
        rcpt = envelope.rcpt_tos[0] if envelope.rcpt_tos else ""
        first = self.attempts[rcpt] == 1
        if rcpt in self.drop_on_first and first:
            self.dropped += 1
            assert isinstance(server.transport, asyncio.Transport)
            server.transport.abort()  # the client never gets a reply to its DATA
            return "250 never delivered"
        pause = self.delay + (self.slow_on_first.get(rcpt, 0.0) if first else 0.0)
        if pause:
            await asyncio.sleep(pause)
            if server.transport is None or server.transport.is_closing():
                return "250 nobody is listening"  # the client gave up: not a delivery
        return await super().handle_DATA(server, session, envelope)


def add_many(ctx: Context, emails: list[str], *, name: str = "Reader") -> None:
    with ctx.store.atomic() as conn:
        subscriber_rows.insert_many(
            conn, [(e, name, {}) for e in emails], state=SubscriberState.ACTIVE, now=ctx.clock()
        )


def delivery_rows(ctx: Context) -> dict[str, tuple[str, int, str | None]]:
    """email -> (state, attempts, last_error) for every delivery in the store."""
    with ctx.store.atomic() as conn:
        rows = conn.execute(
            select(
                subscribers.c.email,
                deliveries.c.state,
                deliveries.c.attempts,
                deliveries.c.last_error,
            ).join(subscribers, subscribers.c.id == deliveries.c.subscriber_id)
        ).all()
    return {email: (state, attempts, error) for email, state, attempts, error in rows}


def digest_state(ctx: Context) -> str:
    with ctx.store.atomic() as conn:
        return str(conn.execute(select(digests.c.state)).scalar_one())


def by_prefix(prefix: str, count: int) -> list[str]:
    return [f"{prefix}{i}@example.org" for i in range(count)]


def replies(rules: dict[str, Callable[[int], str | None]]) -> Callable[[str, int], str | None]:
    """A ``rcpt_reply`` choosing by the address's prefix (the part before the digits)."""

    def reply(address: str, attempt: int) -> str | None:
        prefix = address.partition("@")[0].rstrip("0123456789")
        rule = rules.get(prefix)
        return rule(attempt) if rule else None

    return reply


def test_mixed_faults_end_in_exact_states(make_context):
    ok = by_prefix("ok", 20)
    later = by_prefix("later", 4)  # 451 on the first attempt
    busy = by_prefix("busy", 3)  # 421 (closing) on the first attempt
    gone = by_prefix("gone", 4)  # 550 always
    never = by_prefix("never", 2)  # 451 always: given up after max_attempts
    dropped = by_prefix("dropped", 2)  # connection dropped during DATA, first attempt
    handler = FaultyHandler(
        rcpt_reply=replies(
            {
                "later": lambda n: "451 4.3.0 try later" if n == 1 else None,
                "busy": lambda n: "421 4.7.0 too busy, closing" if n == 1 else None,
                "gone": lambda n: "550 5.1.1 no such user",
                "never": lambda n: "451 4.2.0 mailbox busy",
            }
        ),
        drop_on_first=set(dropped),
    )
    with SmtpTestServer(handler) as server:
        ctx = make_context(smtp={"port": server.port, "max_attempts": 3, "claim_batch": 4})
        everyone = ok + later + busy + gone + never + dropped
        add_many(ctx, everyone)

        summary = app.send_now(ctx)

    report = summary.report
    assert report is not None and report.finished and not report.interrupted
    assert report.counts == {"sent": 29, "failed": 6}
    assert (report.sent, report.failed) == (29, 6)
    rows = delivery_rows(ctx)
    for email in ok:
        assert rows[email] == ("sent", 1, None)
    for email in later + busy + dropped:
        assert rows[email] == ("sent", 2, None)
    for email in gone:
        assert rows[email] == ("failed", 1, "550 5.1.1 no such user")
    for email in never:
        assert rows[email] == ("failed", 3, "gave up after 3 attempts: 451 4.2.0 mailbox busy")
    received = Counter(handler.recipients())
    assert received == Counter(ok + later + busy + dropped)  # each exactly once
    assert all(handler.attempts[e] == 1 for e in gone)  # a 5xx is never retried
    assert all(handler.attempts[e] == 3 for e in never)
    assert handler.dropped == 2
    assert digest_state(ctx) == "sent"


def test_status_lists_the_reasons_of_failures(
    make_context, store_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    handler = RecordingHandler(rcpt_reply=replies({"gone": lambda n: "550 5.1.1 no such user"}))
    with SmtpTestServer(handler) as server:
        ctx = make_context(smtp={"port": server.port})
        add_many(ctx, by_prefix("ok", 3) + by_prefix("gone", 2))
        app.send_now(ctx)
    config = write_config(
        tmp_path / "newsletter.toml", store={"url": store_url}, smtp={"port": server.port}
    )

    code = run_guarded(cli, ["--config", str(config), "status"])

    out = capsys.readouterr().out
    assert code == 0
    assert "[sent]" in out and "2 failed, 3 sent" in out
    assert "    2 failed: 550 5.1.1 no such user" in out


def test_a_slow_server_gets_everything_and_a_timeout_is_retried(make_context):
    slow = "slowpoke@example.org"
    handler = FaultyHandler(delay=0.02, slow_on_first={slow: 3.0})
    with SmtpTestServer(handler) as server:
        ctx = make_context(smtp={"port": server.port, "timeout": 1.0, "connections": 3})
        others = by_prefix("reader", 15)
        add_many(ctx, [*others, slow])

        summary = app.send_now(ctx)

    assert summary.report is not None and summary.report.counts == {"sent": 16}
    rows = delivery_rows(ctx)
    assert rows[slow] == ("sent", 2, None)
    assert all(rows[e] == ("sent", 1, None) for e in others)
    assert Counter(handler.recipients()) == Counter([*others, slow])


def test_a_refused_sender_is_not_the_recipients_fault(make_context):
    """MAIL FROM refused (our account or config): rows stay pending, the send pauses."""

    class RefuseSender(RecordingHandler):
        async def handle_MAIL(
            self, server: Any, session: Any, envelope: Any, address: str, options: Any
        ) -> str:
            return "553 5.7.1 sender not allowed"

    with SmtpTestServer(RefuseSender()) as server:
        ctx = make_context(smtp={"port": server.port, "pause_after_failures": 3})
        add_many(ctx, by_prefix("reader", 10))

        with pytest.raises(DeliveryPaused, match=r"sender refused: 553 5\.7\.1 sender not allowed"):
            app.send_now(ctx)

    states = Counter(state for state, _, _ in delivery_rows(ctx).values())
    assert states == {"pending": 10}


def test_a_server_refusing_everything_pauses_the_send_and_it_resumes_later(make_context):
    handler = RecordingHandler(rcpt_reply=lambda address, attempt: "421 4.3.2 shutting down")
    everyone = by_prefix("reader", 40)
    with SmtpTestServer(handler) as server:
        ctx = make_context(smtp={"port": server.port, "pause_after_failures": 5, "claim_batch": 4})
        add_many(ctx, everyone)

        with pytest.raises(DeliveryPaused) as raised:
            app.send_now(ctx)

        message = str(raised.value)
        assert message == (
            "digest 1: 5 deliveries in a row failed (last: connection: 421 4.3.2 shutting "
            "down); the send is paused and resumes with the next run"
        )
        assert "\n" not in message
        assert digest_state(ctx) == "paused"
        rows = delivery_rows(ctx)
        assert {state for state, _, _ in rows.values()} == {"pending"}  # nothing left sending
        tried = [e for e, (_, attempts, _) in rows.items() if attempts == 1]
        # Only the rows in flight were tried: at most 2 * connections * claim_batch.
        assert 5 <= len(tried) <= 2 * 2 * 4
        assert handler.received == []

        handler.rcpt_reply = None  # the server is back
        summary = app.send_now(ctx)

    assert [r.counts for r in summary.resumed] == [{"sent": 40}]
    assert summary.report is None and summary.skipped_reason
    assert Counter(handler.recipients()) == Counter(everyone)
    assert digest_state(ctx) == "sent"
    assert all(attempts == 2 for e, (_, attempts, _) in delivery_rows(ctx).items() if e in tried)


def _refuse_everyone(
    server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any
) -> AuthResult:
    return AuthResult(success=False, handled=False)


def test_bad_credentials_fail_fast_with_one_line_before_any_row_is_touched(
    make_context, store_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    server = SmtpTestServer(authenticator=_refuse_everyone, auth_require_tls=False)
    with server:
        ctx = make_context(smtp={"port": server.port})
        add_many(ctx, by_prefix("reader", 3))
        config = write_config(
            tmp_path / "newsletter.toml",
            store={"url": store_url},
            smtp={"port": server.port, "username": "digest", "password": "wrong"},
        )

        code = run_guarded(cli, ["--config", str(config), "send-now"])

    err = capsys.readouterr().err
    assert code == 3
    assert err == (
        f"error: the SMTP server 127.0.0.1:{server.port} rejected the login for 'digest': "
        "535 5.7.8 Authentication credentials invalid "
        "(check [smtp] username and password, or NEWSLETTER_SMTP__PASSWORD)\n"
    )
    assert delivery_rows(ctx) == {}
    with ctx.store.atomic() as conn:
        assert conn.execute(select(digests.c.id)).first() is None
    assert server.received == []


def test_an_unreachable_server_fails_fast_before_any_row_is_touched(make_context):
    port = free_port()  # nothing listens there
    ctx = make_context(smtp={"port": port})
    add_many(ctx, by_prefix("reader", 3))

    with pytest.raises(DeliveryError) as raised:
        app.send_now(ctx)

    assert str(raised.value) == (
        f"cannot connect to the SMTP server 127.0.0.1:{port}: connection refused "
        "(check [smtp] host, port and security)"
    )
    assert delivery_rows(ctx) == {}
