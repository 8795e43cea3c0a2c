"""The operator's accounts for the web app: add, remove, list; passwords hashed with argon2id.

Removing an account ends its sessions in the same transaction. Names are kept lowercase, so
``Ada`` and ``ada`` are one account.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from functools import cache

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from newsletter.app.context import Context
from newsletter.errors import UsageError
from newsletter.store import users as user_rows

NAME = re.compile(r"[a-z0-9][a-z0-9._@-]{0,63}")
MIN_PASSWORD_CHARS = 10
MAX_PASSWORD_CHARS = 1024  # any longer is refused unhashed


@cache
def password_hasher() -> PasswordHasher:
    """argon2id with argon2-cffi's defaults (RFC 9106's low-memory profile: 64 MiB, t=3)."""
    return PasswordHasher()


@cache
def _dummy_hash(hasher: PasswordHasher) -> str:
    # Verified against for unknown names, so they cost the same time as known ones.
    return hasher.hash("not a password: nobody has this account")


def user_name(raw: str) -> str:
    """The account name as stored; ``UsageError`` for one that could not be."""
    name = raw.strip().lower()
    if not NAME.fullmatch(name):
        raise UsageError(
            f"{raw!r} is not a usable user name: use 1 to 64 letters, digits and . _ @ -, "
            "starting with a letter or digit"
        )
    return name


def check_new_password(password: str) -> None:
    """``UsageError`` for a password too short or too long to accept."""
    if len(password) < MIN_PASSWORD_CHARS:
        raise UsageError(f"the password must have at least {MIN_PASSWORD_CHARS} characters")
    if len(password) > MAX_PASSWORD_CHARS:
        raise UsageError(f"the password must have at most {MAX_PASSWORD_CHARS} characters")


@dataclass(frozen=True)
class User:
    id: int
    name: str
    created_at: datetime


def add_user(ctx: Context, name: str, password: str) -> User:
    """Make an account; ``UsageError`` for a bad or taken name or an unusable password."""
    name = user_name(name)
    check_new_password(password)
    hashed = password_hasher().hash(password)
    now = ctx.clock()
    try:
        with ctx.store.atomic() as conn:
            user_id = user_rows.add_user(conn, name, hashed, now=now)
    except user_rows.UserExists:
        raise UsageError(
            f"there is already a user {name!r} (newsletter admin remove-user {name} first)"
        ) from None
    return User(user_id, name, now)


def remove_user(ctx: Context, name: str) -> None:
    """Delete an account and end its sessions at once; ``UsageError`` when there is none."""
    name = name.strip().lower()
    with ctx.store.atomic() as conn:
        if not user_rows.remove_user(conn, name):
            raise UsageError(f"there is no user {name!r} (newsletter admin list-users)")


def list_users(ctx: Context) -> list[User]:
    """Every account, by name."""
    with ctx.store.atomic() as conn:
        return [User(u.id, u.name, u.created_at) for u in user_rows.list_users(conn)]


def verify_password(ctx: Context, name: str, password: str) -> User | None:
    """The account if ``password`` is its password, else None; as slow for unknown names.

    A hash made with weaker parameters than today's is replaced on a successful login.
    """
    with ctx.store.atomic() as conn:
        found = user_rows.get_user(conn, name.strip().lower())
    hasher = password_hasher()
    if len(password) > MAX_PASSWORD_CHARS:
        password = password[:MAX_PASSWORD_CHARS]  # hashed anyway, so the time says nothing
        found = None
    try:
        hasher.verify(found.password_hash if found else _dummy_hash(hasher), password)
    except (VerificationError, InvalidHashError):
        return None
    if found is None:
        return None
    if hasher.check_needs_rehash(found.password_hash):
        with ctx.store.atomic() as conn:
            user_rows.set_password_hash(conn, found.id, hasher.hash(password))
    return User(found.id, found.name, found.created_at)
