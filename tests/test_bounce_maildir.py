"""The bounce mailbox setting, and reading a Maildir on disk exactly once, crashes included."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from newsletter.bounces.mailboxes import (
    ImapLocation,
    MailboxError,
    MaildirLocation,
    MaildirReader,
    open_mailbox,
    parse_mailbox_url,
)
from newsletter.errors import ConfigError, NewsletterError

FIXTURES = Path(__file__).resolve().parent / "bounce_mail"
REPO = Path(__file__).resolve().parent.parent
NAMES = ["postfix_user_unknown.eml", "yahoo_arf.eml", "out_of_office.eml", "postfix_delayed.eml"]

# --- the [bounces] mailbox URL ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("maildir:/var/mail/bounces", MaildirLocation(Path("/var/mail/bounces"))),
        ("maildir:///var/mail/bounces", MaildirLocation(Path("/var/mail/bounces"))),
        ("maildir:var/bounces", MaildirLocation(Path("var/bounces"))),
        (
            "imaps://bounces@imap.example.org/INBOX",
            ImapLocation("imap.example.org", 993, "bounces", "INBOX", "implicit"),
        ),
        (
            "imaps://bounces%40example.org@imap.example.org:1993/Bounces",
            ImapLocation("imap.example.org", 1993, "bounces@example.org", "Bounces", "implicit"),
        ),
        (
            "imap://bounces@127.0.0.1/",
            ImapLocation("127.0.0.1", 143, "bounces", "INBOX", "starttls"),
        ),
        (
            "IMAPS://ops@[::1]:10993/Archive/Bounces%20old",
            ImapLocation("::1", 10993, "ops", "Archive/Bounces old", "implicit"),
        ),
    ],
)
def test_mailbox_urls(url: str, expected: MaildirLocation | ImapLocation):
    assert parse_mailbox_url(url) == expected


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("/var/mail/bounces", "expected maildir:"),
        ("pop3://bounces@mail.example.org/", "unknown kind 'pop3'"),
        ("maildir:", "give the Maildir folder's path"),
        ("maildir://host/path", "give the Maildir folder's path"),
        ("imaps://imap.example.org/INBOX", "needs a user and a host"),
        ("imaps://bounces@imap.example.org:99999/INBOX", "malformed"),
        ("imaps://bounces@imap.example.org/INBOX?x=1", "no ?query"),
    ],
)
def test_bad_mailbox_urls_say_what_is_wrong(url: str, message: str):
    with pytest.raises(ConfigError, match=r"^\[bounces\] mailbox: ") as raised:
        parse_mailbox_url(url)

    assert message in str(raised.value)
    assert "\n" not in str(raised.value)


def test_a_password_in_the_url_is_refused_and_never_repeated():
    with pytest.raises(ConfigError) as raised:
        parse_mailbox_url("imaps://bounces:Sup3r-Secr3t@imap.example.org/INBOX")

    assert "NEWSLETTER_BOUNCES__PASSWORD" in str(raised.value)
    assert "Sup3r-Secr3t" not in str(raised.value)


@given(
    url=st.one_of(
        st.text(), st.text().map(lambda t: "imaps://" + t), st.text().map("maildir:".__add__)
    )
)
@settings(max_examples=200, deadline=None)
def test_any_url_gives_a_location_or_a_config_error(url: str):
    try:
        location = parse_mailbox_url(url)
    except ConfigError as exc:
        assert str(exc).startswith("[bounces] mailbox: ")
        return
    assert isinstance(location, MaildirLocation | ImapLocation)


def test_imap_without_a_password_is_a_config_error():
    with pytest.raises(ConfigError, match="NEWSLETTER_BOUNCES__PASSWORD"):
        open_mailbox("imaps://bounces@127.0.0.1/INBOX", password=None)


# --- Maildir ----------------------------------------------------------------------------------


def make_maildir(path: Path) -> Path:
    for sub in ("new", "cur", "tmp"):
        (path / sub).mkdir(parents=True)
    return path


def deliver(maildir: Path, name: str, raw: bytes) -> None:
    """As a delivery agent does: write in tmp/, then rename into new/."""
    (maildir / "tmp" / name).write_bytes(raw)
    (maildir / "tmp" / name).rename(maildir / "new" / name)


@pytest.fixture
def maildir(tmp_path: Path) -> Path:
    path = make_maildir(tmp_path / "Maildir")
    for number, fixture in enumerate(NAMES):
        deliver(path, f"179585{number:04d}.M{number}P100.mx", (FIXTURES / fixture).read_bytes())
    return path


def test_new_messages_are_offered_in_arrival_order_with_their_bytes_and_ids(maildir: Path):
    with open_mailbox(f"maildir:{maildir}") as reader:
        messages = list(reader.new_messages())

    assert [m.raw for m in messages] == [(FIXTURES / n).read_bytes() for n in NAMES]
    assert [m.key for m in messages] == [f"maildir:179585{i:04d}.M{i}P100.mx" for i in range(4)]
    assert messages[0].message_id == "<20261126070041.4QXyZ12ab3z9sWv@mail.news.example.org>"


def test_done_moves_to_cur_with_the_seen_flag_and_the_rest_is_offered_again(maildir: Path):
    with MaildirReader(maildir) as reader:
        first, second, *_ = reader.new_messages()
        reader.done(first)
        reader.done(first)  # idempotent

    assert sorted(os.listdir(maildir / "cur")) == ["1795850000.M0P100.mx:2,S"]
    with MaildirReader(maildir) as reader:
        again = list(reader.new_messages())
    assert [m.key for m in again][:1] == [second.key]  # the same key on every run
    assert first.key not in [m.key for m in again]
    assert len(again) == len(NAMES) - 1


def test_reading_without_done_changes_nothing_on_disk(maildir: Path):
    before = sorted(os.listdir(maildir / "new"))

    with MaildirReader(maildir) as reader:
        assert len(list(reader.new_messages())) == len(NAMES)

    assert sorted(os.listdir(maildir / "new")) == before
    assert os.listdir(maildir / "cur") == []


def test_existing_flags_are_kept_and_dotfiles_ignored(tmp_path: Path):
    path = make_maildir(tmp_path / "Maildir")
    deliver(path, "1795851111.M1P1.mx:2,F", b"Subject: flagged\n\nx\n")
    (path / "new" / ".hidden").write_bytes(b"not mail")

    with MaildirReader(path) as reader:
        (message,) = reader.new_messages()
        reader.done(message)

    assert message.key == "maildir:1795851111.M1P1.mx"
    assert os.listdir(path / "cur") == ["1795851111.M1P1.mx:2,FS"]


def test_done_for_a_message_someone_else_moved_is_quiet(maildir: Path):
    with MaildirReader(maildir) as reader:
        message = next(iter(reader.new_messages()))
        name = message.key.removeprefix("maildir:")
        (maildir / "new" / name).rename(maildir / "cur" / f"{name}:2,S")
        reader.done(message)

    assert os.listdir(maildir / "cur") == [f"{name}:2,S"]


def test_done_refuses_a_message_it_did_not_offer(maildir: Path, tmp_path: Path):
    other = make_maildir(tmp_path / "Other")
    deliver(other, "1.M1P1.x", b"Subject: x\n\nx\n")
    with MaildirReader(other) as reader:
        foreign = next(iter(reader.new_messages()))

    with MaildirReader(maildir) as reader, pytest.raises(ValueError):
        reader.done(foreign)


def test_a_folder_that_is_not_a_maildir_is_named_in_the_error(tmp_path: Path):
    (tmp_path / "mail").mkdir()

    with pytest.raises(MailboxError) as raised:
        open_mailbox(f"maildir:{tmp_path / 'mail'}")

    assert str(tmp_path / "mail") in str(raised.value)
    assert "new, cur, tmp" in str(raised.value)
    assert isinstance(raised.value, NewsletterError)


# --- exactly once across a crash, with a real SQLite file ------------------------------------

# The pattern the `bounces check` command will follow: record the result under the message's
# key in the database and commit, then call done. The script dies (os._exit) on request right
# after committing one message and before marking it done: the next run is offered it again.
RECORDER = """
import os, sqlite3, sys
from newsletter.bounces.classify import classify
from newsletter.bounces.mailboxes import open_mailbox

url, db, crash_after = sys.argv[1], sys.argv[2], int(sys.argv[3])
password = os.environ.get("TEST_BOUNCES_PASSWORD")
conn = sqlite3.connect(db)
conn.execute("CREATE TABLE IF NOT EXISTS results (key TEXT PRIMARY KEY, kind TEXT, seen INT)")
ssl_context = None
if "TEST_CAFILE" in os.environ:
    import ssl
    ssl_context = ssl.create_default_context(cafile=os.environ["TEST_CAFILE"])
with open_mailbox(url, password=password, ssl_context=ssl_context) as reader:
    for number, message in enumerate(reader.new_messages(), start=1):
        with conn:
            conn.execute(
                "INSERT INTO results VALUES (?, ?, 1) "
                "ON CONFLICT(key) DO UPDATE SET seen = seen + 1",
                (message.key, classify(message.raw).kind.value),
            )
        if number == crash_after:
            os._exit(9)
        reader.done(message)
"""


def run_recorder(
    url: str, db: Path, *, crash_after: int = 0, env: dict[str, str] | None = None
) -> int:
    """Run the recorder in its own process; its exit code (9 = crashed on purpose)."""
    done = subprocess.run(
        [sys.executable, "-c", RECORDER, url, str(db), str(crash_after)],
        cwd=REPO,
        env={**os.environ, **(env or {})},
        capture_output=True,
        timeout=60,
    )
    assert done.returncode in (0, 9), done.stderr.decode()
    return done.returncode


def recorded(db: Path) -> list[tuple[str, str, int]]:
    with sqlite3.connect(db) as conn:
        return conn.execute("SELECT key, kind, seen FROM results ORDER BY key").fetchall()


def test_a_crash_between_recording_and_done_offers_the_message_again(maildir: Path, tmp_path: Path):
    db = tmp_path / "results.db"
    url = f"maildir:{maildir}"

    assert run_recorder(url, db, crash_after=2) == 9
    assert len(os.listdir(maildir / "cur")) == 1  # the first one; the second was not marked
    assert run_recorder(url, db) == 0
    assert run_recorder(url, db) == 0  # nothing new: nothing happens

    rows = recorded(db)
    assert [kind for _, kind, _ in rows] == ["hard", "complaint", "ignored", "soft"]
    # Each message recorded under one key; only the interrupted one was offered twice.
    assert [seen for _, _, seen in rows] == [1, 2, 1, 1]
    assert os.listdir(maildir / "new") == []
    assert len(os.listdir(maildir / "cur")) == len(NAMES)
