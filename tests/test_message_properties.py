"""Properties of every message, over any name, attribute, address, subject and title.

Building a message never raises (an address that cannot be sent is refused with
``UnsendableAddress``, which fails that one delivery), every message conforms on the wire
(``tests/wire.py``), and personalization is exact: the To display name and address, the
Subject and the values in both bodies are what went in, after the documented cleaning.
"""

from __future__ import annotations

import html
import json
import re
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from newsletter import app
from newsletter.app import Context
from newsletter.config import Settings, load_settings
from newsletter.delivery.dkim import make_signer
from newsletter.headers import UnsendableAddress
from newsletter.message import NAME_FALLBACK, PreparedMessage
from newsletter.models import Recipient, SubscriberState
from newsletter.personalization import MAX_ATTR_CHARS, MAX_NAME_CHARS, TokenSet
from newsletter.store import digests as digest_rows
from newsletter.store import subscribers as subscriber_rows
from tests import wire
from tests.personal_values import (
    addresses,
    attr_values,
    documented_cleaning,
    expected_wire_address,
    names,
    titles,
)
from tests.smtp_servers import SmtpTestServer

NOW = datetime(2026, 11, 26, 7, 0, tzinfo=UTC)
UNSUBSCRIBE = "https://news.example.org/unsubscribe/tok.{id}"


def _settings(title: str, from_name: str, *, sign: bool) -> Settings:
    return load_settings(
        None,
        dkim=wire.dkim_key().settings() if sign else {},
        newsletter={
            "title": title,
            "from_name": from_name,
            "from_address": "digest@news.example.org",
            "unsubscribe_mailto": "leave@news.example.org",
        },
        web={"secret": "test-secret-0123456789abcdef"},
    )


def _message(
    tokens: TokenSet, *, subject: str, title: str, from_name: str, sign: bool = False
) -> PreparedMessage:
    """A message whose bodies show each personal field between markers, with long static text
    around (so the joins between static and personal pieces are exercised)."""
    fields = "".join(
        f"{mark}[{tokens.token(name)}]{mark} "
        for mark, name in [
            ("N", "name"),
            ("E", "email"),
            ("C", "attr_city"),
            ("U", "unsubscribe_url"),
        ]
    )
    filler = "Static text that goes on for a while, " * 5
    settings = _settings(title, from_name, sign=sign)
    return PreparedMessage(
        digest_id=7,
        subject=subject,
        html_body=f"<p>{filler}{fields}{filler}</p>\n<p>{fields}</p>",
        text_body=f"{filler}\n{fields}{filler}\n{fields}\n",
        tokens=tokens,
        settings=settings,
        unsubscribe_url=lambda r: UNSUBSCRIBE.format(id=r.subscriber_id),
        dkim_sign=make_signer(settings.dkim, default_domain="news.example.org"),
    )


def _check_personalization(
    data: bytes, *, smtputf8: bool, name: str, email: str, city: str, address: str, times: int = 2
) -> None:
    expected_name = documented_cleaning(name, MAX_NAME_CHARS)
    assert wire.mailbox(data, "To") == (expected_name, address)
    message = wire.parse(data, smtputf8=smtputf8)
    plain = message.get_body(("plain",))
    rich = message.get_body(("html",))
    assert plain is not None and rich is not None
    text, page = plain.get_content(), rich.get_content()
    expected = {
        "N": expected_name or NAME_FALLBACK,
        "E": email,
        "C": documented_cleaning(city, MAX_ATTR_CHARS),
    }
    for body in (text, html.unescape(page)):
        # Counted whole, marker and value: a value holding a marker such as "U[" cannot be
        # mistaken for the next field.
        for mark, value in expected.items():
            assert body.count(f"{mark}[{value}]{mark}") == times, (mark, body)
        unsubscribe = re.findall(r"U\[(https://news\.example\.org/[^\]\s]+)\]U", body)
        assert len(unsubscribe) == times, body


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(name=names, city=attr_values, email=addresses, subject=titles)
def test_any_recipient_gets_a_conforming_exact_message(
    name: str, city: str, email: str, subject: str
) -> None:
    message = _message(TokenSet(), subject=subject, title="Daily", from_name="News")
    recipient = Recipient(3, 5, email, name, {"city": city})
    expected = expected_wire_address(email)

    if expected is None:  # no A-label form: refused with a reason, nothing else raises
        with pytest.raises(UnsendableAddress, match="not a valid internationalized domain"):
            message.personalize(recipient, now=NOW)
        return
    envelope = message.personalize(recipient, now=NOW)

    assert (envelope.recipient, envelope.smtputf8) == expected
    wire.assert_conforms(envelope.data, rcpt_tos=[envelope.recipient], smtputf8=envelope.smtputf8)
    assert wire.subject(envelope.data) == documented_cleaning(subject)
    _check_personalization(
        envelope.data,
        smtputf8=envelope.smtputf8,
        name=name,
        email=email,
        city=city,
        address=envelope.recipient,
    )


@settings(max_examples=60, deadline=None)
@given(title=titles, from_name=names, subject=titles, name=names)
def test_operator_texts_give_conforming_signed_headers(
    title: str, from_name: str, subject: str, name: str
) -> None:
    message = _message(TokenSet(), subject=subject, title=title, from_name=from_name, sign=True)

    envelope = message.personalize(Recipient(1, 2, "ada@example.org", name), now=NOW)

    wire.assert_conforms(envelope.data, rcpt_tos=["ada@example.org"])  # DKIM verified there
    assert wire.mailbox(envelope.data, "From") == (
        documented_cleaning(from_name),
        "digest@news.example.org",
    )
    assert wire.subject(envelope.data) == documented_cleaning(subject)
    assert wire.mailbox(envelope.data, "List-Id") == (
        documented_cleaning(title),
        "digest.news.example.org",
    )


@given(value=st.text(max_size=400))
@settings(max_examples=100, deadline=None)
def test_no_personal_value_can_make_a_bare_line_break_or_a_long_line(value: str) -> None:
    message = _message(TokenSet(), subject="S", title="T", from_name="F")

    envelope = message.personalize(
        Recipient(1, 2, "ada@example.org", value, {"city": value}), now=NOW
    )

    data = envelope.data
    assert data.count(b"\n") == data.count(b"\r\n") == data.count(b"\r")
    assert max(len(line) for line in data.split(b"\r\n")) <= 78


# -- the whole pipeline: database, render, outbox, strict SMTP server -----------------------

TEXT_TEMPLATE = (
    "N[{{ subscriber.name }}]N C[{{ subscriber.attrs.city }}]C E[{{ subscriber.email }}]E\n"
    "{% for article in articles %}{{ article.title }}\n{% endfor %}"
    "U[{{ unsubscribe_url }}]U\n"
)
HTML_TEMPLATE = (
    "<html><body><p>N[{{ subscriber.name }}]N C[{{ subscriber.attrs.city }}]C "
    "E[{{ subscriber.email }}]E</p>{% for article in articles %}<h2>{{ article.title }}</h2>"
    '{% endfor %}<a href="{{ unsubscribe_url }}">U[{{ unsubscribe_url }}]U</a></body></html>\n'
)
people = st.lists(
    st.tuples(addresses, names, attr_values),
    min_size=1,
    max_size=4,
    unique_by=lambda person: person[0].lower(),
)


def _site(folder: Path, article_title: str) -> tuple[Path, Path]:
    templates, articles = folder / "templates", folder / "articles"
    templates.mkdir()
    articles.mkdir()
    (templates / "digest.txt.j2").write_text(TEXT_TEMPLATE, encoding="utf-8")
    (templates / "digest.html.j2").write_text(HTML_TEMPLATE, encoding="utf-8")
    for name, title in [("001_fixed.md", "A plain title"), ("002_any.md", article_title)]:
        quoted = json.dumps(title, ensure_ascii=False)  # a YAML double-quoted string
        (articles / name).write_text(
            f"---\ntitle: {quoted}\ndate: 2026-11-25\n---\nThe body.\n", encoding="utf-8"
        )
    return templates, articles


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(people=people, title=titles, article_title=titles, smtputf8=st.booleans())
def test_sending_to_anyone_never_raises_and_each_sendable_address_gets_its_exact_message(
    tmp_path_factory: pytest.TempPathFactory,
    people: list[tuple[str, str, str]],
    title: str,
    article_title: str,
    smtputf8: bool,
) -> None:
    folder = tmp_path_factory.mktemp("site")
    templates, articles = _site(folder, article_title)
    with SmtpTestServer(smtputf8=smtputf8) as server:
        settings_ = load_settings(
            None,
            store={"url": f"sqlite:///{folder / 'news.db'}"},
            sources={"articles_dir": str(articles)},
            digest={"max_age_days": 36500, "templates_dir": str(templates)},
            newsletter={"title": title},
            smtp={"port": server.port, "retry_base_seconds": 0.01, "retry_max_seconds": 0.05},
            web={"secret": "test-secret-0123456789abcdef", "base_url": "https://news.example.org"},
        )
        ctx = Context.open(settings_, clock=lambda: NOW)
        try:
            with ctx.store.atomic() as conn:
                subscriber_rows.insert_many(
                    conn,
                    [(email, name, {"city": city}) for email, name, city in people],
                    state=SubscriberState.ACTIVE,
                    now=NOW,
                )

            summary = app.send_now(ctx)

            with ctx.store.atomic() as conn:
                [digest] = digest_rows.recent_digests(conn)
        finally:
            ctx.close()

    assert summary.report is not None
    assert sum(summary.report.counts.values()) == len(people)
    assert "pending" not in summary.report.counts and "sending" not in summary.report.counts
    received = {wire.unquoted(r.rcpt_tos[0]): r for r in server.received}
    for email, name, city in people:
        expected = expected_wire_address(email)
        if expected is None or (expected[1] and not smtputf8):
            assert all(address != email for address in received)  # failed, with its reason
            continue
        message = received.pop(wire.unquoted(expected[0]))
        assert message.smtputf8 == expected[1]
        assert wire.subject(message.data) == documented_cleaning(digest.subject)
        _check_personalization(
            message.data,
            smtputf8=message.smtputf8,
            name=name,
            email=email,
            city=city,
            address=expected[0],
            times=1,
        )
    assert received == {}  # nobody else got anything
