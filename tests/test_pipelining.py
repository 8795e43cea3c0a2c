"""SMTP pipelining against real servers on 127.0.0.1 that misbehave in the middle of a group.

Every test asserts the exact outcome of every message, and what the server really kept.
"""

from __future__ import annotations

import itertools
import os
import re
import smtplib
import threading
from collections import deque
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from newsletter.delivery.pipelining import (
    Accepted,
    Deferred,
    NotSent,
    Outcome,
    OutgoingMessage,
    Refused,
    SmtpSession,
    Unconfirmed,
    wire_body,
)
from newsletter.delivery.throttle import AdaptiveThrottle, ThrottleChange
from tests.pipelining_servers import (
    SMTP_SINK,
    ManualClock,
    PipeliningServer,
    Rule,
    ServerOptions,
    SmtpSink,
)

SENDER = "digest@example.org"
_unique = itertools.count(1)


def address(n: int, prefix: str = "reader") -> str:
    return f"{prefix}{n}@example.org"


def body(n: int) -> bytes:
    """A small message whose lines need dot-stuffing and whose line ends are mixed."""
    return (
        f"From: Digest <{SENDER}>\r\nTo: <{address(n)}>\r\nSubject: Digest {n}\r\n\r\n"
        f"Message {n}.\r\n.a line that starts with a dot\n..two dots\r\n.\r\nend\r\n"
    ).encode()


def crlf(data: bytes) -> bytes:
    """What a message must look like on arrival: CRLF line ends, ending with CRLF."""
    data = re.sub(rb"\r\n|\r|\n", b"\r\n", data)
    return data if data.endswith(b"\r\n") else data + b"\r\n"


def messages(count: int, *, prefix: str = "reader") -> list[OutgoingMessage]:
    return [OutgoingMessage(n, SENDER, address(n, prefix), body(n)) for n in range(1, count + 1)]


def connect(server: PipeliningServer | SmtpSink, timeout: float = 10.0) -> smtplib.SMTP:
    return smtplib.SMTP(server.host, server.port, timeout=timeout)


def send(
    server: PipeliningServer | SmtpSink,
    outgoing: list[OutgoingMessage],
    *,
    timeout: float = 10.0,
    pipelining: bool = True,
) -> list[Outcome]:
    """Send all on one connection; QUIT if it is still open. Each message has one outcome."""
    client = connect(server, timeout)
    session = SmtpSession(client, pipelining=pipelining)
    outcomes = list(session.send_all(outgoing))
    if session.open:
        assert client.quit()[0] == 221  # still in step with the server after everything
    else:
        client.close()
    assert sorted(o.id for o in outcomes) == sorted(m.id for m in outgoing)
    return outcomes


def by_id(outcomes: list[Outcome]) -> dict[int, Outcome]:
    return {o.id: o for o in outcomes}


@pytest.fixture
def server() -> Iterator[PipeliningServer]:
    with PipeliningServer() as running:
        yield running


# -- the normal case ----------------------------------------------------------------------------
def test_one_round_trip_per_message_and_every_message_arrives_intact(
    server: PipeliningServer,
) -> None:
    outgoing = messages(5)
    outcomes = send(server, outgoing)

    assert [type(o) for o in outcomes] == [Accepted] * 5
    assert [o.id for o in outcomes] == [1, 2, 3, 4, 5]
    assert [(m.sender, m.recipients) for m in server.received] == [
        (SENDER, [address(n)]) for n in range(1, 6)
    ]
    assert [m.data for m in server.received] == [crlf(body(n)) for n in range(1, 6)]
    assert server.violations == []
    # The body of each message travels with the next message's MAIL, RCPT and DATA.
    assert server.sessions[0].turns == [
        ["EHLO"],
        ["MAIL", "RCPT", "DATA"],
        *[[".", "MAIL", "RCPT", "DATA"]] * 4,
        ["."],
        ["QUIT"],
    ]
    assert server.received[0].mail_params == [f"SIZE={len(body(1))}"]


def test_without_pipelining_one_command_at_a_time_with_the_same_outcomes() -> None:
    rules = {address(2): Rule(rcpt="550 5.1.1 no such user")}
    with PipeliningServer(ServerOptions(pipelining=False), rules=rules) as server:
        client = connect(server)
        session = SmtpSession(client)
        assert session.pipelining is False
        outcomes = list(session.send_all(messages(3)))
        client.quit()

    assert [type(o) for o in outcomes] == [Accepted, Refused, Accepted]
    assert server.recipients() == [address(1), address(3)]
    assert server.sessions[0].turns == [
        ["EHLO"],
        *[["MAIL"], ["RCPT"], ["DATA"], ["."]],
        *[["MAIL"], ["RCPT"], ["RSET"]],  # no DATA after a refused recipient
        *[["MAIL"], ["RCPT"], ["DATA"], ["."]],
        ["QUIT"],
    ]


def test_pipelining_can_be_turned_off_by_the_caller(server: PipeliningServer) -> None:
    outcomes = send(server, messages(2), pipelining=False)
    assert [type(o) for o in outcomes] == [Accepted, Accepted]
    assert server.sessions[0].turns[1:4] == [["MAIL"], ["RCPT"], ["DATA"]]


def test_one_session_per_thread_on_parallel_connections(server: PipeliningServer) -> None:
    results: list[list[Outcome]] = []
    lock = threading.Lock()

    def work(prefix: str) -> None:
        outcomes = send(server, messages(10, prefix=prefix))
        with lock:
            results.append(outcomes)

    threads = [threading.Thread(target=work, args=(f"t{i}-",)) for i in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)

    assert len(results) == 3
    assert all(isinstance(o, Accepted) for outcomes in results for o in outcomes)
    expected = [address(n, f"t{i}-") for i in range(3) for n in range(1, 11)]
    assert sorted(server.recipients()) == sorted(expected)


# -- refusals in the middle of a group ----------------------------------------------------------
def test_a_refused_recipient_fails_only_that_message_and_data_is_not_taken_for_acceptance() -> None:
    rules = {address(3): Rule(rcpt="550 5.1.1 <reader3@example.org>: no such user")}
    with PipeliningServer(rules=rules) as server:
        outcomes = send(server, messages(5))

    assert by_id(outcomes)[3] == Refused(
        3, 550, "5.1.1 <reader3@example.org>: no such user", "rcpt"
    )
    assert all(isinstance(by_id(outcomes)[n], Accepted) for n in (1, 2, 4, 5))
    assert server.recipients() == [address(n) for n in (1, 2, 4, 5)]
    turns = server.sessions[0].turns
    # DATA was answered 554 (no valid recipients): the transaction ends with RSET, which opens
    # the next group, so the refusal costs no extra round trip.
    assert turns[4] == ["RSET", "MAIL", "RCPT", "DATA"]
    assert len(turns) == 1 + 5 + 1 + 1


@pytest.mark.parametrize("end_reply", ["554 5.5.1 no valid recipients", "250 2.0.0 Ok: liar"])
def test_data_accepted_after_a_refused_recipient_gets_a_lone_dot(end_reply: str) -> None:
    """Some servers answer DATA with 354 although no recipient was accepted (RFC 2920 3.1)."""
    options = ServerOptions(data_without_rcpt="354 go ahead", end_without_rcpt=end_reply)
    rules = {address(2): Rule(rcpt="550 5.1.1 no such user")}
    with PipeliningServer(options, rules=rules) as server:
        outcomes = send(server, messages(3))

    assert by_id(outcomes)[2] == Refused(2, 550, "5.1.1 no such user", "rcpt")
    assert isinstance(by_id(outcomes)[1], Accepted) and isinstance(by_id(outcomes)[3], Accepted)
    assert server.recipients() == [address(1), address(3)]
    # The lone dot ends the empty transaction and opens the next group; no RSET needed.
    assert server.sessions[0].turns[3] == [".", "MAIL", "RCPT", "DATA"]


def test_every_refusal_is_matched_to_its_own_command() -> None:
    rules = {
        address(1): Rule(rcpt="450 4.2.1 mailbox busy"),
        address(2): Rule(data="554 5.7.1 not for this recipient"),
        address(3): Rule(data="451 4.3.0 try again"),
        address(4): Rule(end="552 5.3.4 message too big"),
        address(5): Rule(end="451 4.3.0 queue full"),
    }
    with PipeliningServer(rules=rules) as server:
        outcomes = send(server, messages(6))

    assert outcomes == [
        Deferred(1, 450, "4.2.1 mailbox busy", "rcpt"),
        Refused(2, 554, "5.7.1 not for this recipient", "data"),
        Deferred(3, 451, "4.3.0 try again", "data"),
        Refused(4, 552, "5.3.4 message too big", "end"),
        Deferred(5, 451, "4.3.0 queue full", "end"),
        Accepted(6, 250, "2.0.0 Ok: queued as Q1"),
    ]
    assert server.recipients() == [address(6)]


def test_a_refused_sender_is_deferred_and_a_too_big_message_refused() -> None:
    outgoing = [
        OutgoingMessage(1, "blocked@example.org", address(1), body(1)),
        OutgoingMessage(2, "huge@example.org", address(2), body(2)),
        OutgoingMessage(3, SENDER, address(3), body(3)),
    ]
    mail_rules = {
        "blocked@example.org": "553 5.7.1 sender not allowed",
        "huge@example.org": "552 5.3.4 message size exceeds limit",
    }
    with PipeliningServer(mail_rules=mail_rules) as server:
        outcomes = send(server, outgoing)

    assert outcomes == [
        Deferred(1, 553, "5.7.1 sender not allowed", "mail"),  # ours to fix, not the reader's
        Refused(2, 552, "5.3.4 message size exceeds limit", "mail"),
        Accepted(3, 250, "2.0.0 Ok: queued as Q1"),
    ]
    assert server.recipients() == [address(3)]


# -- the connection ends in the middle of a group -------------------------------------------------
def test_421_to_data_defers_that_message_and_the_rest_are_not_sent() -> None:
    rules = {address(3): Rule(data="421 4.7.0 closing connection")}
    with PipeliningServer(rules=rules) as server:
        outcomes = send(server, messages(5))

    assert outcomes[:3] == [
        Accepted(1, 250, "2.0.0 Ok: queued as Q1"),
        Accepted(2, 250, "2.0.0 Ok: queued as Q2"),
        Deferred(3, 421, "4.7.0 closing connection", "data"),
    ]
    assert [(type(o), o.id) for o in outcomes[3:]] == [(NotSent, 4), (NotSent, 5)]
    assert all(isinstance(o, NotSent) and "not sent" in o.reason for o in outcomes[3:])
    assert server.recipients() == [address(1), address(2)]


def test_421_after_the_dot_defers_that_message_and_leaves_the_next_unconfirmed() -> None:
    rules = {address(3): Rule(end="421 4.7.0 too busy, closing")}
    with PipeliningServer(rules=rules) as server:
        outcomes = send(server, messages(5))

    found = by_id(outcomes)
    assert [type(found[n]) for n in (1, 2)] == [Accepted, Accepted]
    assert found[3] == Deferred(3, 421, "4.7.0 too busy, closing", "end")
    # Message 4's MAIL, RCPT and DATA were already on their way behind message 3's dot, but
    # its content never left: certainly not delivered.
    assert found[4] == NotSent(4, "the server closed the connection: 421 4.7.0 too busy, closing")
    assert found[5] == NotSent(
        5, "not sent: the server closed the connection: 421 4.7.0 too busy, closing"
    )
    assert server.recipients() == [address(1), address(2)]


def test_a_connection_dropped_after_the_dot_leaves_the_group_unconfirmed() -> None:
    rules = {address(3): Rule(drop_after_dot=True)}
    with PipeliningServer(rules=rules) as server:
        client = connect(server)
        session = SmtpSession(client)
        outcomes = list(session.send_all(messages(5)))
        assert not session.open

    found = by_id(outcomes)
    assert [type(found[n]) for n in (1, 2)] == [Accepted, Accepted]
    assert [type(found[n]) for n in (3, 4, 5)] == [Unconfirmed, NotSent, NotSent]
    assert isinstance(found[3], Unconfirmed) and "connection lost" in found[3].reason
    # The server did keep message 3: "unconfirmed" means it may have arrived, and a resend
    # after this is the one duplicate the outbox allows.
    assert server.recipients() == [address(1), address(2), address(3)]


def test_a_slow_server_still_costs_one_round_trip_per_message() -> None:
    with PipeliningServer(ServerOptions(reply_delay=0.02)) as server:
        outcomes = send(server, messages(4))

    assert [type(o) for o in outcomes] == [Accepted] * 4
    assert server.recipients() == [address(n) for n in range(1, 5)]
    assert server.sessions[0].turns[1:6] == [
        ["MAIL", "RCPT", "DATA"],
        *[[".", "MAIL", "RCPT", "DATA"]] * 3,
        ["."],
    ]


def test_a_final_reply_slower_than_the_timeout_leaves_the_message_unconfirmed() -> None:
    rules = {address(2): Rule(end_delay=30.0)}
    with PipeliningServer(rules=rules) as server:
        outcomes = send(server, messages(3), timeout=1.0)
        received = server.recipients()

    found = by_id(outcomes)
    assert isinstance(found[1], Accepted)
    assert found[2] == Unconfirmed(2, "connection lost: timed out")
    assert isinstance(found[3], NotSent)
    assert received == [address(1), address(2)]  # it arrived; only the reply was late


def test_after_the_server_closed_later_messages_are_reported_not_sent() -> None:
    rules = {address(1): Rule(rcpt="421 4.3.2 shutting down")}
    with PipeliningServer(rules=rules) as server:
        client = connect(server)
        session = SmtpSession(client)
        first = session.submit(messages(1)[0])
        later = session.submit(OutgoingMessage(9, SENDER, address(9), body(9)))
        assert session.flush() == []

    assert first == [Deferred(1, 421, "4.3.2 shutting down", "rcpt")]
    assert later == [
        NotSent(9, "not sent: the server closed the connection: 421 4.3.2 shutting down")
    ]
    assert session.open is False
    assert len(server.sessions) == 1 and server.received == []


# -- addresses and SMTPUTF8 ------------------------------------------------------------------------
def test_smtputf8_is_requested_only_when_the_caller_asks_and_the_server_offers_it() -> None:
    utf8 = "jürgen@bücher.example"
    with PipeliningServer(ServerOptions(smtputf8=True)) as server:
        outcomes = send(
            server,
            [
                OutgoingMessage(1, SENDER, utf8, body(1), smtputf8=True),
                OutgoingMessage(2, SENDER, utf8, body(2)),
                OutgoingMessage(3, SENDER, address(3), body(3)),
            ],
        )
    assert isinstance(outcomes[0], Refused) and outcomes[0].code is None  # 2: refused here
    assert "not ASCII" in outcomes[0].text and outcomes[0].id == 2
    assert [type(o) for o in outcomes[1:]] == [Accepted, Accepted]
    assert server.recipients() == [utf8, address(3)]
    assert {"SMTPUTF8", "BODY=8BITMIME"} <= set(server.received[0].mail_params)
    assert "SMTPUTF8" not in server.received[1].mail_params

    with PipeliningServer(ServerOptions(smtputf8=False)) as plain:
        outcomes = send(plain, [OutgoingMessage(1, SENDER, utf8, body(1), smtputf8=True)])
    assert outcomes == [
        Refused(
            1, None, "the address needs SMTPUTF8, which the SMTP server does not offer", "local"
        )
    ]
    assert plain.sessions[0].commands == ["EHLO", "QUIT"]


@settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(local=st.text(max_size=40), sender_local=st.text(max_size=20))
def test_any_address_text_is_sent_exactly_or_refused_here(
    server: PipeliningServer, local: str, sender_local: str
) -> None:
    server.options.smtputf8 = True
    recipient = f"{local}@example.org"
    sender = f"{sender_local}@example.org"
    utf8 = not (recipient.isascii() and sender.isascii())
    before = len(server.received)
    outcomes = send(server, [OutgoingMessage(1, sender, recipient, body(1), smtputf8=utf8)])

    if set("\r\n\0") & set(recipient + sender):
        assert isinstance(outcomes[0], Refused) and outcomes[0].stage == "local"
        assert len(server.received) == before
    elif set('<>"') & set(recipient + sender) and isinstance(outcomes[0], Refused):
        assert outcomes[0].stage == "local"  # outside a quoted local part: refused here
        assert len(server.received) == before
    else:  # never another address than this one
        assert isinstance(outcomes[0], Accepted)
        assert (server.received[-1].sender, server.received[-1].recipients) == (sender, [recipient])
    # Nothing an address contains ever becomes a command of its own.
    assert set(server.sessions[-1].commands) <= {"EHLO", "MAIL", "RCPT", "DATA", ".", "QUIT"}
    assert server.violations == []


@pytest.mark.parametrize(
    ("recipient", "sent"),
    [
        ('"<"@example.org', True),  # RFC 5321: any printable character in a quoted local part
        ('"a>b\\"c"@example.org', True),
        ("a>b@example.org", False),  # the server would read <a> and a parameter
        ('"a"b>@example.org', False),
        ('"a>b@example.org', False),  # never closed
        ('"a"@exa>mple.org', False),
        ('"@example.org', False),
        ('a"b"@example.org', False),
    ],
)
def test_angle_brackets_and_quotes_only_inside_a_quoted_local_part(
    server: PipeliningServer, recipient: str, sent: bool
) -> None:
    outcomes = send(server, [OutgoingMessage(1, SENDER, recipient, body(1))])

    if sent:
        assert isinstance(outcomes[0], Accepted)
        assert server.recipients() == [recipient]
    else:
        assert outcomes == [
            Refused(
                1,
                None,
                "the recipient address has '<', '>' or '\"' outside a quoted local part",
                "local",
            )
        ]
        assert server.received == []


def test_an_address_too_long_for_a_command_line_is_refused_here(server: PipeliningServer) -> None:
    outcomes = send(server, [OutgoingMessage(1, SENDER, "a" * 500 + "@example.org", body(1))])
    assert outcomes == [Refused(1, None, "the address is too long for an SMTP command", "local")]


# -- the data on the wire --------------------------------------------------------------------------
pieces = st.sampled_from([b".", b"..", b"\r", b"\n", b"\r\n", b"\r\n.\r\n", b"x", b"\x00", b"\xff"])


@settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
# At most 30 pieces of at most 30 bytes: no line reaches the 998-octet limit.
@given(data=st.lists(st.one_of(pieces, st.binary(max_size=30)), max_size=30).map(b"".join))
def test_any_data_arrives_exactly_with_crlf_line_ends(
    server: PipeliningServer, data: bytes
) -> None:
    before = len(server.received)
    outcomes = send(server, [OutgoingMessage(1, SENDER, address(1), data)])

    assert isinstance(outcomes[0], Accepted)
    assert server.received[before].data == crlf(data)
    assert server.violations == []  # no bare CR or LF ever reached the strict server


@settings(max_examples=200, deadline=None)
@given(
    lines=st.lists(st.binary(max_size=40).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b"")))
)
def test_data_known_to_be_crlf_goes_out_as_if_it_had_been_checked(lines: list[bytes]) -> None:
    data = b"".join(line + b"\r\n" for line in lines)
    assert wire_body(data, crlf=True) == wire_body(data)


def test_the_strict_server_refuses_bare_lf_from_a_careless_client(
    server: PipeliningServer,
) -> None:
    """The check above means something: raw smtplib passes bytes through unchanged."""
    client = connect(server)
    with pytest.raises(smtplib.SMTPDataError) as refused:
        client.sendmail(SENDER, [address(1)], b"Subject: x\r\n\r\nbare\nline\r\n")
    client.quit()
    assert refused.value.smtp_code == 554
    assert server.violations == ["bare LF in the data"]
    assert server.received == []


def test_a_line_over_998_octets_is_refused_by_a_strict_server(server: PipeliningServer) -> None:
    outcomes = send(server, [OutgoingMessage(1, SENDER, address(1), b"x" * 999 + b"\r\n")])
    assert outcomes == [Refused(1, 554, "5.6.0 Error: line over 998 octets in the message", "end")]


# -- any mix of refusals, with and without pipelining --------------------------------------------
FATES: dict[str, tuple[Rule | None, str | None, type, int | None, str]] = {
    # fate: (rule for the recipient, reply to MAIL for the sender, outcome, code, stage)
    "accept": (None, None, Accepted, 250, "end"),
    "rcpt550": (Rule(rcpt="550 5.1.1 no such user"), None, Refused, 550, "rcpt"),
    "rcpt450": (Rule(rcpt="450 4.2.1 mailbox busy"), None, Deferred, 450, "rcpt"),
    "data554": (Rule(data="554 5.7.1 not here"), None, Refused, 554, "data"),
    "data451": (Rule(data="451 4.3.0 later"), None, Deferred, 451, "data"),
    "end552": (Rule(end="552 5.3.4 too big"), None, Refused, 552, "end"),
    "end451": (Rule(end="451 4.3.0 queue full"), None, Deferred, 451, "end"),
    "mail451": (None, "451 4.3.0 sender busy", Deferred, 451, "mail"),
    "mail550": (None, "550 5.7.1 sender refused", Deferred, 550, "mail"),
    "mail552": (None, "552 5.3.4 too big", Refused, 552, "mail"),
}


@settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    fates=st.lists(st.sampled_from(sorted(FATES)), min_size=1, max_size=8),
    pipelining=st.booleans(),
    data_without_rcpt=st.sampled_from(
        ["554 5.5.1 no valid recipients", "503 5.5.1 need RCPT", "354 go"]
    ),
    end_without_rcpt=st.sampled_from(["554 5.5.1 no valid recipients", "250 2.0.0 Ok: empty"]),
)
def test_each_reply_is_matched_to_its_message(
    server: PipeliningServer,
    fates: list[str],
    pipelining: bool,
    data_without_rcpt: str,
    end_without_rcpt: str,
) -> None:
    server.options.pipelining = pipelining
    server.options.data_without_rcpt = data_without_rcpt
    server.options.end_without_rcpt = end_without_rcpt
    run = next(_unique)
    outgoing = []
    for n, fate in enumerate(fates):
        rule, mail_reply, *_ = FATES[fate]
        sender = f"run{run}-sender{n}@example.org"
        recipient = f"run{run}-reader{n}@example.org"
        if rule is not None:
            server.rules[recipient] = rule
        if mail_reply is not None:
            server.mail_rules[sender] = mail_reply
        outgoing.append(OutgoingMessage(n, sender, recipient, body(n)))
    before = len(server.received)

    outcomes = by_id(send(server, outgoing))

    for n, fate in enumerate(fates):
        _, _, kind, code, stage = FATES[fate]
        outcome = outcomes[n]
        assert type(outcome) is kind, (fate, outcome)
        assert isinstance(outcome, Accepted | Refused | Deferred)
        assert outcome.code == code
        if not isinstance(outcome, Accepted):
            assert outcome.stage == stage
    accepted = [m.recipient for m, f in zip(outgoing, fates, strict=True) if f == "accept"]
    assert server.recipients()[before:] == accepted


# -- throttling ------------------------------------------------------------------------------------
def test_a_throttling_server_slows_the_send_down_and_everything_arrives_once() -> None:
    """421 "rate limit" above 5 messages a second; the send adapts and finishes."""
    clock = ManualClock()
    changes: list[ThrottleChange] = []
    throttle = AdaptiveThrottle(
        max_per_second=40.0,
        connections=2,
        clock=clock,
        on_change=changes.append,
        quiet_seconds=5.0,
        cooldown_seconds=1.0,
    )
    outgoing = messages(40)
    pending = deque(outgoing)
    final: dict[int, Outcome] = {}
    throttled = 0
    with PipeliningServer(ServerOptions(throttle_per_second=5), clock=clock) as server:
        session: SmtpSession | None = None
        for _ in range(2000):  # bounded: each turn sends or retries one message
            if not pending:
                break
            if session is None or not session.open:
                session = SmtpSession(connect(server))
            clock.advance(throttle.reserve())  # the caller waits; here the clock moves
            retry: list[OutgoingMessage] = []
            for outcome in session.submit(pending.popleft()):
                if isinstance(outcome, Deferred | Unconfirmed | NotSent):
                    code, text = (
                        (outcome.code, outcome.text)
                        if isinstance(outcome, Deferred)
                        else (None, outcome.reason)
                    )
                    throttled += throttle.observe(code, text)
                    retry.append(outgoing[outcome.id - 1])
                else:
                    final[outcome.id] = outcome
            pending.extendleft(reversed(retry))
            if not pending:
                for outcome in session.flush():
                    assert isinstance(outcome, Accepted)
                    final[outcome.id] = outcome
        assert session is not None and session.open
        session.client.quit()
        received = server.recipients()

    assert not pending
    assert sorted(final) == [m.id for m in outgoing]
    assert all(isinstance(o, Accepted) for o in final.values())
    assert sorted(received) == sorted(m.recipient for m in outgoing)  # each exactly once
    assert 0 < throttled < len(outgoing)
    assert changes[0].slower and "rate limit" in changes[0].reason
    assert changes[0].after.connections == 1
    assert min(c.after.per_second or 99.0 for c in changes) <= 5.0


# -- a real MTA's test server ----------------------------------------------------------------------
@pytest.fixture
def needs_sink() -> None:
    """Fails (never skips) when Postfix's smtp-sink is missing: .ci/run installs it."""
    if not os.path.exists(SMTP_SINK):
        pytest.fail("Postfix's smtp-sink is not installed (apt-get install postfix)")


@pytest.mark.usefixtures("needs_sink")
def test_against_postfix_smtp_sink() -> None:
    outgoing = messages(30)
    with SmtpSink() as sink:
        client = connect(sink)
        session = SmtpSession(client)
        assert session.pipelining
        outcomes = list(session.send_all(outgoing))
        client.quit()
        dumps = sink.dumps()

    assert [type(o) for o in outcomes] == [Accepted] * 30
    by_rcpt = {
        tuple(re.findall(rb"^X-Rcpt-Args: <([^>]*)>$", dump, re.MULTILINE)): dump for dump in dumps
    }
    assert len(dumps) == len(by_rcpt) == 30
    for message in outgoing:
        dump = by_rcpt[(message.recipient.encode(),)]
        # smtp-sink writes the content unstuffed, with LF line ends, and one empty line after.
        assert dump.endswith(crlf(message.data).replace(b"\r\n", b"\n") + b"\n")


@pytest.mark.usefixtures("needs_sink")
@pytest.mark.parametrize(
    ("option", "first"),
    [("-Q", Deferred), ("-q", Unconfirmed)],  # 421 and close after the dot / close without reply
)
def test_smtp_sink_closing_after_the_dot(option: str, first: type) -> None:
    with SmtpSink(option, ".") as sink:
        client = connect(sink)
        session = SmtpSession(client)
        outcomes = list(session.send_all(messages(3)))

    assert [type(o) for o in outcomes] == [first, NotSent, NotSent]
    if isinstance(outcomes[0], Deferred):
        assert (outcomes[0].code, outcomes[0].stage) == (421, "end")
