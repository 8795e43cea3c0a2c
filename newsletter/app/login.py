"""Logging in to the web app: failed-login delays, sessions and their CSRF tokens.

**Delays.** Every failed login counts against the name tried (``user:<name>``, known or not,
so the answers say nothing about which accounts exist) and against the client
(``client:<address>``). After ``FREE_FAILURES`` failures in a row, each key must wait before
its next attempt: 1 s, 2 s, 4 s, ... up to ``MAX_DELAY``; a key without failures for
``FORGET_AFTER`` starts again. The counters are rows in the database, so a delay holds across
restarts and across processes. Nobody is locked out for good: the longest wait is
``MAX_DELAY``, and a browser that logged in as a user before carries a signed device cookie
that is judged by its own counter instead of the user's, so someone guessing that user's
password elsewhere does not keep its owner out.

**Sessions.** A session is a random token in a signed cookie; the database keeps only its
SHA-256 (with the user, a CSRF token and an expiry time). Sessions end at ``SESSION_LIFETIME``,
at logout, and when the account is removed.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import timedelta

from newsletter.app.context import Context
from newsletter.app.users import User, verify_password
from newsletter.store import users as user_rows

SESSION_LIFETIME = timedelta(hours=12)
DEVICE_LIFETIME = timedelta(days=365)
FREE_FAILURES = 3  # failures in a row before the first delay
FIRST_DELAY = timedelta(seconds=1)
MAX_DELAY = timedelta(minutes=15)
FORGET_AFTER = timedelta(hours=24)
_MAC_BYTES = 16


def _key(ctx: Context, purpose: bytes) -> bytes:
    secret = ctx.settings.web.secret.get_secret_value().encode()
    return hashlib.sha256(b"newsletter-admin-" + purpose + b"\0" + secret).digest()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _signed(ctx: Context, purpose: bytes, value: str) -> str:
    mac = hmac.new(_key(ctx, purpose), value.encode(), hashlib.sha256).digest()[:_MAC_BYTES]
    return f"{value}.{_b64(mac)}"


def _unsigned(ctx: Context, purpose: bytes, signed: str) -> str | None:
    """The value inside a cookie we signed, or None for anything else."""
    value, _, _ = signed.rpartition(".")
    if not value or len(signed) > 300:
        return None
    expected = _signed(ctx, purpose, value).encode("utf-8", "surrogatepass")
    given = signed.encode("utf-8", "surrogatepass")  # any text: compare_digest takes ASCII str only
    return value if hmac.compare_digest(expected, given) else None


def delay_after(failures: int) -> timedelta:
    """How long a key waits after its ``failures``-th failure in a row."""
    if failures <= FREE_FAILURES:
        return timedelta(0)
    return min(FIRST_DELAY * 2 ** min(failures - FREE_FAILURES - 1, 20), MAX_DELAY)


@dataclass(frozen=True)
class LoginResult:
    """A login attempt: the user (None: refused), or the seconds to wait before the next."""

    user: User | None = None
    wait_seconds: int = 0
    device_cookie: str | None = None  # set on success: this browser is known to the user


def _keys(ctx: Context, name: str, client: str, device_cookie: str | None) -> list[str]:
    """What this attempt counts against: the client, and the user or this user's device."""
    name = name.strip().lower()[:100]
    device = _unsigned(ctx, b"device", device_cookie) if device_cookie else None
    device_user, _, device_id = (device or "").rpartition(":")
    second = f"device:{device_id}" if device and device_user == name else f"user:{name}"
    return [f"client:{client[:100]}", second]


def log_in(
    ctx: Context, name: str, password: str, *, client: str, device_cookie: str | None = None
) -> LoginResult:
    """Check a name and password, unless a delay is running for this client or user."""
    now = ctx.clock()
    keys = _keys(ctx, name, client, device_cookie)
    with ctx.store.atomic() as conn:
        blocked = [row for row in user_rows.get_failures(conn, keys) if row.blocked_until > now]
    if blocked:
        wait = max(row.blocked_until for row in blocked) - now
        return LoginResult(wait_seconds=max(1, int(wait.total_seconds() + 0.999)))
    user = verify_password(ctx, name, password)
    with ctx.store.atomic() as conn:
        if user is not None:
            user_rows.clear_failures(conn, keys)
            device = f"{user.name}:{secrets.token_urlsafe(12)}"
            return LoginResult(user, device_cookie=_signed(ctx, b"device", device))
        # Names tried once leave a row each: old ones go, so guessing cannot fill the table.
        user_rows.forget_failures_before(conn, now - FORGET_AFTER)
        for key in keys:
            failures = user_rows.count_failure(conn, key, now=now, forget_before=now - FORGET_AFTER)
            user_rows.block_until(conn, key, now + delay_after(failures))
    return LoginResult()


@dataclass(frozen=True)
class Session:
    """A logged-in operator: the user's name and the token every form must send back."""

    user_name: str
    csrf_token: str


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def start_session(ctx: Context, user: User) -> tuple[str, Session]:
    """A new session for ``user``: the cookie value to set, and the session."""
    now = ctx.clock()
    token = secrets.token_urlsafe(32)
    csrf = secrets.token_urlsafe(32)
    with ctx.store.atomic() as conn:
        user_rows.delete_expired_sessions(conn, now=now)
        user_rows.add_session(
            conn,
            _token_hash(token),
            user.id,
            csrf_token=csrf,
            now=now,
            expires_at=now + SESSION_LIFETIME,
        )
    return _signed(ctx, b"session", token), Session(user.name, csrf)


def current_session(ctx: Context, cookie: str | None) -> Session | None:
    """The live session a cookie names; None for no cookie, a forged, ended or expired one."""
    token = _unsigned(ctx, b"session", cookie) if cookie else None
    if token is None:
        return None
    with ctx.store.atomic() as conn:
        row = user_rows.get_session(conn, _token_hash(token), now=ctx.clock())
    return Session(row.user_name, row.csrf_token) if row else None


def end_session(ctx: Context, cookie: str | None) -> None:
    """Log out: the session is deleted, so its cookie opens nothing any more."""
    token = _unsigned(ctx, b"session", cookie) if cookie else None
    if token is not None:
        with ctx.store.atomic() as conn:
            user_rows.delete_session(conn, _token_hash(token))
