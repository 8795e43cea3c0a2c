"""``newsletter admin``: accounts made, listed and removed from the command line."""

from __future__ import annotations

import io
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from newsletter.app import Context, users
from newsletter.cli import cli
from newsletter.config import load_settings
from newsletter.errors import UsageError
from newsletter.store import users as user_rows
from tests.admin_login import PASSWORD, cheap_passwords
from tests.conftest import Run

pytestmark = pytest.mark.usefixtures("cheap_passwords")
__all__ = ["cheap_passwords"]


def add_user(run: Run, monkeypatch: pytest.MonkeyPatch, name: str, stdin: str):
    monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
    return run("admin", "add-user", name, "--password-stdin")


def stored_hash(name: str) -> str | None:
    ctx = Context.open(load_settings(None))
    try:
        with ctx.store.atomic() as conn:
            found = user_rows.get_user(conn, name)
        return found.password_hash if found else None
    finally:
        ctx.close()


def test_add_list_and_remove_users(run: Run, env: Path, monkeypatch):
    code, out, err = add_user(run, monkeypatch, "Ada", PASSWORD + "\n")
    assert (code, out, err) == (0, "added user ada\n", "")
    assert add_user(run, monkeypatch, "grace", PASSWORD + "\r\n")[0] == 0

    code, out, _ = run("admin", "list-users")

    assert code == 0
    assert [line.split()[0] for line in out.splitlines()] == ["ada", "grace"]
    assert all(" (added " in line and line.endswith(" UTC)") for line in out.splitlines())
    hashed = stored_hash("ada")
    assert hashed is not None and hashed.startswith("$argon2id$") and PASSWORD not in hashed
    assert users.password_hasher().verify(stored_hash("grace") or "", PASSWORD)  # no \r kept

    code, out, _ = run("admin", "remove-user", "ada")
    assert (code, out) == (0, "removed user ada; its sessions are ended\n")
    assert [line.split()[0] for line in run("admin", "list-users")[1].splitlines()] == ["grace"]


@pytest.mark.parametrize(
    ("args", "stdin", "message"),
    [
        (["add-user", "ada", "--password-stdin"], "short\n", "at least 10 characters"),
        (["add-user", "ada", "--password-stdin"], "", "no password on standard input"),
        (["add-user", "two words", "--password-stdin"], PASSWORD, "is not a usable user name"),
        (["remove-user", "nobody"], "", "there is no user 'nobody' (newsletter admin list-users)"),
    ],
)
def test_mistakes_are_one_line_and_exit_2(run: Run, env: Path, monkeypatch, args, stdin, message):
    monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
    code, out, err = run("admin", *args)
    assert code == 2 and out == ""
    assert err.startswith("error: ") and message in err and err.count("\n") == 1


def test_a_taken_name_is_refused(run: Run, env: Path, monkeypatch):
    add_user(run, monkeypatch, "ada", PASSWORD + "\n")
    code, _, err = add_user(run, monkeypatch, "ADA", PASSWORD + "\n")
    assert code == 2
    assert err == "error: there is already a user 'ada' (newsletter admin remove-user ada first)\n"


def test_the_password_prompt_asks_twice_and_hides_it(env: Path):
    result = CliRunner().invoke(
        cli, ["admin", "add-user", "ada"], input=f"{PASSWORD}\n{PASSWORD}\n"
    )
    assert result.exit_code == 0, result.output
    assert "Password:" in result.output and "Repeat for confirmation:" in result.output
    assert PASSWORD not in result.output
    assert stored_hash("ada") is not None


def test_no_users_yet_says_how_to_add_one(run: Run, env: Path):
    assert run("admin", "list-users")[1] == "no users yet: newsletter admin add-user NAME\n"


def test_every_admin_command_has_help(run: Run):
    for command in ("add-user", "remove-user", "list-users"):
        code, out, _ = run("admin", command, "--help")
        assert code == 0 and "Usage: " in out and len(out.splitlines()) > 3


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=100))
def test_user_names_are_stored_lowercase_and_plain_or_refused(raw):
    try:
        name = users.user_name(raw)
    except UsageError as exc:
        assert "\n" not in str(exc)
        return
    assert users.NAME.fullmatch(name) and name == raw.strip().lower()
