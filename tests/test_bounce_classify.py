"""Classifying bounce-mailbox messages: real MTA shapes, and never a crash on anything else.

The fixtures in tests/bounce_mail/ carry VERP addresses made with FIXTURE_SECRET for the
bounce address bounces@news.example.org (as tokens in mail already sent, they must keep
decoding).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from newsletter.bounces.classify import BounceKind, Classification, classify
from newsletter.bounces.verp import read_verp, verp_address, verp_key
from newsletter.models import HARD_BOUNCE_CODES

FIXTURES = Path(__file__).resolve().parent / "bounce_mail"
FIXTURE_SECRET = "bounce-fixtures-secret-0123456789"
KEY = verp_key(FIXTURE_SECRET)
BOUNCE = "bounces@news.example.org"
HARD, SOFT, REFUSED = BounceKind.HARD, BounceKind.SOFT, BounceKind.REFUSED
COMPLAINT, IGNORED = BounceKind.COMPLAINT, BounceKind.IGNORED


@dataclass(frozen=True)
class Expected:
    kind: BounceKind
    format: str
    delivery: tuple[int, str] | None  # what the VERP address found decodes to
    recipients: tuple[str, ...] = ()
    message_ids: tuple[str, ...] = ()
    status: str | None = None
    diagnostic: str | None = None


EXPECTED = {
    "postfix_user_unknown.eml": Expected(
        HARD,
        "dsn",
        (42, "kX9vQ2mTz4Rb"),
        ("ada.gone@example.net",),
        ("<42.1017.3f9a1c2b7d4e@news.example.org>",),
        "5.1.1",
        "550 5.1.1 <ada.gone@example.net>: Recipient address rejected: "
        "User unknown in virtual mailbox table",
    ),
    "exim_user_unknown.eml": Expected(
        HARD,
        "dsn",
        (42, "Hn3pW8sLc6Ye"),
        ("brook.away@example.com",),
        ("<42.1018.3f9a1c2b7d4e@news.example.org>",),
        "5.0.0",  # Exim's Status field; the 5.1.1 is in the diagnostic
        "550 5.1.1 <brook.away@example.com>: Recipient address rejected: User unknown",
    ),
    "exim_legacy_text_bounce.eml": Expected(
        HARD,
        "bounce",
        (45, "qW1eR3tY5uI7"),
        ("hale.moved@example.com",),
        (),
        "5.1.1",
        "host mx.example.com [192.0.2.31]: 550 5.1.1 <hale.moved@example.com>... User unknown",
    ),
    "gmail_no_such_user.eml": Expected(
        HARD,
        "dsn",
        (43, "mR7tB2xQv9Ka"),
        ("casey.old@example.org",),
        ("<43.2003.3f9a1c2b7d4e@news.example.org>",),
        "5.1.1",
        "550 5.1.1 The email account that you tried to reach does not exist. Please try "
        "double-checking the recipient's email address for typos or unnecessary spaces. "
        "For more information, go to https://support.google.com/mail/?p=NoSuchUser "
        "a27si1187654oai.2 - gsmtp",
    ),
    "outlook_ndr.eml": Expected(
        HARD,
        "dsn",
        (42, "Zc5uN1oPq8Ld"),
        ("dana.left@contoso.com",),
        ("<42.1020.3f9a1c2b7d4e@news.example.org>",),
        "5.1.10",
        "550 5.1.10 RESOLVER.ADR.RecipientNotFound; Recipient not found by SMTP address lookup",
    ),
    "postfix_delayed.eml": Expected(
        SOFT,
        "dsn",
        (46, "pL0oK9iJ8uHy"),
        ("ivy@slow.example",),
        ("<46.5001.3f9a1c2b7d4e@news.example.org>",),
        "4.4.1",
        "connect to mx.slow.example[203.0.113.9]:25: Connection timed out",
    ),
    "sendmail_mailbox_full.eml": Expected(
        SOFT,
        "dsn",
        (46, "tG5fR4eD3sWa"),
        ("gina@example.edu",),
        ("<46.5002.3f9a1c2b7d4e@news.example.org>",),
        "5.2.2",
        "552 5.2.2 <gina@example.edu>... Mailbox full",
    ),
    "yahoo_arf.eml": Expected(
        COMPLAINT,
        "arf",
        (44, "wE4rT6yU8iOp"),
        ("erin.k@yahoo.com",),
        ("<44.3001.3f9a1c2b7d4e@news.example.org>",),
        diagnostic="feedback-type abuse from Yahoo!-Mail-Feedback/2.0",
    ),
    "arf_redacted_recipient.eml": Expected(
        COMPLAINT,
        "arf",
        (44, "aS2dF4gH6jKl"),  # from the enclosed message's Return-Path
        (),
        ("<44.3002.3f9a1c2b7d4e@news.example.org>",),
        diagnostic="feedback-type abuse from MailISP-FBL/1.4",
    ),
    "arf_message_id_only.eml": Expected(
        COMPLAINT,
        "arf",
        None,  # no VERP address anywhere: the Message-ID is the only clue
        (),
        ("<45.3017.3f9a1c2b7d4e@news.example.org>",),
        diagnostic="feedback-type abuse from Webmail-JMR/3.0",
    ),
    "out_of_office.eml": Expected(IGNORED, "auto-reply", (45, "zX9cV7bN5mQw")),
    "vacation_reply.eml": Expected(IGNORED, "auto-reply", (47, "yH7uJ9kL1zXc")),
    "postfix_delivered.eml": Expected(IGNORED, "dsn", (47, "vB3nM5qW7eRt")),
    "not_a_bounce.eml": Expected(IGNORED, "other", (47, "iO9pA1sD3fGh")),
}


def deliveries(result: Classification) -> list[tuple[int, str]]:
    decoded = [read_verp(address, BOUNCE, key=KEY) for address in result.verp_candidates]
    return [found for found in decoded if found is not None]


def test_every_fixture_has_an_expectation():
    assert sorted(p.name for p in FIXTURES.glob("*.eml")) == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_fixture_is_classified_exactly(name: str):
    expected = EXPECTED[name]

    result = classify((FIXTURES / name).read_bytes())

    assert (result.kind, result.format) == (expected.kind, expected.format)
    assert deliveries(result) == ([expected.delivery] if expected.delivery else [])
    assert result.recipients == expected.recipients
    assert result.message_ids == expected.message_ids
    assert result.status == expected.status
    assert result.diagnostic == expected.diagnostic


def test_crlf_line_endings_as_imap_serves_them_change_nothing():
    for name, expected in EXPECTED.items():
        raw = (FIXTURES / name).read_bytes().replace(b"\n", b"\r\n")
        result = classify(raw)
        assert (result.kind, result.status, result.recipients) == (
            expected.kind,
            expected.status,
            expected.recipients,
        ), name


# --- the hard/soft rule, over generated DSNs -------------------------------------------------

DSN_TEMPLATE = """\
From: MAILER-DAEMON@mail.news.example.org (Mail Delivery System)
To: {verp}
Subject: Undelivered Mail Returned to Sender
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status; boundary="b0undary"

--b0undary
Content-Type: text/plain

Delivery failed.

--b0undary
Content-Type: message/delivery-status

Reporting-MTA: dns; mail.news.example.org

Final-Recipient: rfc822; {recipient}
Action: {action}
Status: {status}
Diagnostic-Code: smtp; {diagnostic}

--b0undary--
"""

# Diagnostics without digits: the Status field alone carries the code here.
words = st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=60).map(
    lambda text: re.sub(r"[0-9]", "x", text)
)
enhanced = st.one_of(
    st.sampled_from([*HARD_BOUNCE_CODES, "4.2.2", "5.2.2", "5.7.1", "5.1.2", "4.7.0"]),
    st.tuples(st.sampled_from("245"), st.integers(0, 7), st.integers(0, 999)).map(
        lambda t: f"{t[0]}.{t[1]}.{t[2]}"
    ),
)


@given(
    action=st.sampled_from(["failed", "delayed", "delivered", "relayed", "expanded"]),
    status=enhanced,
    diagnostic=words,
    digest_id=st.integers(1, 10**6),
)
@settings(max_examples=150, deadline=None)
def test_hard_soft_or_refused_follows_action_status_and_mailbox_full(
    action: str, status: str, diagnostic: str, digest_id: int
):
    verp = verp_address(BOUNCE, digest_id, "Sub-Key_1", key=KEY)
    raw = DSN_TEMPLATE.format(
        verp=verp, recipient="ann@example.net", action=action, status=status, diagnostic=diagnostic
    ).encode()

    result = classify(raw)

    full = re.search(r"mailbox (is )?full|over ?quota|quota exceeded", diagnostic, re.I)
    if action in ("delivered", "relayed", "expanded"):
        expected = IGNORED
    elif action == "delayed":
        expected = SOFT
    elif status in HARD_BOUNCE_CODES:  # the one rule: the mailbox is gone
        expected = HARD
    elif status.startswith("4.") or status == "5.2.2" or full:
        expected = SOFT
    else:  # refused for good, but not because of the address: a policy, a spam filter
        expected = REFUSED
    assert result.kind == expected
    assert deliveries(result) == [(digest_id, "Sub-Key_1")]
    if expected is not IGNORED:
        assert result.status == status
        assert result.recipients == ("ann@example.net",)


@pytest.mark.parametrize(
    ("status", "diagnostic", "expected"),
    [
        ("5.7.1", "550 5.7.1 Message rejected as spam by Content Filtering", "refused"),
        ("5.7.26", "550 5.7.26 Unauthenticated email is not accepted", "refused"),
        ("5.0.0", "550 5.1.1 <ann@example.net>: Recipient address rejected", "hard"),
        ("5.0.0", "550 5.2.1 mailbox disabled, not accepting messages", "hard"),
        ("5.0.0", "552 mailbox is full", "soft"),
        ("5.1.10", "550 5.1.10 RESOLVER.ADR.RecipientNotFound", "hard"),
    ],
)
def test_the_hard_bounce_rule_is_the_one_smtp_time_refusals_follow(
    status: str, diagnostic: str, expected: str
):
    raw = DSN_TEMPLATE.format(
        verp=BOUNCE, recipient="ann@example.net", action="failed", status=status,
        diagnostic=diagnostic,
    ).encode()  # fmt: skip

    assert classify(raw).kind.value == expected


# --- never raises, output conforms ----------------------------------------------------------

STATUS = re.compile(r"[245]\.\d{1,3}\.\d{1,3}")


def assert_conforms(result: Classification) -> None:
    assert result.format != "unreadable", result.diagnostic  # the safety net was not needed
    assert isinstance(result.kind, BounceKind)
    assert result.status is None or STATUS.fullmatch(result.status)
    if result.diagnostic is not None:
        assert len(result.diagnostic) <= 300
        assert result.diagnostic.isprintable()
    for value in (*result.verp_candidates, *result.recipients, *result.message_ids):
        assert "\r" not in value and "\n" not in value
    assert all("@" in address for address in (*result.verp_candidates, *result.recipients))
    assert all(re.fullmatch(r"<[^<>\s]+>", mid) for mid in result.message_ids)


@given(raw=st.binary(max_size=4000))
@settings(max_examples=200, deadline=None)
def test_arbitrary_bytes_never_raise(raw: bytes):
    assert_conforms(classify(raw))


@st.composite
def mutated_fixtures(draw: st.DrawFn) -> bytes:
    raw = bytearray((FIXTURES / draw(st.sampled_from(sorted(EXPECTED)))).read_bytes())
    for _ in range(draw(st.integers(1, 6))):
        at = draw(st.integers(0, len(raw)))
        kind = draw(st.sampled_from(["insert", "delete", "replace", "duplicate", "truncate"]))
        if kind == "insert":
            raw[at:at] = draw(
                st.one_of(
                    st.binary(min_size=1, max_size=40),
                    st.sampled_from(
                        [b"\n\n", b"\n--", b";", b":", b"=?utf-8?b?", b"\x00", b"\xff\xfe", b"<"]
                    ),
                )
            )
        elif kind == "delete":
            del raw[at : at + draw(st.integers(1, 200))]
        elif kind == "replace":
            raw[at : at + 1] = draw(st.binary(min_size=1, max_size=1))
        elif kind == "duplicate":
            raw[at:at] = raw[at : at + draw(st.integers(1, 400))]
        else:
            del raw[at:]
    return bytes(raw)


@given(raw=mutated_fixtures())
@settings(max_examples=200, deadline=None)
def test_mutated_fixtures_never_raise(raw: bytes):
    assert_conforms(classify(raw))


def test_control_characters_in_a_diagnostic_are_flattened():
    raw = DSN_TEMPLATE.format(
        verp=BOUNCE,
        recipient="ann@example.net",
        action="failed",
        status="5.1.1",
        diagnostic="550 no such user\x1b[31m\x07 \u202eevil",
    ).encode()

    result = classify(raw)

    assert result.diagnostic == "550 no such user [31m evil"


def test_an_auto_reply_from_a_person_is_ignored_even_when_it_quotes_bounce_words():
    raw = (
        b"From: Kim <kim@example.org>\nTo: " + BOUNCE.encode() + b"\n"
        b"Subject: Out of Office\nAuto-Submitted: auto-replied\n\n"
        b"I'm away. Mail delivery failed for my colleague: 550 5.1.1 User unknown.\n"
    )

    assert classify(raw).format == "auto-reply"
