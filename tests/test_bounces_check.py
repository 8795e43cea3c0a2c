"""Issue #14's "Done when", end to end with real parts: a digest sent with [bounces] set through
the real engine, then a hard DSN, a soft DSN, two ARF complaints (one redacted, matched by its
Message-ID) and an out-of-office reply in (a) a Maildir on disk and (b) a real dovecot over
IMAPS; ``bounces check`` ends with exactly the right states, the next digest skips bounced and
complaining addresses, and a forgotten address is gone and stays out. Also: a SIGKILL between
recording a message and marking it done loses nothing and counts nothing twice.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import MetaData, select

from newsletter.app import Context
from newsletter.bounces.verp import read_verp, verp_key
from newsletter.config import load_settings
from newsletter.store import Store
from newsletter.store import subscribers as subscriber_rows
from newsletter.store.schema import bounce_reports
from tests.bounce_mail import retarget
from tests.conftest import REPO, Run
from tests.dovecot import DovecotServer
from tests.smtp_servers import Received, SmtpTestServer
from tests.test_bounce_imap import server_flags
from tests.test_bounce_maildir import deliver, make_maildir
from tests.test_subscriber_suppression import texts_holding

pytestmark = pytest.mark.both_stores

BOUNCE = "bounces@news.example.org"
SECRET = "cli-test-secret-0123456789"  # what the env fixture sets
PEOPLE = {
    "gone@example.net": "Gone",  # a hard bounce: Postfix, 550 5.1.1
    "full@example.edu": "Full",  # a soft bounce: Sendmail, mailbox full
    "angry@yahoo.example": "Angry",  # a complaint: Yahoo's ARF, VERP in it
    "quiet@webmail.example": "Quiet",  # a complaint, redacted: only the Message-ID left
    "away@example.org": "Away",  # an out-of-office reply
    "ok@example.org": "Ok",  # nothing
}


@pytest.fixture(scope="module")
def dovecot() -> Iterator[DovecotServer]:
    with DovecotServer() as server:
        yield server


@dataclass
class Mailbox:
    """The bounce mailbox a test fills, and how to see what the check marked."""

    deliver: Callable[[bytes], None]
    unprocessed: Callable[[], int]  # messages not marked done


@pytest.fixture(params=["maildir", "imaps"])
def mailbox(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Mailbox:
    """``[bounces] mailbox`` in the environment: a Maildir in tmp_path, or a fresh folder of
    the real dovecot over IMAPS (its certificate trusted the way a user would for a private
    CA: SSL_CERT_FILE)."""
    if request.param == "maildir":
        path = make_maildir(tmp_path / "Maildir")
        monkeypatch.setenv("NEWSLETTER_BOUNCES__MAILBOX", f"maildir:{path}")
        count = iter(range(10**6))
        return Mailbox(
            lambda raw: deliver(path, f"17958{next(count):05d}.M1P1.mx", raw),
            lambda: len(os.listdir(path / "new")),
        )
    server: DovecotServer = request.getfixturevalue("dovecot")
    folder = server.new_folder()
    url = f"imaps://bounces@127.0.0.1:{server.imaps_port}/{folder}"
    monkeypatch.setenv("NEWSLETTER_BOUNCES__MAILBOX", url)
    monkeypatch.setenv("NEWSLETTER_BOUNCES__PASSWORD", server.password())
    monkeypatch.setenv("SSL_CERT_FILE", str(server.cert))

    def into_folder(raw: bytes) -> None:
        server.deliver(raw, folder=folder)

    return Mailbox(
        into_folder,
        lambda: sum(b"$NewsletterProcessed" not in f for f in server_flags(server, folder)),
    )


def open_store() -> Store:
    return Store.open(os.environ["NEWSLETTER_STORE__URL"])


def import_people(run: Run, folder: Path, people: dict[str, str]) -> tuple[int, str, str]:
    source = folder / "people.csv"
    lines = ["email,name", *(f"{email},{name}" for email, name in people.items())]
    source.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return run("subscribers", "import", str(source))


def send_digest(run: Run, env: Path, smtp_server: SmtpTestServer) -> dict[str, Received]:
    """``send-now``; what each address received."""
    code, out, err = run("send-now")
    assert code == 0, out + err
    return {message.rcpt_tos[0]: message for message in smtp_server.received}


def public_ids() -> dict[str, str]:
    store = open_store()
    try:
        with store.atomic() as conn:
            return {row.email: row.public_id for row in subscriber_rows.iter_all(conn)}
    finally:
        store.close()


def listed(run: Run) -> dict[str, tuple[str, ...]]:
    """``subscribers list`` as ``{email: (state, reason?)}``."""
    code, out, _ = run("subscribers", "list")
    assert code == 0
    lines = [line.split("\t") for line in out.splitlines()]
    return {email: (state, *rest) for email, state, *rest in lines}


def every_row() -> dict[str, list[tuple[Any, ...]]]:
    store = open_store()
    try:
        metadata = MetaData()
        with store.atomic() as conn:
            metadata.reflect(conn)
            return {
                name: sorted((tuple(r) for r in conn.execute(select(table))), key=repr)
                for name, table in metadata.tables.items()
            }
    finally:
        store.close()


def bounces_for(received: dict[str, Received]) -> list[bytes]:
    """One message of each kind, each about the delivery to its person, as the MTAs write them."""

    def about(address: str, name: str, **clues: bool) -> bytes:
        message = received[address]
        return retarget(
            name,
            verp=message.mail_from if clues.get("verp", True) else None,
            recipient=address if clues.get("recipient", True) else None,
            message_id=message.parse()["Message-ID"],
        )

    return [
        about("gone@example.net", "postfix_user_unknown.eml"),
        about("full@example.edu", "sendmail_mailbox_full.eml"),
        about("angry@yahoo.example", "yahoo_arf.eml"),
        about("quiet@webmail.example", "arf_message_id_only.eml", verp=False, recipient=False),
        about("away@example.org", "out_of_office.eml"),
    ]


def test_a_digest_and_its_bounces_end_in_exactly_the_right_states(
    run: Run,
    env: Path,
    smtp_server: SmtpTestServer,
    mailbox: Mailbox,
    monkeypatch: pytest.MonkeyPatch,
):
    monkeypatch.setenv("NEWSLETTER_BOUNCES__ADDRESS", BOUNCE)
    assert import_people(run, env, PEOPLE)[0] == 0

    received = send_digest(run, env, smtp_server)

    # Each delivery's MAIL FROM is its own VERP address, naming digest 1 and the person.
    assert set(received) == set(PEOPLE)
    ids = public_ids()
    for address, message in received.items():
        assert read_verp(message.mail_from, BOUNCE, key=verp_key(SECRET)) == (1, ids[address])
        assert message.parse()["From"].addresses[0].addr_spec == "digest@example.org"
    assert len({message.mail_from for message in received.values()}) == len(PEOPLE)

    for raw in bounces_for(received):
        mailbox.deliver(raw)
    code, out, err = run("bounces", "check")

    assert (code, err) == (0, "")
    assert out == (
        "5 messages: 1 hard, 1 soft, 2 complaint, 0 refused, 1 ignored, 0 unmatched\n"
        "1 bounced, 2 unsubscribed by complaint\n"
    )
    states = listed(run)
    assert states.pop("gone@example.net")[:2] == ("bounced", "Gone")
    assert states == {
        "full@example.edu": ("active", "Full"),  # one soft bounce: counted, not enough
        "angry@yahoo.example": ("unsubscribed", "Angry", "complaint"),
        "quiet@webmail.example": ("unsubscribed", "Quiet", "complaint"),
        "away@example.org": ("active", "Away"),
        "ok@example.org": ("active", "Ok"),
    }
    assert re.match(r"550 5\.1\.1 <gone@example\.net>", listed(run)["gone@example.net"][2])
    shown = run("subscribers", "show", "gone@example.net")[1]
    assert re.search(
        r"^bounce report: hard for mailing 1 .* \(by verp\): 550 5\.1\.1 ", shown, re.M
    )
    assert mailbox.unprocessed() == 0

    # Running it again reads nothing and changes nothing.
    before = every_row()
    assert run("bounces", "check")[1].startswith("0 messages: 0 hard, 0 soft, 0 complaint")
    assert every_row() == before

    # status: 1 of 6 deliveries bounced for good, 2 of 6 accepted ones were reported as spam.
    status = run("status")[1]
    assert "bounce rate 16.7% (1 bounced), complaint rate 33.33% (2 complaints)" in status

    # The next digest skips the bounced and complaining addresses.
    news = env / "news"
    news.mkdir()
    (news / "001_next.txt").write_text(
        "date 2026-11-27\n\nA new article arrived today. It is short.\n", encoding="utf-8"
    )
    monkeypatch.setenv("NEWSLETTER_SOURCES__ARTICLES_DIR", str(news))
    smtp_server.handler.received.clear()
    assert set(send_digest(run, env, smtp_server)) == {
        "full@example.edu",
        "away@example.org",
        "ok@example.org",
    }

    # A re-import does not bring them back: they are suppressed.
    code, _, err = import_people(run, env, PEOPLE)
    assert re.search(r"gone@example\.net is suppressed: bounced on \d{4}-\d\d-\d\d", err)
    assert re.search(r"angry@yahoo\.example is suppressed: complained on ", err)
    assert re.search(r"quiet@webmail\.example is suppressed: complained on ", err)

    # A forgotten address is gone from every table, its bounce report included.
    assert run("subscribers", "forget", "angry@yahoo.example", "--yes")[0] == 0
    store = open_store()
    try:
        ctx = Context(load_settings(), store)
        assert texts_holding(ctx, "angry@yahoo.example", "Angry") == []
        with store.atomic() as conn:
            assert len(conn.execute(select(bounce_reports)).all()) == 4
    finally:
        store.close()
    code, _, err = import_people(run, env, {"angry@yahoo.example": "Angry"})
    assert "angry@yahoo.example is suppressed: forgotten on " in err
    assert listed(run).get("angry@yahoo.example") is None


# --- a crash between recording and marking done ------------------------------------------

# The real check in a child process, killed with SIGKILL in ``done`` of the message after
# ``sys.argv[1]`` done ones: that message's outcome is committed, the mailbox does not know.
CHILD = """
import os, signal, sys
from newsletter.app import Context
from newsletter.app.bounces import check_bounces, open_bounce_mailbox
from newsletter.config import load_settings

class KilledBeforeDone:
    def __init__(self, reader, after):
        self.reader, self.after, self.marked = reader, after, 0
    def new_messages(self):
        return self.reader.new_messages()
    def done(self, message):
        if self.marked == self.after:
            os.kill(os.getpid(), signal.SIGKILL)
        self.reader.done(message)
        self.marked += 1
    def close(self):
        self.reader.close()
    def __enter__(self):
        return self
    def __exit__(self, *exc):
        self.close()

ctx = Context.open(load_settings())
check_bounces(ctx, open_reader=lambda: KilledBeforeDone(open_bounce_mailbox(ctx), int(sys.argv[1])))
"""


@pytest.mark.parametrize("mailbox", ["maildir"], indirect=True)
def test_sigkill_between_recording_and_done_loses_nothing_and_counts_nothing_twice(
    run: Run,
    env: Path,
    smtp_server: SmtpTestServer,
    mailbox: Mailbox,
    monkeypatch: pytest.MonkeyPatch,
):
    monkeypatch.setenv("NEWSLETTER_BOUNCES__ADDRESS", BOUNCE)
    monkeypatch.setenv("NEWSLETTER_BOUNCES__SOFT_LIMIT", "2")  # a second count would bounce
    import_people(run, env, PEOPLE)
    received = send_digest(run, env, smtp_server)
    hard, soft, complaint, _, auto_reply = bounces_for(received)
    for raw in (hard, soft, complaint, auto_reply):
        mailbox.deliver(raw)

    child = subprocess.run(
        [sys.executable, "-c", CHILD, "1"],  # killed after recording the soft bounce
        cwd=env,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        timeout=120,
    )

    assert child.returncode == -signal.SIGKILL, child.stderr.decode()
    assert mailbox.unprocessed() == 3  # the soft bounce is recorded but still new
    assert len(every_row()["bounce_reports"]) == 2
    code, out, err = run("bounces", "check")  # the dead process's lock is taken over

    assert (code, err) == (0, "")
    assert out == (
        "3 messages: 0 hard, 0 soft, 1 complaint, 0 refused, 1 ignored, 0 unmatched\n"
        "1 recorded by an earlier check, now marked done\n"
        "0 bounced, 1 unsubscribed by complaint\n"
    )
    assert mailbox.unprocessed() == 0
    outcomes = sorted(row[2] for row in every_row()["bounce_reports"])
    assert outcomes == ["complaint", "hard", "ignored", "soft"]  # each message once
    states = listed(run)
    assert states["full@example.edu"] == ("active", "Full")  # its soft bounce counted once
    assert states["gone@example.net"][0] == "bounced"
    assert states["angry@yahoo.example"] == ("unsubscribed", "Angry", "complaint")
