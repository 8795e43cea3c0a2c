"""The store: articles seen, subscribers, digests and one delivery row per recipient per digest.

SQLAlchemy Core over SQLite by default (any SQLAlchemy URL, e.g. PostgreSQL, should work).
Functions take a ``Connection`` so callers decide the transaction boundaries with
``Store.atomic()``; every state change that matters is committed before and after the side
effect it records.
"""

from newsletter.store.database import Store

__all__ = ["Store"]
