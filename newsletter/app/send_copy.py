"""A test copy: the next digest sent to one address, marking nothing as sent."""

from __future__ import annotations

import smtplib

from newsletter.app.context import Context
from newsletter.app.digest import NextDigest, next_digest
from newsletter.app.send import dkim_signer
from newsletter.delivery.smtp import classify, close_quietly, connect, send_message
from newsletter.errors import DeliveryError, SubscriberError
from newsletter.headers import UnsendableAddress
from newsletter.message import Envelope, PreparedMessage
from newsletter.models import Recipient
from newsletter.store import subscribers as subscriber_rows
from newsletter.subscribers.addresses import normalize_address


def send_test_copy(ctx: Context, address: str) -> tuple[Envelope, NextDigest]:
    """Send the next digest to one address as a test; nothing is marked as sent.

    Signed like the real thing. An address that is not on the list gets no unsubscribe link
    (there is nobody to unsubscribe): no List-Unsubscribe fields, a note in the bodies.
    """
    to = normalize_address(address)
    ctx.check_link_settings()  # a test copy to a listed address carries a real link
    upcoming, _ = next_digest(ctx, remember=False)
    if upcoming is None:
        raise SubscriberError("no new articles: there is no next digest to send a test copy of")
    with ctx.store.atomic() as conn:
        known = subscriber_rows.get_by_email(conn, to)
    recipient = Recipient(
        delivery_id=0,
        subscriber_id=known.id if known else 0,
        email=to,
        name=known.name if known else "",
        attrs=known.attrs if known else {},
        public_id=known.public_id if known else "",
    )
    message = PreparedMessage(
        digest_id=0,
        subject="[TEST] " + upcoming.rendered.subject,
        html_body=upcoming.rendered.html,
        text_body=upcoming.rendered.text,
        tokens=upcoming.tokens,
        settings=ctx.settings,
        unsubscribe_url=(lambda r: ctx.unsubscribe_url(r.public_id)) if known else None,
        dkim_sign=dkim_signer(ctx),
    )
    try:
        envelope = message.personalize(recipient, now=ctx.clock())
    except UnsendableAddress as exc:
        raise SubscriberError(f"cannot send a test copy to {to}: {exc}") from exc
    client = connect(ctx.settings.smtp)
    try:
        send_message(
            client, envelope.sender, envelope.recipient, envelope.data, smtputf8=envelope.smtputf8
        )
    except (OSError, smtplib.SMTPException) as exc:
        reason = classify(exc, envelope.recipient).reason
        raise DeliveryError(
            f"the SMTP server did not accept the test copy for {to}: {reason}"
        ) from exc
    finally:
        close_quietly(client)
    return envelope, upcoming
