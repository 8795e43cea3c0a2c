"""The [bounces] settings, the ``bounces check`` command's errors, and the check that
``newsletter run`` makes every ``check_minutes``: one-line errors, no password anywhere."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from newsletter.app import Context
from newsletter.config import load_settings
from newsletter.errors import ConfigError
from newsletter.schedule import DigestService, Schedule
from newsletter.schedule.bounce_checks import BounceChecker
from newsletter.schedule.service import BOUNCES_JOB
from tests.bounce_mail import fixture
from tests.conftest import REPO, Run, clear_newsletter_env, write_config
from tests.dovecot import DovecotServer
from tests.test_bounce_maildir import deliver, make_maildir

BOUNCE = "bounces@news.example.org"


@pytest.fixture(autouse=True)
def no_developer_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    clear_newsletter_env(monkeypatch)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_the_section_is_read_with_relative_maildirs_beside_the_file(tmp_path: Path):
    path = write(
        tmp_path,
        '[bounces]\naddress = "nl-bounces@News.Example.org"\nmailbox = "maildir:mail/bounces"\n'
        "check_minutes = 10\nsoft_limit = 4\nsoft_days = 20\n",
    )

    bounces = load_settings(path).bounces

    assert bounces.address == "nl-bounces@news.example.org"
    assert bounces.mailbox == f"maildir:{tmp_path / 'mail' / 'bounces'}"
    assert (bounces.check_minutes, bounces.soft_limit, bounces.soft_days) == (10, 4, 20)
    assert bounces.password is None


def test_without_the_section_nothing_is_set_and_the_example_shows_the_defaults():
    defaults = load_settings().bounces
    assert (defaults.address, defaults.mailbox, defaults.password) == (None, None, None)
    assert load_settings(REPO / "config.example.toml").bounces == defaults


def test_the_password_comes_from_the_environment_and_is_never_shown(
    monkeypatch: pytest.MonkeyPatch,
):
    monkeypatch.setenv("NEWSLETTER_BOUNCES__PASSWORD", "imap-Secr3t-value")

    settings = load_settings()

    assert settings.bounces.password is not None
    assert settings.bounces.password.get_secret_value() == "imap-Secr3t-value"
    assert "imap-Secr3t-value" not in repr(settings) and "imap-Secr3t-value" not in str(settings)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('address = "bounces+x@example.org"', "bounces.address: must be a plain ASCII address"),
        ('address = "bounces"', "bounces.address: must be a plain ASCII address"),
        ('address = "bounces@localhost"', "bounces.address: must be a plain ASCII address"),
        ('address = "bounces@bücher.de"', "bounces.address: the domain must be ASCII"),
        ('address = "newsletter-bounce@example.org"', "must be at most 15 characters"),
        ('mailbox = "pop3://bounces@mail.example.org/"', "bounces.mailbox: expected maildir:"),
        ("check_minutes = 0", "bounces.check_minutes: Input should be greater than or equal to 1"),
        ("soft_limit = 0", "bounces.soft_limit: Input should be greater than or equal to 1"),
        ("soft_days = 0", "bounces.soft_days: Input should be greater than or equal to 1"),
        ("poll = 5", "bounces.poll: unknown key"),
    ],
)
def test_a_bad_value_is_one_line_naming_the_key(tmp_path: Path, text: str, expected: str):
    path = write(tmp_path, f"[bounces]\n{text}\n")

    with pytest.raises(ConfigError) as raised:
        load_settings(path)

    assert str(raised.value).startswith(f"{path}: ") and expected in str(raised.value)
    assert "\n" not in str(raised.value) and raised.value.exit_code == 2


def test_a_mailbox_url_is_never_repeated_in_an_error_it_may_hold_a_password(tmp_path: Path):
    path = write(tmp_path, '[bounces]\nmailbox = "pop3://bounces:Sup3r-Secr3t@mail.example.org/"\n')

    with pytest.raises(ConfigError) as raised:
        load_settings(path)

    assert "Sup3r-Secr3t" not in str(raised.value)


# --- bounces check as the user runs it ---------------------------------------------------


def test_check_without_a_mailbox_says_what_to_set(run: Run, env: Path):
    code, out, err = run("bounces", "check")

    assert (code, out) == (2, "")
    assert err == (
        "error: [bounces] mailbox is not set: give the folder bounces arrive in, e.g. "
        "maildir:/var/mail/bounces or imaps://bounces@imap.example.org/INBOX\n"
    )


def test_check_with_a_password_in_the_url_refuses_it_without_repeating_it(
    run: Run, env: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setenv("NEWSLETTER_BOUNCES__MAILBOX", "imaps://ops:Sup3r-Secr3t@127.0.0.1/INBOX")

    code, out, err = run("bounces", "check")

    assert code == 2 and "NEWSLETTER_BOUNCES__PASSWORD" in err and err.count("\n") == 1
    assert "Sup3r-Secr3t" not in out + err


def test_check_of_a_folder_that_is_not_a_maildir_is_one_line_exit_3(
    run: Run, env: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setenv("NEWSLETTER_BOUNCES__MAILBOX", f"maildir:{env / 'nowhere'}")

    code, _, err = run("bounces", "check")

    assert code == 3 and err.count("\n") == 1
    assert err.startswith(f"error: [bounces] mailbox: {env / 'nowhere'} is not a Maildir")


@pytest.fixture(scope="module")
def dovecot() -> Iterator[DovecotServer]:
    with DovecotServer() as server:
        yield server


def test_the_imap_password_is_in_no_output_or_log_line_right_or_wrong(
    run: Run,
    env: Path,
    dovecot: DovecotServer,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
):
    folder = dovecot.new_folder()
    dovecot.deliver(fixture("out_of_office.eml"), folder=folder)
    monkeypatch.setenv(
        "NEWSLETTER_BOUNCES__MAILBOX", f"imaps://bounces@127.0.0.1:{dovecot.imaps_port}/{folder}"
    )
    monkeypatch.setenv("SSL_CERT_FILE", str(dovecot.cert))
    caplog.set_level(logging.DEBUG)

    monkeypatch.setenv("NEWSLETTER_BOUNCES__PASSWORD", "Wr0ng-imap-passw0rd")
    code, out, err = run("--verbose", "bounces", "check")
    assert code == 3 and "IMAP login as 'bounces'" in err and "NEWSLETTER_BOUNCES__PASSWORD" in err
    assert "Wr0ng-imap-passw0rd" not in out + err + caplog.text

    monkeypatch.setenv("NEWSLETTER_BOUNCES__PASSWORD", dovecot.password())
    code, out, err = run("--verbose", "bounces", "check")
    assert code == 0 and out.startswith("1 message: 0 hard, 0 soft, 0 complaint, 0 refused, 1 ")
    assert dovecot.password() not in out + err + caplog.text


# --- the check that newsletter run makes ---------------------------------------------------


def schedule() -> Schedule:
    return Schedule.from_settings(load_settings().schedule)


@pytest.fixture
def maildir(tmp_path: Path) -> Path:
    path = make_maildir(tmp_path / "Maildir")
    deliver(path, "1795850000.M1P1.mx", fixture("out_of_office.eml"))
    deliver(path, "1795850001.M2P1.mx", fixture("postfix_user_unknown.eml"))
    return path


def test_run_checks_the_mailbox_at_start_and_every_check_minutes(make_settings, maildir: Path):
    settings = make_settings(bounces={"mailbox": f"maildir:{maildir}", "check_minutes": 7})
    ctx = Context.open(settings)  # the real clock: APScheduler runs on real time
    stop = threading.Event()
    service = DigestService(ctx, schedule(), stop=stop)
    try:
        service.start()
        job = service.scheduler.get_job(BOUNCES_JOB)
        assert job is not None and job.trigger.interval == timedelta(minutes=7)
        deadline = time.monotonic() + 30
        while os.listdir(maildir / "new") and time.monotonic() < deadline:
            stop.wait(0.05)
        assert os.listdir(maildir / "new") == []  # the first check ran at start
    finally:
        stop.set()
        service.shutdown()
        ctx.close()


def test_a_failed_check_logs_one_line_and_the_next_one_works(
    make_context, maildir: Path, caplog: pytest.LogCaptureFixture
):
    ctx = make_context(bounces={"mailbox": f"maildir:{maildir}"})
    checker = BounceChecker(ctx, stop=threading.Event())
    hidden = maildir.with_name("elsewhere")
    maildir.rename(hidden)
    caplog.set_level(logging.INFO, logger="newsletter")

    assert checker.run() is None

    [line] = [r for r in caplog.records if r.name == "newsletter.schedule.bounce_checks"]
    assert line.levelno == logging.WARNING and line.exc_info is None
    assert "\n" not in line.getMessage()
    assert line.getMessage().startswith("bounce check failed: [bounces] mailbox: ")
    assert line.getMessage().endswith("the next check in 30 min tries again")
    hidden.rename(maildir)
    done = checker.run()
    assert done is not None and done.counts["ignored"] == 1 and done.counts["unmatched"] == 1


def test_run_with_an_unusable_mailbox_stops_at_start_with_one_line(tmp_path: Path):
    config = write_config(
        tmp_path / "newsletter.toml", bounces={"mailbox": "imaps://127.0.0.1/INBOX"}
    )

    done = subprocess.run(
        [str(Path(sys.executable).with_name("newsletter")), "--config", str(config), "run"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert (done.returncode, done.stdout) == (2, "")
    assert done.stderr == (
        "error: [bounces] mailbox: the imaps URL needs a user and a host: maildir:/path/to/"
        "Maildir, imaps://user@host[:port]/FOLDER or imap://user@host/FOLDER\n"
    )
