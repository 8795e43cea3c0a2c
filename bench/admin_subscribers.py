"""The admin subscriber list at scale: how long a page takes at 100,000+ subscribers.

    .venv/bin/python bench/admin_subscribers.py                    # 100,000 subscribers
    .venv/bin/python bench/admin_subscribers.py --subscribers 500000 --runs 20

One temporary SQLite database with N subscribers (a tenth unsubscribed, a few with a rare
name), then each request as the browser sends it, through the whole web app (Starlette's
TestClient, logged in, HTML rendered): the first page, a page deep in the list reached by its
keyset cursor, a state filter, searches with many, one and no matches. For comparison, the
same deep page fetched with OFFSET, which the app does not do: its cost grows with the depth.
Figures are the median and the slowest of ``--runs`` runs, in milliseconds.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import warnings
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import select

from newsletter.app import Context, users
from newsletter.config import load_settings
from newsletter.models import SubscriberState
from newsletter.store import subscribers as subscriber_rows
from newsletter.store.schema import subscribers
from newsletter.web import create_app

with warnings.catch_warnings():  # starlette prefers httpx2; httpx is what is installed
    warnings.simplefilter("ignore", UserWarning)
    from starlette.testclient import TestClient

PASSWORD = "benchmark password 1234"
BATCH = 5000
PAGE = 50


def fill(ctx: Context, count: int) -> None:
    """``count`` subscribers: every tenth unsubscribed, every 10,000th named "Rare Name"."""
    now = datetime(2026, 11, 28, tzinfo=UTC)
    for start in range(0, count, BATCH):
        batch = range(start, min(start + BATCH, count))
        with ctx.store.atomic() as conn:
            for state in (SubscriberState.ACTIVE, SubscriberState.UNSUBSCRIBED):
                rows = [
                    (
                        f"reader{n:07d}@example.org",
                        "Rare Name" if n % 10_000 == 5 else f"Reader {n}",
                        {},
                    )
                    for n in batch
                    if (n % 10 == 9) == (state is SubscriberState.UNSUBSCRIBED)
                ]
                subscriber_rows.insert_many(conn, rows, state=state, now=now)


def timed(action: Callable[[], object], runs: int) -> tuple[float, float]:
    """Median and slowest milliseconds of ``runs`` calls, after one warm-up call."""
    action()
    samples = []
    for _ in range(runs):
        started = time.perf_counter()
        action()
        samples.append((time.perf_counter() - started) * 1000)
    return statistics.median(samples), max(samples)


def logged_in(ctx: Context) -> TestClient:
    users.add_user(ctx, "bench", PASSWORD)
    client = TestClient(create_app(ctx))
    form = client.get("/login").text
    token = form.split('name="csrf_token" value="', 1)[1].split('"', 1)[0]
    answer = client.post(
        "/login",
        data={"username": "bench", "password": PASSWORD, "csrf_token": token},
        follow_redirects=False,
    )
    assert answer.status_code == 303, answer.text
    return client


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--subscribers", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=10)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as folder:
        url = f"sqlite:///{Path(folder) / 'bench.db'}"
        settings = load_settings(None, store={"url": url}, logging={"level": "WARNING"})
        ctx = Context.open(settings)
        started = time.perf_counter()
        fill(ctx, args.subscribers)
        print(f"{args.subscribers:,} subscribers made in {time.perf_counter() - started:.1f} s")
        client = logged_in(ctx)
        middle = args.subscribers // 2  # a cursor as deep as page (N / 2) / 50 of the list
        depth = (args.subscribers - middle) // PAGE

        def get(path: str) -> Callable[[], object]:
            def request() -> object:
                answer = client.get(path)
                assert answer.status_code == 200, answer.status_code
                return answer

            return request

        def offset_page() -> object:
            with ctx.store.atomic() as conn:
                stmt = select(subscribers).order_by(subscribers.c.id.desc())
                return conn.execute(stmt.offset(depth * PAGE).limit(PAGE)).all()

        def keyset_page() -> object:
            with ctx.store.atomic() as conn:
                stmt = select(subscribers).where(subscribers.c.id < middle)
                return conn.execute(stmt.order_by(subscribers.c.id.desc()).limit(PAGE)).all()

        cases = {
            "first page": get("/admin/subscribers"),
            f"page ~{depth:,} (keyset cursor)": get(f"/admin/subscribers?before={middle}"),
            "unsubscribed only": get("/admin/subscribers?state=unsubscribed"),
            "unsubscribed, deep": get(f"/admin/subscribers?state=unsubscribed&before={middle}"),
            "search, many matches": get("/admin/subscribers?q=reader009"),
            "search, a rare name": get("/admin/subscribers?q=rare+name"),
            "search, no match": get("/admin/subscribers?q=nobody-at-all"),
            f"store only: page ~{depth:,} by keyset": keyset_page,
            f"store only: page ~{depth:,} by OFFSET": offset_page,
        }
        width = max(len(label) for label in cases)
        print(f"{'request':<{width}}  median ms  slowest ms  ({args.runs} runs)")
        for label, action in cases.items():
            median, slowest = timed(action, args.runs)
            print(f"{label:<{width}}  {median:9.1f}  {slowest:10.1f}")
        ctx.close()


if __name__ == "__main__":
    main()
