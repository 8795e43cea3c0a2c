"""The test SMTP server is strict, and the shared wire check finds what it should.

Every other test relies on both: a message with a bare line break, an overlong line or a
badly folded header would be refused or reported there, so these tests prove the net holds.
"""

from __future__ import annotations

import base64
import smtplib

import pytest

from newsletter import app
from newsletter.subscribers import add_subscriber
from tests import wire
from tests.smtp_servers import SmtpTestServer

GOOD = (
    b"From: News <digest@example.org>\r\n"
    b"To: Ada <ada@example.org>\r\n"
    b"Subject: Hello\r\n"
    b"Date: Thu, 26 Nov 2026 07:00:00 +0000\r\n"
    b"Message-ID: <1@example.org>\r\n"
    b"\r\n"
    b"Hello Ada.\r\n"
)


def _send_raw(server: SmtpTestServer, data: bytes, **options: list[str]) -> None:
    with smtplib.SMTP(server.host, server.port, timeout=10) as client:
        client.sendmail("digest@example.org", ["ada@example.org"], data, **options)


@pytest.mark.parametrize(
    ("data", "reply"),
    [
        (GOOD.replace(b"Hello Ada.\r\n", b"Hello\nAda.\r\n"), b"bare CR or LF"),
        (GOOD.replace(b"Hello Ada.\r\n", b"Hello\rAda.\r\n"), b"bare CR or LF"),
        (GOOD.replace(b"Hello Ada.", b"A" * 999), b"line over 998 octets"),
        (GOOD.replace(b"Hello Ada.", "Grüße".encode()), b"8-bit data without SMTPUTF8"),
    ],
    ids=["bare LF", "bare CR", "999-octet line", "8-bit without SMTPUTF8"],
)
def test_the_server_refuses_what_a_strict_mta_refuses(data: bytes, reply: bytes):
    with (
        SmtpTestServer(expect_violations=True) as server,
        pytest.raises(smtplib.SMTPDataError) as refused,
    ):
        _send_raw(server, data)

    assert refused.value.smtp_code == 550 and reply in refused.value.smtp_error
    assert server.received == []
    assert [rcpt for rcpt, _ in server.handler.violations] == ["ada@example.org"]


def test_the_server_takes_a_conforming_message_and_offers_smtputf8_only_when_asked():
    with SmtpTestServer() as plain, SmtpTestServer(smtputf8=True) as utf8:
        _send_raw(plain, GOOD)
        _send_raw(utf8, GOOD)
        with smtplib.SMTP(plain.host, plain.port, timeout=10) as client:
            client.ehlo()
            plain_offers = client.has_extn("smtputf8")
        with smtplib.SMTP(utf8.host, utf8.port, timeout=10) as client:
            client.ehlo()
            utf8_offers = client.has_extn("smtputf8")

    assert (plain_offers, utf8_offers) == (False, True)
    assert len(plain.received) == len(utf8.received) == 1


def test_a_message_that_breaks_a_header_rule_fails_the_test_that_sent_it():
    unfolded = GOOD.replace(b"Subject: Hello", b"Subject: " + b"word " * 20)
    server = SmtpTestServer()
    with (
        pytest.raises(AssertionError, match="1 messages broke the wire rules"),
        server,
        pytest.raises(smtplib.SMTPDataError),
    ):
        _send_raw(server, unfolded)
    assert "foldable" in server.handler.violations[0][1][0]


def _ew(text: str) -> bytes:
    return b"=?utf-8?b?" + base64.b64encode(text.encode()) + b"?="


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        (GOOD, None),
        (GOOD.replace(b"Subject: Hello", b"Subject: " + b"word " * 20), "foldable"),
        (GOOD.replace(b"Subject: Hello", b"Subject: " + _ew("é" * 40)), "encoded-word over 75"),
        (GOOD.replace(b"Subject: Hello", b"Subject: x " + _ew("é" * 30)), "encoded-words over 76"),
        (GOOD.replace(b"To: Ada <ada@example.org>", b"To: Ada <eve@example.org>"), "envelope"),
        (GOOD.replace(b"To: Ada", b"To: Ada, Bob <bob@example.org>,"), "one address"),
        (GOOD.replace(b"Message-ID: <1@example.org>\r\n", b""), "no Message-ID"),
        (GOOD.replace(b"\r\n\r\n", b"\r\nno colon here\r\n\r\n"), "not a header field"),
        (GOOD.replace(b"Subject: Hello", b"Subject: Hello\r\n" + b"X" * 999), "998"),
    ],
    ids=[
        "conforms",
        "long foldable line",
        "long encoded-word",
        "long line with encoded-word",
        "To is not the recipient",
        "two addresses",
        "no Message-ID",
        "not a field",
        "overlong line",
    ],
)
def test_the_wire_check_finds_each_kind_of_problem(data: bytes, problem: str | None):
    found = wire.problems(data, rcpt_tos=["ada@example.org"])

    if problem is None:
        assert found == []
    else:
        assert any(problem in p for p in found), found


def test_the_wire_check_verifies_dkim_when_a_message_is_signed(make_context, clock):
    with SmtpTestServer() as server:
        ctx = make_context(smtp={"port": server.port}, dkim=wire.dkim_key().settings())
        add_subscriber(ctx.store, "ada@example.org", "Ada", now=clock())
        app.send_now(ctx)
    [received] = server.received

    assert wire.problems(received.data, rcpt_tos=["ada@example.org"]) == []
    tampered = received.data.replace(b"Subject: ", b"Subject: Re: ", 1)
    assert "DKIM signature does not verify" in wire.problems(tampered)
