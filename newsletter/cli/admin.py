"""``newsletter admin``: the accounts that may log in to the web app's admin pages."""

from __future__ import annotations

import sys

import click

from newsletter.cli.base import CliState, pass_state
from newsletter.errors import UsageError


@click.group()
def admin() -> None:
    """Accounts for the web app's admin pages (/admin, /preview) served by `newsletter serve`.

    Passwords are stored hashed with argon2id. Removing an account logs it out everywhere.
    """


def _read_password(from_stdin: bool) -> str:
    if from_stdin:
        line = sys.stdin.readline()
        password = line[:-1] if line.endswith("\n") else line
        if not password:
            raise UsageError("--password-stdin: no password on standard input")
        return password.removesuffix("\r")
    return str(click.prompt("Password", hide_input=True, confirmation_prompt=True))


@admin.command("add-user")
@click.argument("name")
@click.option(
    "--password-stdin",
    is_flag=True,
    help="Read the password from the first line of standard input instead of a prompt.",
)
@pass_state
def add_user(state: CliState, name: str, password_stdin: bool) -> None:
    """Make an account NAME that may log in; asks for its password (at least 10 characters)."""
    from newsletter.app import users

    users.user_name(name)  # a bad name is refused before the password is asked for
    added = users.add_user(state.context(), name, _read_password(password_stdin))
    click.echo(f"added user {added.name}")


@admin.command("remove-user")
@click.argument("name")
@pass_state
def remove_user(state: CliState, name: str) -> None:
    """Delete the account NAME; its sessions end at once."""
    from newsletter.app import users

    users.remove_user(state.context(), name)
    click.echo(f"removed user {name.strip().lower()}; its sessions are ended")


@admin.command("list-users")
@pass_state
def list_users(state: CliState) -> None:
    """List the accounts, with the time each was made."""
    from newsletter.app import users

    found = users.list_users(state.context())
    if not found:
        click.echo("no users yet: newsletter admin add-user NAME")
    for user in found:
        click.echo(f"{user.name}  (added {user.created_at:%Y-%m-%d %H:%M} UTC)")
