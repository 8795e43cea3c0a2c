"""Reading the bounce mailbox over IMAP from a real dovecot: TLS, exactly once, no leaks."""

from __future__ import annotations

import imaplib
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from newsletter.bounces.classify import classify
from newsletter.bounces.mailboxes import (
    PROCESSED_KEYWORD,
    MailboxError,
    MailboxReader,
    open_mailbox,
)
from tests.dovecot import DovecotServer
from tests.test_bounce_maildir import recorded, run_recorder

FIXTURES = Path(__file__).resolve().parent / "bounce_mail"
NAMES = ["gmail_no_such_user.eml", "arf_redacted_recipient.eml", "vacation_reply.eml"]
KINDS = ["hard", "complaint", "ignored"]


@pytest.fixture(scope="module")
def dovecot() -> Iterator[DovecotServer]:
    with DovecotServer() as server:
        yield server


@pytest.fixture
def folder(dovecot: DovecotServer) -> str:
    """A fresh folder holding the NAMES fixtures, delivered in that order."""
    name = dovecot.new_folder()
    for fixture in NAMES:
        dovecot.deliver((FIXTURES / fixture).read_bytes(), folder=name)
    return name


def imaps_url(server: DovecotServer, folder: str, user: str = "bounces") -> str:
    return f"imaps://{user}@127.0.0.1:{server.imaps_port}/{folder}"


def open_folder(server: DovecotServer, folder: str) -> MailboxReader:
    """The reader for a folder of the ``bounces`` user, over IMAPS, trusting the test cert."""
    return open_mailbox(
        imaps_url(server, folder), password=server.password(), ssl_context=server.ssl_context()
    )


def server_flags(server: DovecotServer, folder: str) -> list[bytes]:
    """The flags of every message in ``folder``, read by a separate plain imaplib session."""
    conn = imaplib.IMAP4_SSL("127.0.0.1", server.imaps_port, ssl_context=server.ssl_context())
    try:
        conn.login("bounces", server.password())
        conn.select(folder, readonly=True)
        _, data = conn.fetch("1:*", "(FLAGS)")
        return [item for item in data if isinstance(item, bytes)]
    finally:
        conn.logout()


def same_message(served: bytes, on_disk: bytes) -> bool:
    return served.replace(b"\r\n", b"\n") == on_disk.replace(b"\r\n", b"\n")


def test_imaps_offers_new_messages_in_order_and_done_marks_them(
    dovecot: DovecotServer, folder: str
):
    with open_folder(dovecot, folder) as reader:
        messages = list(reader.new_messages())
        assert [classify(m.raw).kind.value for m in messages] == KINDS
        assert all(
            same_message(m.raw, (FIXTURES / name).read_bytes())
            for m, name in zip(messages, NAMES, strict=True)
        )
        assert messages[0].message_id == "<6751c5e8.050a0220.3b2f1d.4a6cGMR@mx.google.com>"
        prefix = f"imap:{folder}:"
        assert all(m.key.startswith(prefix) for m in messages)
        reader.done(messages[0])
        reader.done(messages[0])  # idempotent

    flags = server_flags(dovecot, folder)
    assert b"\\Seen" in flags[0] and PROCESSED_KEYWORD.encode() in flags[0]
    assert all(b"\\Seen" not in f and PROCESSED_KEYWORD.encode() not in f for f in flags[1:])

    with open_folder(dovecot, folder) as reader:
        again = list(reader.new_messages())
    assert [m.key for m in again] == [m.key for m in messages[1:]]  # stable keys


def test_reading_alone_marks_nothing_not_even_seen(dovecot: DovecotServer, folder: str):
    with open_folder(dovecot, folder) as reader:
        assert len(list(reader.new_messages())) == len(NAMES)

    assert all(b"\\Seen" not in flags for flags in server_flags(dovecot, folder))


def test_a_message_a_mail_client_has_read_is_still_offered(dovecot: DovecotServer, folder: str):
    conn = imaplib.IMAP4_SSL("127.0.0.1", dovecot.imaps_port, ssl_context=dovecot.ssl_context())
    conn.login("bounces", dovecot.password())
    conn.select(folder)
    conn.store("1:*", "+FLAGS", "(\\Seen)")
    conn.logout()

    with open_folder(dovecot, folder) as reader:
        assert len(list(reader.new_messages())) == len(NAMES)


def test_where_keywords_are_not_allowed_seen_alone_marks_messages(
    dovecot: DovecotServer, caplog: pytest.LogCaptureFixture
):
    folder = dovecot.new_folder(rights="lrs")  # look up, read, set seen: no other flags
    for fixture in NAMES:
        dovecot.deliver((FIXTURES / fixture).read_bytes(), folder=folder)

    with open_folder(dovecot, folder) as reader:
        first, *others = reader.new_messages()
        reader.done(first)
    assert "does not allow keywords" in caplog.text
    with open_folder(dovecot, folder) as reader:
        rest = list(reader.new_messages())

    assert [m.key for m in rest] == [m.key for m in others] and len(rest) == len(NAMES) - 1
    flags = server_flags(dovecot, folder)
    assert b"\\Seen" in flags[0] and all(b"\\Seen" not in f for f in flags[1:])


def test_a_crash_between_recording_and_done_offers_the_message_again(
    dovecot: DovecotServer, folder: str, tmp_path: Path
):
    db = tmp_path / "results.db"
    env = {"TEST_BOUNCES_PASSWORD": dovecot.password(), "TEST_CAFILE": str(dovecot.cert)}
    url = imaps_url(dovecot, folder)

    assert run_recorder(url, db, crash_after=2, env=env) == 9
    assert run_recorder(url, db, env=env) == 0
    assert run_recorder(url, db, env=env) == 0  # nothing new: nothing happens

    rows = recorded(db)
    assert [kind for _, kind, _ in rows] == KINDS
    assert [seen for _, _, seen in rows] == [1, 2, 1]  # only the interrupted one came twice
    flags = server_flags(dovecot, folder)
    assert all(PROCESSED_KEYWORD.encode() in f for f in flags)


def test_starttls_works_for_imap_urls(dovecot: DovecotServer, folder: str):
    url = f"imap://bounces@127.0.0.1:{dovecot.imap_port}/{folder}"
    context = dovecot.ssl_context()

    with open_mailbox(url, password=dovecot.password(), ssl_context=context) as reader:
        assert len(list(reader.new_messages())) == len(NAMES)


def test_a_non_ascii_password_logs_in(dovecot: DovecotServer):
    folder = dovecot.new_folder(user="bounces-utf8")
    dovecot.deliver((FIXTURES / NAMES[0]).read_bytes(), folder=folder, user="bounces-utf8")
    url = imaps_url(dovecot, folder, user="bounces-utf8")
    password = dovecot.password("bounces-utf8")

    with open_mailbox(url, password=password, ssl_context=dovecot.ssl_context()) as reader:
        assert len(list(reader.new_messages())) == 1


def test_a_non_ascii_folder_name_is_found(dovecot: DovecotServer):
    on_disk = dovecot.new_folder(name="Entw&APw-rfe")  # how dovecot stores "Entwürfe"
    dovecot.deliver((FIXTURES / NAMES[0]).read_bytes(), folder=on_disk)
    with open_folder(dovecot, "Entw%C3%BCrfe") as reader:
        (message,) = reader.new_messages()

    assert message.key.startswith("imap:Entwürfe:")


def test_a_wrong_password_is_one_line_without_the_password(
    dovecot: DovecotServer, folder: str, caplog: pytest.LogCaptureFixture
):
    caplog.set_level(logging.DEBUG)
    url = imaps_url(dovecot, folder)
    wrong = "wrong-Pa55word-never-shown"

    with pytest.raises(MailboxError) as raised:
        open_mailbox(url, password=wrong, ssl_context=dovecot.ssl_context())

    message = str(raised.value)
    assert "login as 'bounces'" in message and "NEWSLETTER_BOUNCES__PASSWORD" in message
    assert "\n" not in message
    assert wrong not in message and wrong not in repr(raised.value)
    assert raised.value.__cause__ is None and raised.value.__suppress_context__
    assert wrong not in caplog.text


def test_the_password_is_never_logged_during_a_session(
    dovecot: DovecotServer, folder: str, caplog: pytest.LogCaptureFixture
):
    caplog.set_level(logging.DEBUG)
    password = dovecot.password()

    with open_folder(dovecot, folder) as reader:
        for message in reader.new_messages():
            reader.done(message)
        assert password not in repr(reader) and password not in str(vars(reader))

    assert password not in caplog.text


def test_an_untrusted_certificate_is_refused(dovecot: DovecotServer, folder: str):
    with pytest.raises(MailboxError, match="certificate verify failed"):
        open_mailbox(imaps_url(dovecot, folder), password=dovecot.password())


def test_a_missing_folder_is_named(dovecot: DovecotServer):
    with pytest.raises(MailboxError, match="cannot open folder 'NoSuchFolder'"):
        open_folder(dovecot, "NoSuchFolder")


def test_an_unreachable_server_is_one_line(dovecot: DovecotServer):
    dead = DovecotServer()  # its ports were free a moment ago and nothing listens there
    try:
        url = f"imaps://bounces@127.0.0.1:{dead.imaps_port}/INBOX"
        with pytest.raises(MailboxError, match=r"^cannot connect to IMAP server 127\.0\.0\.1:"):
            open_mailbox(url, password="x", ssl_context=dovecot.ssl_context(), timeout=5)
    finally:
        dead.stop()


def test_a_server_without_starttls_never_gets_the_password():
    with DovecotServer(tls=False) as plain:
        url = f"imap://bounces@127.0.0.1:{plain.imap_port}/INBOX"
        with pytest.raises(MailboxError, match="does not offer STARTTLS"):
            open_mailbox(url, password=plain.password(), timeout=5)
        logs = plain.logs()

    assert "Login:" not in logs and "auth failed" not in logs
