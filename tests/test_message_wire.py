"""Digests on the wire (issue #9, items 1, 3 and 10): CRLF only, short lines, folded headers
with short encoded-words, and no control or bidi character in any header, whatever the data.

Each test sends through the strict test server, which refuses a bare LF or a line over 998
octets and checks every message (``tests/wire.py``); the assertions here add what the items
promise beyond that.
"""

from __future__ import annotations

import re

from newsletter import app
from newsletter.models import SubscriberState
from newsletter.personalization import MAX_NAME_CHARS
from newsletter.store import subscribers as subscriber_rows
from tests import wire
from tests.smtp_servers import SmtpTestServer


def _add(ctx: app.Context, email: str, name: str, attrs: dict[str, str] | None = None) -> None:
    """A subscriber stored as it is, as a database written by an earlier release may hold it."""
    with ctx.store.atomic() as conn:
        subscriber_rows.insert_many(
            conn, [(email, name, attrs or {})], state=SubscriberState.ACTIVE, now=ctx.clock()
        )


def _head(data: bytes) -> list[bytes]:
    return data.partition(b"\r\n\r\n")[0].split(b"\r\n")


def test_long_unsubscribe_links_and_long_names_give_crlf_only_and_short_lines(make_context):
    long_name = "漢字かな交じり文" * 25  # 200 characters, 600 octets in UTF-8
    with SmtpTestServer() as server:
        ctx = make_context(
            smtp={"port": server.port},
            web={"base_url": "https://news.example.org/a/rather/long/path/for/the/web/app"},
        )
        _add(ctx, "ada@example.org", "Ada Lovelace")
        _add(ctx, "kanji@example.org", long_name, {"city": "東京" * 100})

        summary = app.send_now(ctx)

    assert summary.report is not None and summary.report.counts == {"sent": 2}
    for received in server.received:
        data = received.data
        assert data.count(b"\n") == data.count(b"\r\n") == data.count(b"\r")
        body = data.partition(b"\r\n\r\n")[2]
        assert max(len(line) for line in body.split(b"\r\n")) <= 78
        # In the header only the unsubscribe link, one token that cannot fold, is longer.
        long_lines = [line for line in _head(data) if len(line) > 78]
        assert [line.split(b" ")[0] for line in long_lines] == [b"List-Unsubscribe:"]
    kanji = next(r for r in server.received if r.rcpt_tos == ["kanji@example.org"])
    assert wire.mailbox(kanji.data, "To") == (long_name[:MAX_NAME_CHARS], "kanji@example.org")
    text = kanji.parse().get_body(("plain",))
    assert text is not None and long_name[:MAX_NAME_CHARS] in text.get_content()
    assert long_name[: MAX_NAME_CHARS + 1] not in text.get_content()  # capped in bodies too


def test_header_lines_fold_at_76_with_encoded_words_of_at_most_75(make_context):
    name = "Maria José Fernández de la Cruz Rodríguez y Müller-Lüdenscheidt Ñáñez"
    with SmtpTestServer() as server:
        ctx = make_context(
            smtp={"port": server.port},
            newsletter={"title": "Les Nouvelles Générales de la Région " * 3},
            digest={"subject": "Éditions spéciales: {{ title }}"},
        )
        _add(ctx, "maria@example.org", name)

        app.send_now(ctx)

    [received] = server.received
    head = _head(received.data)
    words = [w for line in head for w in re.findall(rb"=\?[^?]+\?[bq]\?[^?]*\?=", line, re.I)]
    assert words and max(len(w) for w in words) <= 75
    # Every line but the unsubscribe link's (one token, see the test above) is short.
    assert max(len(line) for line in head if not line.startswith(b"List-Unsubscribe:")) <= 78
    assert max(len(line) for line in head if b"=?" in line) <= 76  # RFC 2047 section 2
    to = [line for line in head if line.startswith(b"To:")]
    assert len(to) == 1 and len(head[head.index(to[0]) + 1]) > 0  # folded onto a second line
    assert wire.mailbox(received.data, "To") == (name, "maria@example.org")
    assert wire.subject(received.data) == (
        "Éditions spéciales: " + " ".join(["Les Nouvelles Générales de la Région"] * 3)
    )


def test_control_and_bidi_characters_never_reach_a_header_or_a_body(make_context):
    name = "\x1b[31mEve\x00 \u202eexe.txt\u202c \u2066Ann\u2069\u200f\r\nBcc: x@example.org"
    with SmtpTestServer() as server:
        ctx = make_context(
            smtp={"port": server.port},
            newsletter={"from_name": "News\x1b]0;pwned\x07 Desk\u202e"},
        )
        _add(ctx, "eve@example.org", name, {"city": "Par\u202eis\x1b"})

        app.send_now(ctx)

    [received] = server.received
    message = received.parse()
    assert wire.mailbox(received.data, "To") == (
        "[31mEve exe.txt Ann Bcc: x@example.org",
        "eve@example.org",
    )
    assert wire.mailbox(received.data, "From")[0] == "News]0;pwned Desk"
    assert message["Bcc"] is None
    for part in message.walk():
        if part.get_content_maintype() == "text":
            content = part.get_content()
            assert not re.search(
                "[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\u202a-\u202e\u2066-\u2069]", content
            )
