"""The public sign-up queue: requests as they arrived, until the confirmation queue takes them."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, delete, func, select

from newsletter.store.schema import signup_requests


@dataclass(frozen=True)
class SignupRequest:
    id: int
    email: str
    name: str
    requested_at: datetime


def add(conn: Connection, email: str, name: str, *, now: datetime) -> None:
    conn.execute(signup_requests.insert().values(email=email, name=name, requested_at=now))


def count(conn: Connection) -> int:
    return int(conn.execute(select(func.count()).select_from(signup_requests)).scalar_one())


def oldest(conn: Connection, *, limit: int) -> list[SignupRequest]:
    """The first ``limit`` requests, in the order they arrived."""
    rows = conn.execute(select(signup_requests).order_by(signup_requests.c.id).limit(limit))
    return [SignupRequest(r.id, r.email, r.name, r.requested_at) for r in rows]


def of_address(conn: Connection, email: str) -> list[SignupRequest]:
    """The queued requests for one address (``subscribers show``)."""
    rows = conn.execute(
        select(signup_requests)
        .where(signup_requests.c.email == email)
        .order_by(signup_requests.c.id)
    )
    return [SignupRequest(r.id, r.email, r.name, r.requested_at) for r in rows]


def delete_ids(conn: Connection, ids: Sequence[int]) -> int:
    if not ids:
        return 0
    return conn.execute(delete(signup_requests).where(signup_requests.c.id.in_(list(ids)))).rowcount


def delete_address(conn: Connection, email: str) -> int:
    """Drop every queued request for one address (``subscribers forget``)."""
    return conn.execute(delete(signup_requests).where(signup_requests.c.email == email)).rowcount
