"""A large import: 100,000 rows streamed in batches, with progress and a rejection report.

It takes about 5 seconds (most of it is email-validator checking each address).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest

from newsletter import app
from newsletter.store import subscribers as rows
from newsletter.subscribers import IMPORT_BATCH, import_csv

ROWS = 100_000


@pytest.fixture(scope="module")
def big_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """100,000 data rows; every 1,000th is broken, and the last one repeats the first."""
    path = tmp_path_factory.mktemp("import") / "big.csv"
    with path.open("w", encoding="utf-8", newline="") as handle:
        handle.write("email,name,city,plan\n")
        for i in range(ROWS - 1):
            email = f"broken-{i}" if i % 1000 == 999 else f"user{i}@example.org"
            handle.write(f"{email},User {i},City {i % 97},plan-{i % 3}\n")
        handle.write("USER0@example.org,Repeat,Nowhere,none\n")
    return path


def test_100k_rows_stream_in_batches_with_progress(
    make_context: Callable[..., app.Context], big_csv: Path, clock
):
    ctx = make_context()
    seen: list[int] = []
    started = time.perf_counter()

    report = import_csv(ctx.store, big_csv, now=clock(), on_progress=seen.append)

    elapsed = time.perf_counter() - started
    broken = (ROWS - 1) // 1000
    assert report.lines == ROWS
    assert report.imported == ROWS - 1 - broken
    assert len(report.rejected) == broken + 1
    assert report.rejected[0][0] == 1001  # line numbers count the header
    assert "'broken-999' is not a valid email address" in report.rejected[0][1]
    assert report.rejected[-1] == (ROWS + 1, "user0@example.org repeats line 2")
    assert len(seen) >= report.imported // IMPORT_BATCH  # about once per batch
    assert seen == sorted(seen) and seen[-1] == ROWS
    with ctx.store.atomic() as conn:
        assert rows.count_by_state(conn) == {"active": report.imported}
        last = rows.get_by_email(conn, f"user{ROWS - 2}@example.org")
    assert last is not None and last.attrs == {"city": "City 88", "plan": "plan-2"}
    assert elapsed < 60, f"100k rows took {elapsed:.1f}s"
