"""Confirmation emails through the digests' outbox: one way to send (issue #11), a queue that
survives Ctrl-C and kill -9 and is drained by ``serve``, ``send-now`` and ``run`` (issue #15)."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dkim
import httpx
import pytest
from aiosmtpd.smtp import SMTP as SMTPServer
from aiosmtpd.smtp import Envelope, Session
from sqlalchemy import select

from newsletter import app
from newsletter.app import confirmations, links, subscriptions
from newsletter.app.archive import archived_digest, sent_digests
from newsletter.app.send_lock import send_lock
from newsletter.app.status import digest_status
from newsletter.config import Settings, load_settings
from newsletter.inbox import free_port
from newsletter.models import SubscriberState
from newsletter.store import subscribers as rows
from newsletter.store.schema import deliveries, digests, subscribers
from newsletter.subscribers import add_subscriber
from tests import wire
from tests.conftest import REPO, Run, write_config
from tests.smtp_servers import RecordingHandler, SmtpTestServer

pytestmark = pytest.mark.both_stores  # see tests/conftest.py

BASE = "https://news.example.org"
WAIT_SECONDS = 30  # every wait for another process is bounded by this
NEWSLETTER = [sys.executable, "-m", "newsletter"]


def clean_environment() -> dict[str, str]:
    """The environment for a child process, without the developer's own settings."""
    return {k: v for k, v in os.environ.items() if not k.startswith("NEWSLETTER_")}


@dataclass
class PacedHandler(RecordingHandler):
    """Accepts everything, a little slowly; sets ``reached`` after ``after`` messages."""

    delay: float = 0.0
    after: int = 0
    reached: threading.Event = field(default_factory=threading.Event)

    async def handle_DATA(self, server: SMTPServer, session: Session, envelope: Envelope) -> str:
        if self.delay:
            await asyncio.sleep(self.delay)
        reply = await super().handle_DATA(server, session, envelope)
        if self.after and len(self.received) >= self.after:
            self.reached.set()
        return reply


@pytest.fixture
def ctx(make_context: Callable[..., app.Context], smtp_server: SmtpTestServer) -> app.Context:
    return make_context(smtp={"port": smtp_server.port})


def confirm_path(text: str) -> str:
    found = re.search(re.escape(BASE) + r"(/confirm/\S+)", text)
    assert found is not None
    return found.group(1)


def mailings_of_kind(ctx: app.Context) -> dict[str, int]:
    with ctx.store.atomic() as conn:
        kinds = conn.execute(select(digests.c.kind)).scalars().all()
    return dict(Counter(kinds))


def write_list(path: Path, count: int) -> list[str]:
    emails = [f"reader{i:04d}@example.org" for i in range(count)]
    path.write_text("email,name\n" + "".join(f"{e},Reader {i}\n" for i, e in enumerate(emails)))
    return emails


# --- one way to send -------------------------------------------------------------------


def test_a_confirmation_email_is_a_mailing_of_the_outbox_and_not_a_digest(
    ctx, smtp_server: SmtpTestServer
):
    added = subscriptions.add(ctx, "ada@example.org", "Ada", double_opt_in=True)

    assert added.confirmation is not None and added.confirmation.sent == 1
    assert mailings_of_kind(ctx) == {"confirmation": 1}
    with ctx.store.atomic() as conn:
        [(mailing_id, state)] = conn.execute(select(digests.c.id, digests.c.state)).all()
        [delivery] = conn.execute(select(deliveries)).all()
    assert state == "sent" and delivery.state == "sent"
    # It is nobody's digest: not in the status, the archive, or its pages.
    assert digest_status(ctx) == [] and sent_digests(ctx) == []
    assert archived_digest(ctx, mailing_id) is None
    [received] = smtp_server.received
    message = received.parse()
    assert message["Message-ID"] == delivery.message_id  # recorded like a digest's
    # Transactional: no list fields.
    assert message["List-Unsubscribe"] is None and message["List-Unsubscribe-Post"] is None
    assert message["List-Id"] is None
    text = message.get_body(("plain",))
    assert text is not None and "Hello Ada," in text.get_content()


def test_confirmation_emails_are_dkim_signed_like_digests(make_context):
    with SmtpTestServer() as server:
        ctx = make_context(
            smtp={"port": server.port},
            newsletter={"from_address": "digest@news.example.org"},
            dkim=wire.dkim_key().settings(),
        )
        subscriptions.add(ctx, "ada@example.org", "Ada", double_opt_in=True)

    [received] = server.received
    assert dkim.verify(received.data, dnsfunc=wire.dkim_dns)
    tampered = received.data.replace(b"Confirm my subscription", b"Confirm my subscripti0n")
    assert tampered != received.data and not dkim.verify(tampered, dnsfunc=wire.dkim_dns)


def test_a_temporary_refusal_is_retried_by_the_next_run_without_anyone_waiting(make_context, clock):
    def greylist(address: str, attempt: int) -> str | None:
        return "451 4.7.1 greylisted, try again later" if attempt == 1 else None

    with SmtpTestServer(RecordingHandler(rcpt_reply=greylist)) as server:
        ctx = make_context(smtp={"port": server.port})

        added = subscriptions.add(ctx, "ada@example.org", double_opt_in=True)

        assert added.confirmation is not None
        assert (added.confirmation.sent, added.confirmation.waiting) == (0, 1)
        assert server.received == []
        assert not confirmations.work_due(ctx)  # not before the retry time
        clock.advance(minutes=1)
        assert confirmations.work_due(ctx)

        confirmations.deliver_confirmations(ctx)

    assert server.handler.recipients() == ["ada@example.org"]
    assert server.handler.attempts["ada@example.org"] == 2
    assert not confirmations.work_due(ctx)


def test_a_queued_confirmation_to_someone_who_confirmed_meanwhile_is_skipped(ctx, smtp_server):
    subscriptions.record_signup(ctx, "ada@example.org")
    confirmations.deliver_confirmations(ctx)
    first = smtp_server.received[0].parse().get_body(("plain",))
    assert first is not None
    with ctx.store.atomic() as conn:  # a second one is queued (a day later, say)...
        ada = rows.get_by_email(conn, "ada@example.org")
        assert ada is not None
        email = confirmations.render_confirmation(ctx)
        second = confirmations.queue_confirmations(conn, email, [ada], now=ctx.clock())
    links.confirm(ctx, confirm_path(first.get_content()).rsplit("/", 1)[1])  # ...she confirms

    confirmations.deliver_confirmations(ctx)

    assert len(smtp_server.received) == 1
    assert second is not None
    [(_, reason)] = confirmations.confirmation_report(ctx, [second]).failed
    assert reason.startswith("skipped: the address was confirmed or left")


def test_confirmations_and_digests_have_locks_of_their_own(ctx, smtp_server, clock):
    add_subscriber(ctx.store, "reader@example.org", now=clock())
    subscriptions.record_signup(ctx, "new@example.org")

    with send_lock(ctx):  # a long digest send holds the send lock...
        run = confirmations.deliver_confirmations(ctx)  # ...confirmations still go out
    with send_lock(ctx, name=confirmations.CONFIRMATION_LOCK):  # and the other way round
        summary = app.send_now(ctx)
        assert confirmations.deliver_confirmations(ctx) is None  # busy elsewhere: not twice

    assert run is not None and run.sent == 1
    assert summary.report is not None and summary.report.sent == 1
    assert sorted(smtp_server.handler.recipients()) == ["new@example.org", "reader@example.org"]


def test_add_says_queued_when_another_process_is_sending_confirmations(
    run: Run, env: Path, smtp_server
):
    other = app.Context.open(load_settings())
    try:
        with send_lock(other, name=confirmations.CONFIRMATION_LOCK):
            code, out, _ = run("subscribers", "add", "ada@example.org", "--double-opt-in")
    finally:
        other.close()

    assert code == 0
    assert out == (
        "added ada@example.org (pending); confirmation email queued (it goes out with "
        "`newsletter serve` or the next send-now)\n"
    )
    assert smtp_server.received == []
    code, _, _ = run("send-now")  # the queue is drained before the digest
    assert code == 0 and smtp_server.handler.recipients() == ["ada@example.org"]


# --- interrupted, resumed ----------------------------------------------------------------


def test_a_stopped_import_queues_what_it_stored_and_a_rerun_mails_everyone_once(
    make_context, tmp_path, monkeypatch
):
    monkeypatch.setattr("newsletter.subscribers.importing.IMPORT_BATCH", 50)
    source = tmp_path / "list.csv"
    everyone = write_list(source, 170)
    with SmtpTestServer() as server:
        ctx = make_context(smtp={"port": server.port})
        stop = threading.Event()

        def press_ctrl_c(lines: int) -> None:
            if lines >= 100:
                stop.set()

        report, mailed = subscriptions.import_subscribers(
            ctx, source, double_opt_in=True, on_progress=press_ctrl_c, stop=stop
        )

        assert report.stopped and report.imported == 100
        assert mailed is not None and (mailed.sent, mailed.waiting) == (0, 100)
        assert server.received == []  # Ctrl-C: nothing more is sent

        again, mailed_again = subscriptions.import_subscribers(ctx, source, double_opt_in=True)

    assert (again.imported, again.rejected_count) == (70, 100)  # the first 100 are pending
    assert mailed_again is not None and mailed_again.sent == 70
    assert Counter(server.handler.recipients()) == Counter(everyone)  # everyone, once


def test_kill_9_during_an_import_with_double_opt_in_then_the_next_send_mails_the_rest(
    tmp_path: Path, store_url: str
):
    """A real process killed while mailing: the next ``send-now`` sends the rest, and only
    the messages in flight at the kill can arrive twice."""
    connections, claim_batch = 2, 4
    source = tmp_path / "list.csv"
    everyone = write_list(source, 400)
    handler = PacedHandler(delay=0.002, after=80)
    with SmtpTestServer(handler) as server:
        config = write_config(
            tmp_path / "config.toml",
            store={"url": store_url},
            smtp={"port": server.port, "connections": connections, "claim_batch": claim_batch},
            web={"base_url": BASE},
        )
        command = ["subscribers", "import", str(source), "--double-opt-in"]
        child = subprocess.Popen(
            [*NEWSLETTER, "--config", str(config), *command],
            cwd=REPO,
            env=clean_environment(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        try:
            assert handler.reached.wait(WAIT_SECONDS), "the import never got to mailing"
            child.send_signal(signal.SIGKILL)
            assert child.wait(WAIT_SECONDS) == -signal.SIGKILL
        finally:
            if child.poll() is None:
                child.kill()
            child.communicate()
        received_before = len(handler.received)
        assert received_before < len(everyone), "the kill landed after the import had finished"
        ctx = app.Context.open(_settings(config))
        try:
            with ctx.store.atomic() as conn:
                in_flight = set(
                    conn.execute(
                        select(subscribers.c.email)
                        .join(deliveries, deliveries.c.subscriber_id == subscribers.c.id)
                        .where(deliveries.c.state == "sending")
                    ).scalars()
                )
            assert len(in_flight) <= 2 * connections * claim_batch

            code = subprocess.run(
                [*NEWSLETTER, "--config", str(config), "send-now"],
                cwd=REPO,
                env=clean_environment(),
                capture_output=True,
                timeout=WAIT_SECONDS * 4,
            ).returncode

            assert code == 0
            received = Counter(handler.recipients())
            assert set(received) == set(everyone)  # nobody missed
            assert {e for e, n in received.items() if n > 1} <= in_flight
            states = {row.email: row.state for row in _all_subscribers(ctx)}
            assert set(states.values()) == {SubscriberState.PENDING.value}
        finally:
            ctx.close()


def _settings(config: Path) -> Settings:
    return load_settings(config)


def _all_subscribers(ctx: app.Context) -> list[Any]:
    with ctx.store.atomic() as conn:
        return list(rows.iter_all(conn))


# --- serve drains the queue ------------------------------------------------------------


@pytest.mark.sqlite_store  # a process test; the queue's store work runs on both elsewhere
def test_serve_mails_sign_ups_in_the_background_and_stops_cleanly(tmp_path: Path):
    port = free_port()
    with SmtpTestServer() as server:
        config = write_config(
            tmp_path / "config.toml",
            smtp={"port": server.port},
            web={"base_url": BASE, "secret": "serve-test-secret-0123456789"},
        )
        child = subprocess.Popen(
            [*NEWSLETTER, "--config", str(config), "serve", "--port", str(port)],
            cwd=REPO,
            env=clean_environment(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        try:
            url = f"http://127.0.0.1:{port}"
            _wait_until_up(url, child)
            answers = [
                httpx.post(
                    f"{url}/api/subscribe",
                    json={"email": f"user{i}@example.org"},
                    headers={"X-Forwarded-For": f"198.51.100.{i}"},  # from a local process
                    timeout=10,
                ).status_code
                for i in range(7)
            ]
            deadline = time.monotonic() + WAIT_SECONDS
            while len(server.received) < 5 and time.monotonic() < deadline:
                time.sleep(0.1)
            child.send_signal(signal.SIGTERM)
            out, err = child.communicate(timeout=WAIT_SECONDS)
        finally:
            if child.poll() is None:
                child.kill()
                child.communicate()

    # X-Forwarded-For from an untrusted client changes nothing: the per-IP limit holds.
    assert answers == [202] * 5 + [429] * 2
    assert sorted(server.handler.recipients()) == [f"user{i}@example.org" for i in range(5)]
    assert child.returncode == 0, err.decode()
    assert out.decode().splitlines()[-1] == "stopped"


def _wait_until_up(url: str, child: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + WAIT_SECONDS
    while time.monotonic() < deadline:
        if child.poll() is not None:
            pytest.fail(f"serve did not start: {child.communicate()[1].decode()}")
        try:
            httpx.get(f"{url}/subscribe", timeout=1)
            return
        except httpx.TransportError:
            time.sleep(0.1)
    pytest.fail("serve did not answer in time")


def test_send_now_mails_what_the_queue_holds_when_serve_is_not_running(
    run: Run, env: Path, smtp_server
):
    ctx = app.Context.open(load_settings())
    try:
        subscriptions.record_signup(ctx, "ada@example.org", "Ada")
        subscriptions.record_signup(ctx, "bob@example.org")
    finally:
        ctx.close()

    code, out, err = run("send-now")

    assert code == 0, err
    assert sorted(smtp_server.handler.recipients()) == ["ada@example.org", "bob@example.org"]
    assert "no active subscribers" in out  # they are pending: no digest for them yet
