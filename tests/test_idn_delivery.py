"""International addresses (issue #9, item 2): IDN domains in A-labels, SMTPUTF8 only where the
server offers it, and an address that cannot be sent fails only its own delivery.

Subscribers are stored as they are, the way a database from an earlier release may hold them,
so the sending side is tested for any stored address whatever the input side accepts today.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from newsletter import app
from newsletter.app import confirmations
from newsletter.app.status import digest_status
from newsletter.models import SubscriberState
from newsletter.store import subscribers as subscriber_rows
from tests import wire
from tests.conftest import Run
from tests.smtp_servers import SmtpTestServer

pytestmark = pytest.mark.both_stores  # see tests/conftest.py


def _add(ctx: app.Context, *people: tuple[str, str]) -> None:
    with ctx.store.atomic() as conn:
        subscriber_rows.insert_many(
            conn,
            [(email, name, {}) for email, name in people],
            state=SubscriberState.ACTIVE,
            now=ctx.clock(),
        )


def _by_rcpt(server: SmtpTestServer) -> dict[str, bytes]:
    return {r.rcpt_tos[0]: r.data for r in server.received}


def test_an_idn_domain_goes_out_in_a_labels_to_a_server_without_smtputf8(make_context):
    with SmtpTestServer() as server:
        ctx = make_context(smtp={"port": server.port})
        _add(ctx, ("jurgen@bücher.de", "Jürgen"), ("ada@example.org", "Ada"))

        summary = app.send_now(ctx)

    assert summary.report is not None and summary.report.counts == {"sent": 2}
    received = _by_rcpt(server)
    assert set(received) == {"jurgen@xn--bcher-kva.de", "ada@example.org"}
    assert wire.mailbox(received["jurgen@xn--bcher-kva.de"], "To") == (
        "Jürgen",
        "jurgen@xn--bcher-kva.de",
    )
    assert not any(r.smtputf8 for r in server.received)


def test_a_non_ascii_local_part_goes_out_with_smtputf8_when_the_server_offers_it(make_context):
    with SmtpTestServer(smtputf8=True) as server:
        ctx = make_context(smtp={"port": server.port})
        _add(ctx, ("jörg@bücher.de", "Jörg"), ("ada@example.org", "Ada"))

        summary = app.send_now(ctx)

    assert summary.report is not None and summary.report.counts == {"sent": 2}
    [utf8] = [r for r in server.received if r.rcpt_tos == ["jörg@bücher.de"]]
    assert utf8.smtputf8  # MAIL FROM carried the SMTPUTF8 parameter
    assert wire.mailbox(utf8.data, "To") == ("Jörg", "jörg@bücher.de")
    [ascii_only] = [r for r in server.received if r.rcpt_tos == ["ada@example.org"]]
    assert not ascii_only.smtputf8 and ascii_only.data.isascii()


def test_an_address_that_cannot_be_sent_fails_only_its_delivery_with_the_reason(make_context):
    with SmtpTestServer() as server:
        ctx = make_context(smtp={"port": server.port})
        _add(
            ctx,
            ("jörg@bücher.de", "Jörg"),  # needs SMTPUTF8, which this server does not offer
            ("snow@☃.example", "Snow"),  # a symbol: no IDNA 2008 form
            ("jurgen@bücher.de", "Jürgen"),
            ("ada@example.org", "Ada"),
        )

        summary = app.send_now(ctx)
        again = app.send_now(ctx)  # nothing is left half-done: the next run has nothing to do

    assert summary.report is not None
    assert summary.report.counts == {"sent": 2, "failed": 2}
    assert set(server.handler.recipients()) == {"jurgen@xn--bcher-kva.de", "ada@example.org"}
    [status] = digest_status(ctx)
    assert status.state == "sent"
    idna, smtputf8 = sorted(reason for reason, _ in status.failures)
    assert smtputf8 == (
        "the server does not offer SMTPUTF8, which the address 'jörg@bücher.de' needs "
        "(its local part is not ASCII)"
    )
    assert idna.startswith(
        "the domain '☃.example' is not a valid internationalized domain name (Codepoint U+2603"
    )
    assert again.resumed == [] and again.skipped_reason == "no new articles since the last digest"
    with ctx.store.atomic() as conn:  # a refusal of ours says nothing about the mailbox
        states = {row.email: row.state for row in subscriber_rows.iter_all(conn)}
    assert set(states.values()) == {SubscriberState.ACTIVE}


def test_a_test_copy_to_an_idn_address(run: Run, env: Path, smtp_server: SmtpTestServer):
    code, out, _ = run("send-now", "--to", "Editor@Bücher.de")

    assert code == 0, out
    assert smtp_server.handler.recipients() == ["editor@xn--bcher-kva.de"]
    [received] = smtp_server.received
    assert wire.mailbox(received.data, "To")[1] == "editor@xn--bcher-kva.de"


def test_confirmation_emails_follow_the_same_rules(make_context):
    """They go through the same outbox and message builder as digests."""
    with SmtpTestServer() as plain, SmtpTestServer(smtputf8=True) as utf8:
        ctx = make_context(smtp={"port": plain.port})
        with ctx.store.atomic() as conn:
            subscriber_rows.insert_many(
                conn,
                [("jörg@bücher.de", "Jörg", {}), ("jurgen@bücher.de", "Jürgen", {})],
                state=SubscriberState.PENDING,
                now=ctx.clock(),
            )
            people = subscriber_rows.get_many_by_email(conn, ["jörg@bücher.de", "jurgen@bücher.de"])
            email = confirmations.render_confirmation(ctx)
            first = confirmations.queue_confirmations(conn, email, people, now=ctx.clock())
        confirmations.deliver_confirmations(ctx)
        # Again for Jörg, to a server that offers SMTPUTF8.
        ctx = make_context(smtp={"port": utf8.port})
        with ctx.store.atomic() as conn:
            second = confirmations.queue_confirmations(conn, email, people[:1], now=ctx.clock())
        confirmations.deliver_confirmations(ctx)

    assert first is not None and second is not None
    assert confirmations.confirmation_report(ctx, [first]).failed == [
        (
            "jörg@bücher.de",
            "the server does not offer SMTPUTF8, which the address 'jörg@bücher.de' needs "
            "(its local part is not ASCII)",
        )
    ]
    assert plain.handler.recipients() == ["jurgen@xn--bcher-kva.de"]
    assert utf8.handler.recipients() == ["jörg@bücher.de"]
    assert wire.mailbox(utf8.received[0].data, "To") == ("Jörg", "jörg@bücher.de")
