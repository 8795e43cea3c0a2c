"""The CLI as a user sees it: exit codes, one-line errors, help for every command."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from email.message import EmailMessage
from pathlib import Path

import click
import pytest

from newsletter import __version__
from newsletter.cli import cli
from newsletter.config import load_settings
from newsletter.store import Store, outbox
from tests import wire
from tests.conftest import SEEDS, Run
from tests.smtp_servers import SmtpTestServer


def _all_commands(
    group: click.Group, prefix: tuple[str, ...] = ()
) -> list[tuple[tuple[str, ...], click.Command]]:
    """Every command and subcommand, as click finds them (loading lazy ones), by path."""
    found: list[tuple[tuple[str, ...], click.Command]] = []
    ctx = click.Context(group)
    for name in group.list_commands(ctx):
        command = group.get_command(ctx, name)
        assert command is not None, f"{' '.join((*prefix, name))} cannot be loaded"
        found.append(((*prefix, name), command))
        if isinstance(command, click.Group):
            found.extend(_all_commands(command, (*prefix, name)))
    return found


COMMANDS = _all_commands(cli)


@pytest.mark.parametrize(("path", "command"), COMMANDS, ids=[" ".join(p) for p, _ in COMMANDS])
def test_every_command_has_help_written_for_users(
    run: Run, path: tuple[str, ...], command: click.Command
):
    code, out, _ = run(*path, "--help")
    assert code == 0
    assert command.help and len(command.help.split()) >= 4, f"{' '.join(path)} needs a help text"
    assert command.help.split("\n")[0].rstrip(".") in " ".join(out.split())


@pytest.mark.parametrize(
    ("path", "command"),
    [((), cli), *COMMANDS],
    ids=["newsletter"] + [" ".join(p) for p, _ in COMMANDS],
)
def test_every_option_says_what_it_does(path: tuple[str, ...], command: click.Command):
    for param in command.params:
        if isinstance(param, click.Option):
            assert param.help and len(param.help.split()) >= 2, (
                f"{' '.join(('newsletter', *path))} {param.opts[0]} needs a help text"
            )


@pytest.mark.parametrize(("path", "command"), COMMANDS, ids=[" ".join(p) for p, _ in COMMANDS])
def test_every_command_is_listed_with_its_summary_in_its_groups_help(
    run: Run, path: tuple[str, ...], command: click.Command
):
    code, out, _ = run(*path[:-1], "--help")
    assert code == 0
    listed = {
        line.split()[0]: " ".join(line.split()[1:])
        for line in out.split("Commands:")[1].splitlines()
        if line.strip()
    }
    assert command.name == path[-1], "the lazy command table and the command disagree on its name"
    summary = command.get_short_help_str(limit=200).rstrip(".")
    assert listed[path[-1]].rstrip(".").split("...")[0] in summary


# What the commands use and `newsletter --help` must not load (the CLI starts at once; the
# figure is bench/startup.py's, this is the behaviour behind it).
HEAVY = ("sqlalchemy", "premailer", "starlette", "feedparser", "uvicorn", "apscheduler")
HEAVY += ("pydantic", "jinja2", "httpx", "rich", "aiosmtpd", "dkim", "nh3")


def test_help_and_version_load_nothing_the_commands_use():
    every_help = [["--help"], ["--version"]] + [[*path, "--help"] for path, _ in COMMANDS]
    script = (
        "import contextlib, io, json, sys\n"
        "from newsletter.cli import cli\n"
        "from newsletter.cli.base import run_guarded\n"
        "codes = []\n"
        "for args in json.loads(sys.argv[1]):\n"
        "    with contextlib.redirect_stdout(io.StringIO()):\n"
        "        codes.append(run_guarded(cli, args))\n"
        "print(json.dumps([codes, sorted(sys.modules)]))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, json.dumps(every_help)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    codes, modules = json.loads(done.stdout)
    assert codes == [0] * len(every_help)
    assert "newsletter.cli.send" in modules  # the command modules themselves did load
    loaded = sorted({m.partition(".")[0] for m in modules} & set(HEAVY))
    assert loaded == [], f"--help or --version imported {loaded}"


def test_version(run: Run):
    code, out, _ = run("--version")
    assert code == 0 and __version__ in out


def test_config_error_is_one_line_and_exit_2(run: Run, tmp_path: Path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[smtp]\nport = 'twenty-five'\n")
    code, out, err = run("--config", str(bad), "send-now")
    assert code == 2
    assert err.strip().count("\n") == 0
    assert err.startswith(f"error: {bad}: smtp.port:")
    assert "Traceback" not in out + err


def test_send_now_then_nothing_new(run: Run, env: Path, smtp_server: SmtpTestServer):
    assert run("subscribers", "add", "ada@example.org", "--name", "Ada")[0] == 0
    assert run("subscribers", "add", "alan@example.net")[0] == 0

    code, out, _ = run("send-now")
    assert code == 0
    assert "2 sent, 0 failed" in out
    assert sorted(smtp_server.handler.recipients()) == ["ada@example.org", "alan@example.net"]

    code, out, _ = run("send-now")
    assert code == 0
    assert "no new articles since the last digest; nothing new was sent." in out
    assert len(smtp_server.received) == 2


def test_dry_run_and_test_copy_mark_nothing(run: Run, env: Path, smtp_server: SmtpTestServer):
    run("subscribers", "add", "ada@example.org", "--name", "Ada")

    code, out, _ = run("send-now", "--dry-run")
    assert code == 0
    assert "to 1 active subscribers" in out
    assert smtp_server.received == []

    code, out, _ = run("send-now", "--to", "editor@example.org")
    assert code == 0 and "test copy" in out
    [test_copy] = smtp_server.messages()
    assert test_copy["Subject"].startswith("[TEST] ")
    assert test_copy["To"].addresses[0].addr_spec == "editor@example.org"

    code, out, _ = run("send-now")
    assert code == 0 and "1 sent" in out
    assert smtp_server.handler.recipients() == ["editor@example.org", "ada@example.org"]


def test_preview_writes_html_without_marking_anything(run: Run, env: Path, smtp_server):
    target = env / "preview.html"
    code, out, _ = run("preview", "--output", str(target))
    assert code == 0 and str(target) in out
    html = target.read_text(encoding="utf-8")
    assert "Kingsgate footbridge" in html
    assert "Alex Reader" in html  # personal fields filled with sample values
    assert not re.search(r"NL[0-9a-f]{12}Q\w+Q", html), "a personalization token was left in"
    run("subscribers", "add", "ada@example.org")
    _, out, _ = run("send-now")
    assert "1 sent" in out


def test_unreachable_smtp_fails_fast_before_any_row(run: Run, env: Path, monkeypatch):
    from newsletter.inbox import free_port

    monkeypatch.setenv("NEWSLETTER_SMTP__PORT", str(free_port()))
    run("subscribers", "add", "ada@example.org")
    code, _, err = run("send-now")
    assert code == 3
    assert err.startswith("error: cannot connect to the SMTP server 127.0.0.1:")
    assert "check [smtp] host, port and security" in err
    assert err.strip().count("\n") == 0
    store = Store.open(load_settings().store.url)
    with store.atomic() as conn:
        assert outbox.counts(conn, 1) == {}


def test_missing_articles_folder_is_one_line(run: Run, env: Path, monkeypatch):
    monkeypatch.setenv("NEWSLETTER_SOURCES__ARTICLES_DIR", str(env / "nowhere"))
    code, _, err = run("send-now")
    assert code == 1
    assert "nowhere" in err and "articles_dir" in err
    assert err.strip().count("\n") == 0


def test_demo_delivers_one_digest_per_sample_subscriber(run: Run, env: Path):
    code, out, _ = run("demo")
    assert code == 0, out
    inbox = env / "var" / "demo" / "inbox"
    messages = sorted(inbox.glob("*.eml"))
    assert len(messages) == 4
    from email import message_from_bytes, policy

    parsed = [message_from_bytes(p.read_bytes(), policy=policy.default) for p in messages]
    assert all(isinstance(m, EmailMessage) for m in parsed)
    assert {m["Delivered-To"] for m in parsed} == {
        "ada@example.org",
        "grace@example.org",
        "alan@example.net",
        "zoe@example.com",
    }
    assert all(p.with_suffix(".html").exists() for p in messages)
    assert str(inbox) in out
    assert "admin add-user NAME" in out  # the web preview needs an account now
    for path in messages:  # the capture inbox is not the strict test server: check here
        delivered_to, _, data = path.read_bytes().partition(b"\r\n")
        wire.assert_conforms(data, rcpt_tos=[delivered_to.split(b": ", 1)[1].decode()])


def test_a_bad_article_file_is_reported_once_and_the_rest_go_out(
    run: Run, env: Path, smtp_server: SmtpTestServer, monkeypatch
):
    articles = env / "articles"
    articles.mkdir()
    (articles / "001_good.txt").write_text(
        "date 2026-11-25\n\nThe council approved the new park on Monday. It opens in May.\n",
        encoding="utf-8",
    )
    (articles / "002_bad.txt").write_text("no date here\n\nText.\n", encoding="utf-8")
    monkeypatch.setenv("NEWSLETTER_SOURCES__ARTICLES_DIR", str(articles))
    run("subscribers", "add", "ada@example.org")

    code, out, err = run("send-now")

    assert code == 0
    assert "1 articles, 1 sent" in out
    assert err.count("002_bad.txt") == 1
    [message] = smtp_server.messages()
    assert "The council approved the new park" in message.get_body(("plain",)).get_content()


def test_sources_check_exits_1_when_a_source_has_a_problem(run: Run, env: Path, monkeypatch):
    monkeypatch.setenv("NEWSLETTER_SOURCES__ARTICLES_DIR", str(env / "nowhere"))
    code, out, _ = run("sources", "check")
    assert code == 1
    assert "nowhere" in out and "problem:" in out

    monkeypatch.setenv("NEWSLETTER_SOURCES__ARTICLES_DIR", str(SEEDS))
    code, out, _ = run("sources", "check")
    assert code == 0
    assert f"{SEEDS}: 9 entries, 9 new" in out


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("foo", "error: [store] url: 'foo' is not a database URL"),
        (
            "postgresql+nosuchdriver://u:hunter2@127.0.0.1:1/db",
            "error: [store] url: cannot use postgresql+nosuchdriver://u:***@127.0.0.1:1/db",
        ),
    ],
)
def test_a_bad_database_url_is_one_line_without_the_password(
    run: Run, env: Path, monkeypatch, url: str, expected: str
):
    monkeypatch.setenv("NEWSLETTER_STORE__URL", url)
    code, _, err = run("status")
    assert code == 1
    assert err.startswith(expected)
    assert "hunter2" not in err and err.strip().count("\n") == 0
