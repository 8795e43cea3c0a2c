"""The operator's accounts, their sessions, and the failed-login counters that slow guessing.

Passwords arrive here already hashed (argon2id); session tokens only as their SHA-256, so a
copy of the database opens no session. Counters are rows, so a delay holds across restarts
and across processes sharing the database.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, case, delete, select, update
from sqlalchemy.exc import IntegrityError

from newsletter.store.schema import admin_sessions, admin_users, login_failures


@dataclass(frozen=True)
class UserRow:
    id: int
    name: str
    password_hash: str
    created_at: datetime


class UserExists(Exception):
    """An account with this name is already there."""


def add_user(conn: Connection, name: str, password_hash: str, *, now: datetime) -> int:
    """Insert an account; ``UserExists`` when the name is taken."""
    try:
        with conn.begin_nested():
            inserted = conn.execute(
                admin_users.insert().values(name=name, password_hash=password_hash, created_at=now)
            ).inserted_primary_key
    except IntegrityError as exc:
        raise UserExists(name) from exc
    assert inserted is not None
    return int(inserted[0])


def get_user(conn: Connection, name: str) -> UserRow | None:
    row = conn.execute(select(admin_users).where(admin_users.c.name == name)).first()
    return UserRow(row.id, row.name, row.password_hash, row.created_at) if row else None


def list_users(conn: Connection) -> list[UserRow]:
    rows = conn.execute(select(admin_users).order_by(admin_users.c.name))
    return [UserRow(r.id, r.name, r.password_hash, r.created_at) for r in rows]


def set_password_hash(conn: Connection, user_id: int, password_hash: str) -> None:
    conn.execute(
        update(admin_users).where(admin_users.c.id == user_id).values(password_hash=password_hash)
    )


def remove_user(conn: Connection, name: str) -> bool:
    """Delete an account and every session it has; False when there is no such account."""
    user = get_user(conn, name)
    if user is None:
        return False
    conn.execute(delete(admin_sessions).where(admin_sessions.c.user_id == user.id))
    conn.execute(delete(admin_users).where(admin_users.c.id == user.id))
    return True


# --- sessions ----------------------------------------------------------------------------


@dataclass(frozen=True)
class SessionRow:
    user_id: int
    user_name: str
    csrf_token: str
    expires_at: datetime


def add_session(
    conn: Connection,
    token_hash: str,
    user_id: int,
    *,
    csrf_token: str,
    now: datetime,
    expires_at: datetime,
) -> None:
    conn.execute(
        admin_sessions.insert().values(
            token_hash=token_hash,
            user_id=user_id,
            csrf_token=csrf_token,
            created_at=now,
            expires_at=expires_at,
        )
    )


def get_session(conn: Connection, token_hash: str, *, now: datetime) -> SessionRow | None:
    """The live session with this token hash (not expired, its account still there)."""
    row = conn.execute(
        select(
            admin_sessions.c.user_id,
            admin_users.c.name,
            admin_sessions.c.csrf_token,
            admin_sessions.c.expires_at,
        )
        .join(admin_users, admin_users.c.id == admin_sessions.c.user_id)
        .where(admin_sessions.c.token_hash == token_hash, admin_sessions.c.expires_at > now)
    ).first()
    return SessionRow(row.user_id, row.name, row.csrf_token, row.expires_at) if row else None


def delete_session(conn: Connection, token_hash: str) -> None:
    conn.execute(delete(admin_sessions).where(admin_sessions.c.token_hash == token_hash))


def delete_expired_sessions(conn: Connection, *, now: datetime) -> int:
    return conn.execute(delete(admin_sessions).where(admin_sessions.c.expires_at <= now)).rowcount


# --- failed logins -----------------------------------------------------------------------


@dataclass(frozen=True)
class FailureRow:
    key: str
    failures: int
    last_failure_at: datetime
    blocked_until: datetime


def get_failures(conn: Connection, keys: list[str]) -> list[FailureRow]:
    rows = conn.execute(select(login_failures).where(login_failures.c.key.in_(keys)))
    return [FailureRow(r.key, r.failures, r.last_failure_at, r.blocked_until) for r in rows]


def count_failure(conn: Connection, key: str, *, now: datetime, forget_before: datetime) -> int:
    """Count one more failure for ``key`` and return the count; a count whose last failure
    is older than ``forget_before`` starts again at 1. Atomic: concurrent failures all count."""
    counted = conn.execute(
        update(login_failures)
        .where(login_failures.c.key == key)
        .values(
            failures=case(
                (login_failures.c.last_failure_at < forget_before, 1),
                else_=login_failures.c.failures + 1,
            ),
            last_failure_at=now,
        )
    ).rowcount
    if not counted:
        try:
            with conn.begin_nested():
                conn.execute(
                    login_failures.insert().values(
                        key=key, failures=1, last_failure_at=now, blocked_until=now
                    )
                )
        except IntegrityError:  # another process made the row at the same moment
            return count_failure(conn, key, now=now, forget_before=forget_before)
    found = conn.execute(select(login_failures.c.failures).where(login_failures.c.key == key))
    return int(found.scalar_one())


def block_until(conn: Connection, key: str, until: datetime) -> None:
    conn.execute(
        update(login_failures).where(login_failures.c.key == key).values(blocked_until=until)
    )


def clear_failures(conn: Connection, keys: list[str]) -> None:
    conn.execute(delete(login_failures).where(login_failures.c.key.in_(keys)))


def forget_failures_before(conn: Connection, cutoff: datetime) -> int:
    """Drop counters whose last failure is older than ``cutoff`` and that block nobody."""
    return conn.execute(
        delete(login_failures).where(
            login_failures.c.last_failure_at < cutoff, login_failures.c.blocked_until < cutoff
        )
    ).rowcount
