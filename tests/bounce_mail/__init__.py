"""Messages as they arrive in a bounce mailbox, in the shapes real MTAs and ISPs write them.

The fixtures name deliveries of a made-up list (VERP addresses made with ``FIXTURE_SECRET``
for ``FIXTURE_BOUNCE``, Message-IDs, recipients). :func:`retarget` aims one at a delivery the
test really made, replacing exactly those clues and leaving the MTA's shape as it is.
"""

from __future__ import annotations

from pathlib import Path

from newsletter.bounces.classify import classify
from newsletter.bounces.verp import read_verp, verp_key

FIXTURES = Path(__file__).resolve().parent
FIXTURE_SECRET = "bounce-fixtures-secret-0123456789"
FIXTURE_BOUNCE = "bounces@news.example.org"


def fixture(name: str) -> bytes:
    """The raw bytes of ``tests/bounce_mail/<name>``."""
    return (FIXTURES / name).read_bytes()


def retarget(
    name: str,
    *,
    verp: str | None = None,
    recipient: str | None = None,
    message_id: str | None = None,
) -> bytes:
    """Fixture ``name`` about another delivery: each of its VERP addresses becomes ``verp``
    (or the plain bounce address, None), its failed recipients ``recipient`` and its enclosed
    Message-IDs ``message_id`` (both kept when None)."""
    raw = fixture(name)
    found = classify(raw)
    key = verp_key(FIXTURE_SECRET)
    for address in found.verp_candidates:
        if read_verp(address, FIXTURE_BOUNCE, key=key) is not None:
            raw = raw.replace(address.encode(), (verp or FIXTURE_BOUNCE).encode())
    for old in found.recipients if recipient is not None else ():
        raw = raw.replace(old.encode(), recipient.encode())
    for old in found.message_ids if message_id is not None else ():
        raw = raw.replace(old.encode(), message_id.encode())
    return raw
