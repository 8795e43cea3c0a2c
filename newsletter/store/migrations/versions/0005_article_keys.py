"""Article keys in the form today's key builder gives, so nothing already sent goes out again.

Revision ID: 0005
Revises: 0004

The first release keyed a Markdown file without a URL as ``file:<stem>`` (now ``md:<stem>``:
a scraped ``NNN_<id>.txt`` and a Markdown file no longer share one namespace) and a feed
entry by its bare id (now ``id:<feed URL>#<id>`` when the id is not a URI: two feeds may both
have an entry ``42``). Left as they were, those stored keys would not match what the sources
produce after the upgrade, and articles that already went out would be sent again. Both new
forms are derived from what each row stores (``origin`` is the file path or the feed URL).
Keys built from a content hash cannot be rewritten (the hashed text is not stored); only an
entry without id and link has one, and the same-URL rule does not apply to it.
"""

from __future__ import annotations

import hashlib
import json
import re

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

# Written out as they are today: a revision never changes with the code.
_URI = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*:\S")
_KEY_MAX_CHARS = 600

articles = sa.table(
    "articles",
    sa.column("id", sa.Integer),
    sa.column("key", sa.String),
    sa.column("origin", sa.Text),
    sa.column("payload", sa.Text),
)


def _bounded(key: str) -> str:
    if len(key) <= _KEY_MAX_CHARS:
        return key
    kind, _, value = key.partition(":")
    digest = hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()
    return f"{kind}:{value[:200]}…{digest}"


def new_key(key: str, origin: str) -> str | None:
    """Today's key for a first-release ``key`` stored with ``origin``; None when unchanged."""
    if key.startswith("file:") and origin.lower().endswith((".md", ".markdown")):
        return _bounded("md:" + key[len("file:") :])
    if key.startswith("id:") and origin.startswith(("http://", "https://")):
        guid = key[len("id:") :]
        if guid and not _URI.match(guid):
            return _bounded(f"id:{origin}#{guid}")
    return None


def upgrade() -> None:
    conn = op.get_bind()
    rows = conn.execute(
        sa.select(articles.c.id, articles.c.key, articles.c.origin, articles.c.payload).where(
            sa.or_(articles.c.key.like("file:%"), articles.c.key.like("id:%"))
        )
    ).all()
    taken = set(conn.execute(sa.select(articles.c.key)).scalars())
    for row_id, key, origin, payload in rows:
        replacement = new_key(key, origin or "")
        if replacement is None or replacement in taken:
            continue  # already in today's form, or an intermediate build stored both
        article = json.loads(payload)  # the stored Article carries its key too
        article["key"] = replacement
        conn.execute(
            sa.update(articles)
            .where(articles.c.id == row_id)
            .values(key=replacement, payload=json.dumps(article, ensure_ascii=False))
        )
        taken.add(replacement)
