"""Workers sharing a digest: deliveries per second with 1, 2 and 4 ``newsletter worker``
processes on PostgreSQL, next to one worker on SQLite, all into Postfix's smtp-sink.

    .venv/bin/python bench/workers.py                    # 5,000 subscribers, 4 connections
    .venv/bin/python bench/workers.py --subscribers 20000 --workers 1 2 4 8

One run starts ``smtp-sink`` on a free loopback port and a private PostgreSQL cluster (the
test suite's, ``tests/postgres.py``). For each setting it makes a fresh database with N
subscribers, queues the digest of ``seeds/`` (``send-now --queue``, in this process), then
starts the workers (``newsletter worker --once``, real processes) and waits for them to exit.
The rate is N over the span between the first and the last ``sent_at`` the workers recorded
(process start-up excluded). ``[smtp] connections`` and ``max_per_second`` are ceilings for
all workers together (README, "Scaling out"): with C connections, each of k workers gets
C // k of them, so more workers spread the CPU work (rendering each message, DKIM) over more
processes, and help only as far as there are cores for them and the server takes more.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from delivery import free_port, start_sink  # bench/delivery.py: the same smtp-sink

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

TIMEOUT = 600.0  # seconds any one setting may take


def _config(folder: Path, url: str, port: int, connections: int, level: str = "WARNING") -> Path:
    path = folder / "bench.toml"
    path.write_text(
        f"""
[store]
url = "{url}"

[sources]
articles_dir = "{REPO / "seeds"}"

[digest]
max_age_days = 36500

[smtp]
host = "127.0.0.1"
port = {port}
connections = {connections}

[web]
secret = "bench-secret-0123456789abcdef"
base_url = "https://news.example.org"

[logging]
level = "{level}"
""",
        encoding="utf-8",
    )
    return path


def _queue(config: Path, subscribers: int) -> None:
    """N active subscribers and the digest of the seeds, queued for the workers."""
    from newsletter import app
    from newsletter.config import load_settings
    from newsletter.models import SubscriberState
    from newsletter.store import subscribers as subscriber_rows

    ctx = app.Context.open(load_settings(config))
    try:
        with ctx.store.atomic() as conn:
            subscriber_rows.insert_many(
                conn,
                [(f"reader{i:06d}@example.org", f"Reader {i}", {}) for i in range(subscribers)],
                state=SubscriberState.ACTIVE,
                now=ctx.clock(),
            )
        summary = app.send_now(ctx, queue=True)
        assert summary.queued == subscribers, summary
    finally:
        ctx.close()


def _sent_span(config: Path) -> tuple[int, float]:
    """How many deliveries were sent, and the seconds between the first and last ``sent_at``."""
    from sqlalchemy import func, select

    from newsletter import app
    from newsletter.config import load_settings
    from newsletter.store.schema import deliveries

    ctx = app.Context.open(load_settings(config))
    try:
        with ctx.store.atomic() as conn:
            sent, first, last = conn.execute(
                select(
                    func.count(), func.min(deliveries.c.sent_at), func.max(deliveries.c.sent_at)
                ).where(deliveries.c.state == "sent")
            ).one()
    finally:
        ctx.close()
    return int(sent), (last - first).total_seconds() if sent else 0.0


def run_workers(config: Path, workers: int) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NEWSLETTER_")}
    env["PYTHONPATH"] = str(REPO)
    command = [sys.executable, "-m", "newsletter", "--config", str(config), "worker", "--once"]
    children = [subprocess.Popen(command, env=env) for _ in range(workers)]
    try:
        codes = [child.wait(timeout=TIMEOUT) for child in children]
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()
    if any(codes):
        sys.exit(f"a worker failed: exit codes {codes}")


def measure(url: str, port: int, workers: int, args: argparse.Namespace) -> float:
    with tempfile.TemporaryDirectory(prefix="bench-workers-") as tmp:
        config = _config(Path(tmp), url, port, args.connections)
        _queue(config, args.subscribers)
        run_workers(config, workers)
        sent, span = _sent_span(config)
    if sent != args.subscribers:
        sys.exit(f"{sent} of {args.subscribers} were sent")
    return sent / span if span > 0 else float("inf")


@contextmanager
def postgres_databases() -> Iterator[Iterator[str]]:
    from tests.postgres import running_cluster

    with running_cluster() as cluster:

        def fresh() -> Iterator[str]:
            while True:
                yield cluster.url(cluster.create_database("bench"))

        yield fresh()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--subscribers", type=int, default=5000)
    parser.add_argument("--connections", type=int, default=4, help="[smtp] connections, shared")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
    args = parser.parse_args()
    port = free_port()
    sink = start_sink(port)
    try:
        with tempfile.TemporaryDirectory(prefix="bench-sqlite-") as tmp:
            sqlite_rate = measure(f"sqlite:///{tmp}/bench.db", port, 1, args)
        rates = {}
        with postgres_databases() as databases:
            for count in args.workers:
                rates[count] = measure(next(databases), port, count, args)
    finally:
        sink.terminate()
        sink.wait(timeout=10)
    print(
        f"{args.subscribers} deliveries, [smtp] connections = {args.connections} shared by all, "
        f"{os.cpu_count()} cores"
    )
    print(f"  SQLite,     1 worker : {sqlite_rate:8.0f} msg/s")
    for count, rate in rates.items():
        plural = "" if count == 1 else "s"
        print(
            f"  PostgreSQL, {count} worker{plural}{' ' * (1 - len(plural))}: {rate:8.0f} msg/s"
            f"  ({rate / sqlite_rate:.2f}x SQLite)"
        )


if __name__ == "__main__":
    started = time.monotonic()
    main()
    print(f"  ({time.monotonic() - started:.0f} s in all)")
