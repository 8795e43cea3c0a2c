"""Articles seen and the digests that carried them."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, delete, func, select, update
from sqlalchemy.engine import Row
from sqlalchemy.exc import IntegrityError
from sqlalchemy.sql import Select

from newsletter.models import Article, DigestState, MailingKind, RenderedDigest
from newsletter.store.schema import articles, deliveries, digest_articles, digests, stored_text


def _article_to_json(article: Article) -> str:
    data = asdict(article)
    data["published"] = article.published.isoformat()
    return json.dumps(data, ensure_ascii=False)


def _article_from_json(payload: str, published: datetime) -> Article:
    data = json.loads(payload)
    data["published"] = published  # the stored value: first seen for undated feed entries
    data["paragraphs"] = tuple(data.get("paragraphs") or ())
    data["tags"] = tuple(data.get("tags") or ())
    return Article(**data)


def remember_articles(conn: Connection, found: Sequence[Article], *, now: datetime) -> int:
    """Store articles not seen before (by key); keep the first-seen copy of known ones."""
    if not found:
        return 0
    known = known_keys(conn, [a.key for a in found])
    # By stored key: two keys that differ only by a NUL are one row.
    new: dict[str, Article] = {}
    for a in found:
        if a.key not in known:
            new.setdefault(stored_text(a.key), a)
    if new:
        conn.execute(
            articles.insert(),
            [
                {
                    "key": a.key,
                    "url": a.url,
                    "title": a.title,
                    "published": a.published,
                    "first_seen": now,
                    "origin": a.origin,
                    "payload": _article_to_json(a),
                }
                for a in new.values()
            ],
        )
    return len(new)


def known_keys(conn: Connection, keys: Sequence[str]) -> set[str]:
    """Which of ``keys`` the store has seen before (as given, though stored without NUL)."""
    found: set[str] = set()
    for start in range(0, len(keys), 500):
        chunk = list(keys[start : start + 500])
        found.update(
            conn.execute(select(articles.c.key).where(articles.c.key.in_(chunk))).scalars()
        )
    return {key for key in keys if stored_text(key) in found}


def _carried_article_ids() -> Select[tuple[int]]:
    """Articles a digest carries. A failed digest (nobody received it) carries none: its
    articles go to the next digest, which takes their links over (``create_digest``)."""
    return (
        select(digest_articles.c.article_id)
        .join(digests, digests.c.id == digest_articles.c.digest_id)
        .where(digests.c.state != DigestState.FAILED.value)
    )


def uncarried_articles(conn: Connection, *, published_since: datetime) -> list[Article]:
    """Articles no digest has carried yet, published at or after ``published_since``."""
    rows = conn.execute(
        select(articles.c.payload, articles.c.published)
        .where(articles.c.published >= published_since)
        .where(articles.c.id.not_in(_carried_article_ids()))
    )
    return [_article_from_json(row.payload, row.published) for row in rows]


def carried_urls(conn: Connection, *, published_since: datetime) -> list[str]:
    """URLs of articles that digests already carried, within the window."""
    rows = conn.execute(
        select(articles.c.url).where(
            articles.c.url.is_not(None),
            articles.c.published >= published_since,
            articles.c.id.in_(_carried_article_ids()),
        )
    )
    return [url for (url,) in rows]


class DigestConflict(Exception):
    """Another digest already holds this slot or one of these articles (a concurrent send)."""


@dataclass(frozen=True)
class StoredDigest:
    id: int
    slot: str | None
    subject: str
    preheader: str
    html: str
    text: str
    token_nonce: str
    state: DigestState
    created_at: datetime
    finished_at: datetime | None
    kind: MailingKind = MailingKind.DIGEST
    archive_key: str | None = None  # what its "View in browser" link names


def create_digest(
    conn: Connection,
    rendered: RenderedDigest,
    *,
    token_nonce: str,
    slot: str | None,
    now: datetime,
    archive_key: str | None = None,
) -> int:
    """Insert a digest and claim its articles; the database refuses a slot or article twice.

    An article a failed digest had is taken from it (nobody received it there).
    ``DigestConflict`` when another digest took the slot or an article first.
    """
    try:
        inserted = conn.execute(
            digests.insert().values(
                slot=slot,
                subject=rendered.subject,
                preheader=rendered.preheader,
                html=rendered.html,
                text=rendered.text,
                token_nonce=token_nonce,
                state=DigestState.SENDING.value,
                created_at=now,
                archive_key=archive_key,
            )
        ).inserted_primary_key
        assert inserted is not None
        digest_id = inserted[0]
        stored_ids = {
            key: article_id
            for key, article_id in conn.execute(
                select(articles.c.key, articles.c.id).where(
                    articles.c.key.in_(rendered.article_keys)
                )
            )
        }
        ids = {key: stored_ids[stored_text(key)] for key in rendered.article_keys}
        # Articles of failed digests are free again: this digest takes their links over.
        failed = select(digests.c.id).where(digests.c.state == DigestState.FAILED.value)
        conn.execute(
            delete(digest_articles).where(
                digest_articles.c.article_id.in_(list(ids.values())),
                digest_articles.c.digest_id.in_(failed),
            )
        )
        conn.execute(
            digest_articles.insert(),
            [
                {"digest_id": digest_id, "article_id": ids[key], "position": position}
                for position, key in enumerate(rendered.article_keys)
            ],
        )
    except IntegrityError as exc:
        raise DigestConflict(
            f"slot {slot!r} or one of {len(rendered.article_keys)} articles is in another digest"
        ) from exc
    return int(digest_id)


def _to_stored(row: Row[Any]) -> StoredDigest:
    data = dict(row._mapping)
    data["state"] = DigestState(data["state"])
    data["kind"] = MailingKind(data["kind"])
    return StoredDigest(**data)


def get_digest(conn: Connection, digest_id: int) -> StoredDigest | None:
    row = conn.execute(select(digests).where(digests.c.id == digest_id)).first()
    return _to_stored(row) if row else None


def digest_id_for_archive_key(conn: Connection, archive_key: str) -> int | None:
    """The digest whose "View in browser" link names ``archive_key``, if any."""
    return conn.execute(
        select(digests.c.id).where(digests.c.archive_key == archive_key)
    ).scalar_one_or_none()


def slot_taken(conn: Connection, slot: str) -> bool:
    return conn.execute(select(digests.c.id).where(digests.c.slot == slot)).first() is not None


def unfinished_digest_ids(conn: Connection, *, kind: MailingKind = MailingKind.DIGEST) -> list[int]:
    """Digests (or mailings of ``kind``) whose outbox still has work, oldest first."""
    return list(
        conn.execute(
            select(digests.c.id)
            .where(digests.c.state.in_([DigestState.SENDING.value, DigestState.PAUSED.value]))
            .where(digests.c.kind == kind.value)
            .order_by(digests.c.id)
        ).scalars()
    )


def set_digest_state(
    conn: Connection,
    digest_id: int,
    state: DigestState,
    *,
    now: datetime,
    only_from: Sequence[DigestState] | None = None,
) -> bool:
    """Set the state (only if it is one of ``only_from``, when given); whether it changed."""
    values: dict[str, object] = {"state": state.value}
    if state in (DigestState.SENT, DigestState.FAILED):
        values["finished_at"] = now
    stmt = update(digests).where(digests.c.id == digest_id)
    if only_from is not None:
        stmt = stmt.where(digests.c.state.in_([s.value for s in only_from]))
    return conn.execute(stmt.values(**values)).rowcount == 1


def resume_paused(conn: Connection, digest_id: int, *, now: datetime) -> bool:
    """Set a paused digest sending again; whether it was paused."""
    return set_digest_state(
        conn, digest_id, DigestState.SENDING, now=now, only_from=[DigestState.PAUSED]
    )


def lock_digest_state(conn: Connection, digest_id: int) -> DigestState | None:
    """The digest's state, its row locked until the transaction ends (PostgreSQL): senders
    that finish at the same time decide what becomes of the digest one after the other."""
    state = conn.execute(
        select(digests.c.state).where(digests.c.id == digest_id).with_for_update()
    ).scalar()
    return None if state is None else DigestState(state)


def recent_digests(
    conn: Connection, *, limit: int = 20, sent_only: bool = False
) -> list[StoredDigest]:
    stmt = (
        select(digests)
        .where(digests.c.kind == MailingKind.DIGEST.value)
        .order_by(digests.c.id.desc())
        .limit(limit)
    )
    if sent_only:
        stmt = stmt.where(digests.c.state == DigestState.SENT.value)
    return [_to_stored(row) for row in conn.execute(stmt)]


@dataclass(frozen=True)
class DigestSummary:
    """A digest without its bodies: enough for lists."""

    id: int
    slot: str | None
    subject: str
    preheader: str
    state: DigestState
    created_at: datetime
    finished_at: datetime | None


def list_digests(conn: Connection, *, sent_only: bool = False) -> list[DigestSummary]:
    """Every digest, newest first, without loading the rendered bodies."""
    columns = [getattr(digests.c, name) for name in DigestSummary.__dataclass_fields__]
    stmt = select(*columns).where(digests.c.kind == MailingKind.DIGEST.value)
    stmt = stmt.order_by(digests.c.id.desc())
    if sent_only:
        stmt = stmt.where(digests.c.state == DigestState.SENT.value)
    return [
        DigestSummary(**{**row._mapping, "state": DigestState(row.state)})
        for row in conn.execute(stmt)
    ]


def delivery_counts(conn: Connection, digest_ids: Sequence[int]) -> dict[int, dict[str, int]]:
    """Per digest, how many deliveries are in each state."""
    counts: dict[int, dict[str, int]] = {i: {} for i in digest_ids}
    if not digest_ids:
        return counts
    rows = conn.execute(
        select(deliveries.c.digest_id, deliveries.c.state, func.count())
        .where(deliveries.c.digest_id.in_(digest_ids))
        .group_by(deliveries.c.digest_id, deliveries.c.state)
    )
    for digest_id, state, count in rows:
        counts[digest_id][state] = count
    return counts


def failure_reasons(conn: Connection, digest_id: int, *, limit: int = 10) -> list[tuple[str, int]]:
    """The most common reasons deliveries of a digest failed, with their counts."""
    rows = conn.execute(
        select(deliveries.c.last_error, func.count().label("n"))
        .where(deliveries.c.digest_id == digest_id, deliveries.c.state == "failed")
        .group_by(deliveries.c.last_error)
        .order_by(func.count().desc())
        .limit(limit)
    )
    return [(reason or "unknown", n) for reason, n in rows]
