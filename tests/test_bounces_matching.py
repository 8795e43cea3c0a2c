"""What a bounce report is trusted to say, and what it makes of a subscriber: forged tokens,
backscatter, derived Message-IDs and stale recipients name nobody; policy refusals change
nothing; soft bounces add up per mailing within ``soft_days``; confirmation emails carry VERP
too; and any bytes in the mailbox are recorded once and never block it.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from newsletter import app
from newsletter.app import subscriber_list, subscriptions
from newsletter.app.bounces import OUTCOMES, check_bounces
from newsletter.app.status import digest_status
from newsletter.bounces.verp import read_verp, verp_key
from newsletter.store import subscribers as subscriber_rows
from newsletter.store.schema import bounce_reports, deliveries
from newsletter.subscribers import add_subscriber
from tests.bounce_mail import retarget
from tests.conftest import FrozenClock
from tests.smtp_servers import SmtpTestServer
from tests.test_bounce_classify import DSN_TEMPLATE
from tests.test_bounce_maildir import deliver, make_maildir

pytestmark = pytest.mark.both_stores

BOUNCE = "bounces@news.example.org"
SECRET = "test-secret-0123456789abcdef"  # make_settings' web secret


class Setup:
    """A context with [bounces] set and a Maildir, subscribers, and what each was sent."""

    def __init__(self, ctx: app.Context, maildir: Path, server: SmtpTestServer) -> None:
        self.ctx = ctx
        self.maildir = maildir
        self.server = server
        self._count = 0

    def add(self, *emails: str) -> None:
        for email in emails:
            add_subscriber(self.ctx.store, email, now=self.ctx.clock())

    def send(self) -> int:
        """Send the next digest; its id."""
        summary = app.send_now(self.ctx)
        assert summary.digest_id is not None and summary.report is not None
        return summary.digest_id

    def last_to(self, address: str) -> tuple[str, str]:
        """``(MAIL FROM, Message-ID)`` of the last message ``address`` received."""
        message = [m for m in self.server.received if m.rcpt_tos == [address]][-1]
        return message.mail_from, str(message.parse()["Message-ID"])

    def deliver(self, raw: bytes) -> None:
        self._count += 1
        deliver(self.maildir, f"17958{self._count:05d}.M1P1.mx", raw)

    def check(self) -> dict[str, int]:
        """Run a check; the counts per outcome (and the state changes)."""
        done = check_bounces(self.ctx)
        return {k: v for k, v in done.counts.items() if v} | {
            "bounced": done.bounced,
            "unsubscribed": done.unsubscribed,
        }

    def state(self, email: str) -> tuple[str, str | None]:
        with self.ctx.store.atomic() as conn:
            row = subscriber_rows.row_by_email(conn, email)
        assert row is not None
        return row.state, row.state_reason

    def new_article(self, name: str) -> None:
        (self.articles / f"{name}.txt").write_text(
            f"date 2026-11-26\n\nThe {name} article is here. It says little.\n", encoding="utf-8"
        )

    articles: Path


@pytest.fixture
def setup(
    make_context: Callable[..., app.Context], smtp_server: SmtpTestServer, tmp_path: Path
) -> Callable[..., Setup]:
    def make(**bounces: Any) -> Setup:
        maildir = make_maildir(tmp_path / "Maildir")
        articles = tmp_path / "articles"
        articles.mkdir()
        ctx = make_context(
            smtp={"port": smtp_server.port},
            sources={"articles_dir": str(articles)},
            bounces={"address": BOUNCE, "mailbox": f"maildir:{maildir}", **bounces},
        )
        made = Setup(ctx, maildir, smtp_server)
        made.articles = articles
        made.new_article("001_first")
        return made

    return make


def dsn(
    *, verp: str = BOUNCE, recipient: str, status: str, diagnostic: str, action: str = "failed"
) -> bytes:
    return DSN_TEMPLATE.format(
        verp=verp, recipient=recipient, action=action, status=status, diagnostic=diagnostic
    ).encode()


def with_enclosed_message_id(raw: bytes, message_id: str) -> bytes:
    """A DSN with the original's headers enclosed, as most MTAs return them."""
    enclosed = (
        b"--b0undary\nContent-Type: text/rfc822-headers\n\n"
        b"From: The Daily Digest <digest@example.org>\nMessage-ID: "
        + message_id.encode()
        + b"\nSubject: The Daily Digest\n\n--b0undary--\n"
    )
    return raw.replace(b"--b0undary--\n", enclosed)


def test_verp_is_the_mail_from_of_each_delivery_and_of_confirmation_emails(setup, clock):
    s = setup()
    s.add("ada@example.org")
    digest_id = s.send()
    added = subscriptions.add(s.ctx, "new@example.org", double_opt_in=True)

    with s.ctx.store.atomic() as conn:
        ids = {r.email: r.public_id for r in subscriber_rows.iter_all(conn)}
        mailing = conn.execute(
            select(deliveries.c.digest_id).where(deliveries.c.subscriber_id == added.subscriber.id)
        ).scalar_one()
    key = verp_key(SECRET)
    assert read_verp(s.last_to("ada@example.org")[0], BOUNCE, key=key) == (
        digest_id,
        ids["ada@example.org"],
    )
    confirmation_from = s.last_to("new@example.org")[0]
    assert mailing != digest_id
    assert read_verp(confirmation_from, BOUNCE, key=key) == (mailing, ids["new@example.org"])

    # A confirmation email that bounces makes the address bounced, like a digest.
    s.deliver(
        dsn(verp=confirmation_from, recipient="new@example.org", status="5.1.1", diagnostic="x")
    )
    assert s.check() == {"hard": 1, "bounced": 1, "unsubscribed": 0}
    assert s.state("new@example.org")[0] == "bounced"


def test_without_a_bounce_address_the_envelope_sender_is_the_from_address(
    make_context, smtp_server: SmtpTestServer, clock: FrozenClock
):
    ctx = make_context(smtp={"port": smtp_server.port})
    add_subscriber(ctx.store, "ada@example.org", now=clock())

    app.send_now(ctx)

    assert [m.mail_from for m in smtp_server.received] == ["digest@example.org"]


def test_a_forged_or_tampered_token_names_nobody_even_beside_a_real_recipient(setup):
    s = setup()
    s.add("ada@example.org")
    s.send()
    verp, _ = s.last_to("ada@example.org")
    local, _, domain = verp.partition("@")
    tampered = local[:-1] + ("a" if local[-1] != "a" else "b") + "@" + domain
    s.deliver(dsn(verp=tampered, recipient="ada@example.org", status="5.1.1", diagnostic="x"))

    assert s.check() == {"unmatched": 1, "bounced": 0, "unsubscribed": 0}
    assert s.state("ada@example.org") == ("active", None)


def test_backscatter_about_mail_someone_else_sent_names_nobody(setup):
    s = setup()
    s.add("ada@example.org")
    s.send()
    forged = dsn(recipient="ada@example.org", status="5.1.1", diagnostic="550 5.1.1 unknown")
    s.deliver(with_enclosed_message_id(forged, "<spam-7431@botnet.example>"))

    assert s.check() == {"unmatched": 1, "bounced": 0, "unsubscribed": 0}
    assert s.state("ada@example.org") == ("active", None)


def test_a_message_id_worked_out_from_another_recipients_names_nobody(setup):
    s = setup()
    s.add("ada@example.org", "bob@example.org")
    s.send()
    _, ada_id = s.last_to("ada@example.org")
    _, bob_id = s.last_to("bob@example.org")
    digest, delivery, _ = ada_id.strip("<").partition("@")[0].split(".")
    bob_delivery = bob_id.split(".")[1]
    derived = ada_id.replace(f"{digest}.{delivery}.", f"{digest}.{bob_delivery}.")
    assert derived != bob_id  # the tag is the delivery's own

    s.deliver(retarget("arf_message_id_only.eml", message_id=derived))
    assert s.check() == {"unmatched": 1, "bounced": 0, "unsubscribed": 0}
    assert s.state("bob@example.org") == ("active", None)

    s.deliver(retarget("arf_message_id_only.eml", message_id=bob_id))
    assert s.check() == {"complaint": 1, "bounced": 0, "unsubscribed": 1}
    assert s.state("bob@example.org") == ("unsubscribed", "complaint")


def test_a_recipient_alone_counts_only_for_a_mailing_sent_within_the_last_week(setup, clock):
    s = setup()
    s.add("ada@example.org", "bob@example.org")
    s.send()

    clock.advance(days=3)
    s.deliver(dsn(recipient="Ada@Example.org", status="5.1.1", diagnostic="550 5.1.1 gone"))
    assert s.check() == {"hard": 1, "bounced": 1, "unsubscribed": 0}
    assert s.state("ada@example.org") == ("bounced", "550 5.1.1 gone")

    clock.advance(days=5)  # 8 days after bob's last mailing
    s.deliver(dsn(recipient="bob@example.org", status="5.1.1", diagnostic="550 5.1.1 gone"))
    assert s.check() == {"unmatched": 1, "bounced": 0, "unsubscribed": 0}
    assert s.state("bob@example.org") == ("active", None)


def test_a_policy_refusal_is_counted_as_refused_and_changes_nothing(setup):
    s = setup()
    s.add("ada@example.org")
    digest_id = s.send()
    verp, _ = s.last_to("ada@example.org")
    s.deliver(
        dsn(verp=verp, recipient="ada@example.org", status="5.7.1", diagnostic="550 5.7.1 spam")
    )

    assert s.check() == {"refused": 1, "bounced": 0, "unsubscribed": 0}
    assert s.state("ada@example.org") == ("active", None)
    [status] = [d for d in digest_status(s.ctx) if d.id == digest_id]
    assert (status.hard_bounces, status.complaints, status.bounce_rate) == (0, 0, 0.0)
    shown = subscriber_list.show(s.ctx, "ada@example.org")
    assert [(r["outcome"], r["status"], r["matched_by"]) for r in shown["bounce_reports"]] == [
        ("refused", "5.7.1", "verp")
    ]


def test_soft_bounces_of_soft_limit_mailings_within_soft_days_bounce_the_address(setup, clock):
    s = setup(soft_limit=2, soft_days=10)
    s.add("ada@example.org")

    def soft_bounce(action: str = "failed") -> None:
        verp, _ = s.last_to("ada@example.org")
        s.deliver(
            dsn(
                verp=verp,
                recipient="ada@example.org",
                status="4.2.2" if action == "failed" else "4.4.1",
                diagnostic="552 4.2.2 mailbox full",
                action=action,
            )
        )

    s.send()
    soft_bounce("delayed")  # a delay notice, then the final failure: one mailing
    soft_bounce()
    assert s.check() == {"soft": 2, "bounced": 0, "unsubscribed": 0}
    assert s.state("ada@example.org") == ("active", None)

    clock.advance(days=11)  # the first mailing's soft bounce leaves the window
    s.new_article("002_second")
    s.send()
    soft_bounce()
    assert s.check() == {"soft": 1, "bounced": 0, "unsubscribed": 0}
    assert s.state("ada@example.org") == ("active", None)

    clock.advance(days=2)
    s.new_article("003_third")
    s.send()
    soft_bounce()
    assert s.check() == {"soft": 1, "bounced": 1, "unsubscribed": 0}
    state, reason = s.state("ada@example.org")
    assert state == "bounced"
    assert reason == "2 soft bounces within 10 days; the last: 552 4.2.2 mailbox full"


def test_an_unreadable_message_does_not_block_the_mailbox(setup):
    s = setup()
    s.deliver(b"\xff\xfe\x00garbage\r\n\r\n\x00")
    s.deliver(b"")

    assert s.check() == {"ignored": 2, "bounced": 0, "unsubscribed": 0}
    assert os.listdir(s.maildir / "new") == []


def test_any_message_is_recorded_once_and_marked_done(setup):
    s = setup()
    s.add("ada@example.org", "bob@example.org")
    s.send()
    verp, message_id = s.last_to("ada@example.org")
    names = sorted(p.name for p in (Path(__file__).parent / "bounce_mail").glob("*.eml"))
    aimed = [
        retarget(n, verp=verp, recipient="ada@example.org", message_id=message_id) for n in names
    ]

    @st.composite
    def messages(draw: st.DrawFn) -> bytes:
        raw = bytearray(draw(st.sampled_from(aimed)))
        for _ in range(draw(st.integers(0, 4))):
            at = draw(st.integers(0, len(raw)))
            if draw(st.booleans()):
                raw[at:at] = draw(st.binary(min_size=1, max_size=30))
            else:
                del raw[at : at + draw(st.integers(1, 120))]
        return bytes(raw)

    @given(raw=st.one_of(messages(), st.binary(max_size=2000)))
    @settings(
        max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
    )
    def each(raw: bytes) -> None:
        with s.ctx.store.atomic() as conn:
            before = conn.execute(select(func.count()).select_from(bounce_reports)).scalar_one()
        s.deliver(raw)

        done = check_bounces(s.ctx)

        assert done.messages == 1 and done.already_recorded == 0
        assert set(done.counts) == set(OUTCOMES)
        with s.ctx.store.atomic() as conn:
            after = conn.execute(select(func.count()).select_from(bounce_reports)).scalar_one()
        assert after == before + 1
        assert os.listdir(s.maildir / "new") == []

    each()
