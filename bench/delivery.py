"""Delivery throughput: the real engine vs raw smtplib, both into Postfix's smtp-sink.

    .venv/bin/python bench/delivery.py                      # 10,000 subscribers, 2 connections
    .venv/bin/python bench/delivery.py --large              # 100,000 subscribers
    .venv/bin/python bench/delivery.py --compare-rss        # 10,000 and 100,000, RSS side by side

One run starts ``smtp-sink`` on a free loopback port, then for each subscriber count:

1. **setup** (a subprocess): a temporary SQLite database, N subscribers imported through the
   library's CSV import, and generated articles sized so that one message is ``--size-kb``.
2. **engine** (a fresh subprocess, so its peak RSS is its own): ``app.send_now`` builds the
   digest and sends it through the real outbox engine, database state included. The rate is
   taken between the engine's first and last progress report (rendering excluded); peak RSS
   is ``ru_maxrss`` of that process.
3. **baseline** (a subprocess): the same number of pre-built messages of the same size over
   raw ``smtplib`` with the same number of persistent connections (one thread each), to the
   same sink.

It prints messages/second for both, the ratio ours/baseline and the engine's peak RSS.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import smtplib
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

SMTP_SINK = shutil.which("smtp-sink") or "/usr/sbin/smtp-sink"
ARTICLES = 10
WORDS = [
    *("council", "river", "market", "station", "library", "winter", "tram", "harbour"),
    *("bridge", "museum", "festival", "square", "budget", "school", "weather", "concert"),
    *("garden", "orchestra", "bakery", "cyclist", "mayor", "ferry", "lantern"),
]


# -- the sink ------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def start_sink(port: int) -> subprocess.Popen[bytes]:
    if not Path(SMTP_SINK).exists():
        sys.exit(f"smtp-sink not found ({SMTP_SINK}); install the Debian package 'postfix'")
    command = [SMTP_SINK, "-4", f"127.0.0.1:{port}", "256"]
    if os.geteuid() == 0:
        command[1:1] = ["-u", "nobody"]  # smtp-sink refuses to run as root without a user
    sink = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if sink.poll() is not None:
            err = sink.stderr.read().decode() if sink.stderr else ""
            sys.exit(f"smtp-sink exited at start: {err.strip()}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return sink
        except OSError:
            time.sleep(0.05)
    sink.kill()
    sys.exit("smtp-sink did not start listening within 10 s")


# -- phases (each runs in its own process) ----------------------------------------------------
def _config(workdir: Path, port: int, connections: int) -> Path:
    path = workdir / "bench.toml"
    path.write_text(
        f"""
[smtp]
host = "127.0.0.1"
port = {port}
connections = {connections}

[sources]
articles_dir = "articles"

[store]
url = "sqlite:///bench.db"

[digest]
max_articles = {ARTICLES}
max_age_days = 36500
max_html_bytes = 10000000

[web]
secret = "bench-secret-0123456789abcdef"
base_url = "https://news.example.org"

[logging]
level = "WARNING"
""",
        encoding="utf-8",
    )
    return path


def _write_articles(folder: Path, paragraphs: int) -> None:
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    day = datetime(2026, 11, 20, tzinfo=UTC)
    for n in range(ARTICLES):
        body = "\n\n".join(
            " ".join(WORDS[(n + p + i) % len(WORDS)] for i in range(60)).capitalize() + "."
            for p in range(paragraphs)
        )
        (folder / f"a{n:02d}.md").write_text(
            f"---\ntitle: Article {n} about the {WORDS[n]}\n"
            f"date: {(day + timedelta(hours=n)).isoformat()}\n---\n{body}\n",
            encoding="utf-8",
        )


def _message_size(config: Path) -> int:
    """Bytes of the message the next digest would be for one recipient (renders, stores nothing)."""
    from newsletter import app
    from newsletter.config import load_settings
    from newsletter.message import PreparedMessage
    from newsletter.models import Recipient

    ctx = app.Context.open(load_settings(config))
    try:
        upcoming, _ = app.preview_digest(ctx)
        assert upcoming is not None
        message = PreparedMessage(
            digest_id=1,
            subject=upcoming.rendered.subject,
            html_body=upcoming.rendered.html,
            text_body=upcoming.rendered.text,
            tokens=upcoming.tokens,
            settings=ctx.settings,
            unsubscribe_url=lambda r: ctx.unsubscribe_url(r.subscriber_id),
        )
        sample = Recipient(1, 1, "reader000001@example.org", "Reader 1")
        return len(message.personalize(sample, now=ctx.clock()).data)
    finally:
        ctx.close()


def phase_setup(workdir: Path, subscribers: int, size_kb: float, port: int, conns: int) -> dict:
    from newsletter.store import Store
    from newsletter.subscribers import import_csv

    config = _config(workdir, port, conns)
    paragraphs = 8
    for _ in range(4):  # the message size is close to linear in the paragraph count
        _write_articles(workdir / "articles", paragraphs)
        size = _message_size(config)
        if abs(size - size_kb * 1000) < size_kb * 1000 * 0.03:
            break
        paragraphs = max(1, round(paragraphs * size_kb * 1000 / size))
    csv_path = workdir / "subscribers.csv"
    with csv_path.open("w", encoding="utf-8") as out:
        out.write("email,name,city\n")
        for i in range(1, subscribers + 1):
            out.write(f"reader{i:06d}@example.org,Reader {i},City {i % 97}\n")
    store = Store.open(f"sqlite:///{workdir / 'bench.db'}")
    try:
        report = import_csv(store, csv_path, now=datetime.now(UTC))
    finally:
        store.close()
    csv_path.unlink()
    return {"imported": report.imported, "message_bytes": size}


class TimingProgress:
    """Records when the engine started and last reported, and how many it reported."""

    def __init__(self) -> None:
        self.started = self.last = 0.0
        self.done = 0

    def start(self, total: int, done: int) -> None:
        self.started = self.last = time.perf_counter()

    def advance(self, sent: int, failed: int) -> None:
        self.done += sent + failed
        self.last = time.perf_counter()

    def finish(self) -> None:
        pass


def _profile_all_threads() -> list[Any]:
    """cProfile in this thread and in every thread started from now on (the SMTP workers)."""
    import cProfile

    profilers = [cProfile.Profile()]

    def start_in_thread(*_: object) -> None:
        profiler = cProfile.Profile()
        profilers.append(profiler)
        profiler.enable()  # replaces this hook for the rest of the thread

    threading.setprofile(start_in_thread)
    profilers[0].enable()
    return profilers


def _dump_profiles(profilers: list[Any], target: Path) -> None:
    import pstats

    threading.setprofile(None)
    profilers[0].disable()
    stats = pstats.Stats(profilers[0])
    for profiler in profilers[1:]:
        stats.add(profiler)
    stats.dump_stats(target)


def phase_engine(workdir: Path, profile: Path | None) -> dict:
    from newsletter import app
    from newsletter.config import load_settings

    ctx = app.Context.open(load_settings(workdir / "bench.toml"))
    progress = TimingProgress()
    began = time.perf_counter()
    try:
        profilers = _profile_all_threads() if profile is not None else []
        summary = app.send_now(ctx, progress=progress)
        if profile is not None:
            _dump_profiles(profilers, profile)
    finally:
        ctx.close()
    total = time.perf_counter() - began
    report = summary.report
    assert report is not None, "no digest was sent"
    engine = progress.last - progress.started
    return {
        "sent": report.sent,
        "failed": report.failed,
        "engine_seconds": engine,
        "total_seconds": total,
        "rate": report.sent / engine if engine else 0.0,
        "peak_rss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
    }


def phase_baseline(workdir: Path, count: int, connections: int, port: int) -> dict:
    """Raw smtplib: ``count`` copies of one pre-built message, one thread per connection."""
    from newsletter import app
    from newsletter.app.send import prepare_message
    from newsletter.config import load_settings
    from newsletter.models import Recipient
    from newsletter.store import digests as digest_rows

    ctx = app.Context.open(load_settings(workdir / "bench.toml"))
    try:
        with ctx.store.atomic() as conn:
            stored = digest_rows.recent_digests(conn, limit=1)[0]
        message = prepare_message(ctx, stored)
        sample = Recipient(1, 1, "reader000001@example.org", "Reader 1", {"city": "City 1"})
        envelope = message.personalize(sample, now=ctx.clock())
    finally:
        ctx.close()
    shares = [count // connections + (i < count % connections) for i in range(connections)]
    errors: list[BaseException] = []

    def push(n: int) -> None:
        try:
            client = smtplib.SMTP("127.0.0.1", port, timeout=30)
            for _ in range(n):
                client.sendmail(envelope.sender, [envelope.recipient], envelope.data)
            client.quit()
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    threads = [threading.Thread(target=push, args=(n,)) for n in shares]
    began = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    seconds = time.perf_counter() - began
    if errors:
        raise errors[0]
    return {"sent": count, "seconds": seconds, "rate": count / seconds, "bytes": len(envelope.data)}


# -- orchestration ---------------------------------------------------------------------------
def _run_phase(args: list[str]) -> dict[str, Any]:
    result = subprocess.run(
        [sys.executable, __file__, "--phase", *args], capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        sys.exit(f"phase {args[0]} failed:\n{result.stderr}")
    data: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    return data


@dataclass
class Row:
    subscribers: int
    connections: int
    message_bytes: int
    engine_rate: float
    baseline_rate: float
    peak_rss_mb: float
    engine_seconds: float

    @property
    def ratio(self) -> float:
        return self.engine_rate / self.baseline_rate if self.baseline_rate else 0.0


def bench_one(
    subscribers: int, connections: int, size_kb: float, port: int, profile: Path | None
) -> Row:
    workdir = Path(tempfile.mkdtemp(prefix="newsletter-bench-"))
    try:
        common = [str(workdir), str(port), str(connections)]
        print(f"[{subscribers:,}] setting up {subscribers:,} subscribers ...", flush=True)
        _run_phase(["setup", *common, str(subscribers), str(size_kb)])
        print(f"[{subscribers:,}] sending through the engine ...", flush=True)
        extra = [str(profile)] if profile else []
        engine = _run_phase(["engine", *common, *extra])
        if engine["sent"] != subscribers:
            sys.exit(f"the engine sent {engine['sent']} of {subscribers} (failed: {engine})")
        print(f"[{subscribers:,}] baseline: raw smtplib ...", flush=True)
        baseline = _run_phase(["baseline", *common, str(subscribers)])
        return Row(
            subscribers=subscribers,
            connections=connections,
            message_bytes=baseline["bytes"],
            engine_rate=engine["rate"],
            baseline_rate=baseline["rate"],
            peak_rss_mb=engine["peak_rss_kb"] / 1024,
            engine_seconds=engine["engine_seconds"],
        )
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def print_table(rows: list[Row]) -> None:
    print()
    print(
        f"{'subscribers':>11}  {'conns':>5}  {'msg size':>9}  {'engine msg/s':>12}  "
        f"{'smtplib msg/s':>13}  {'ratio':>5}  {'peak RSS':>9}"
    )
    for r in rows:
        print(
            f"{r.subscribers:>11,}  {r.connections:>5}  {r.message_bytes / 1000:>6.1f} KB  "
            f"{r.engine_rate:>12,.0f}  {r.baseline_rate:>13,.0f}  {r.ratio:>5.2f}  "
            f"{r.peak_rss_mb:>6.1f} MB"
        )
    if len(rows) > 1:
        low, high = rows[0], rows[-1]
        print(
            f"\npeak RSS {high.subscribers:,} vs {low.subscribers:,} subscribers: "
            f"{high.peak_rss_mb - low.peak_rss_mb:+.1f} MB"
        )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else "")
    parser.add_argument("--subscribers", type=int, default=10_000, help="default 10,000")
    parser.add_argument("--large", action="store_true", help="100,000 subscribers")
    parser.add_argument(
        "--compare-rss", action="store_true", help="run 10,000 and 100,000 and compare peak RSS"
    )
    parser.add_argument("--connections", type=int, default=2)
    parser.add_argument("--size-kb", type=float, default=72.0, help="message size, default 72")
    parser.add_argument("--profile", type=Path, help="write a cProfile of the engine run here")
    parser.add_argument("--phase", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.phase:
        print(json.dumps(_phase(args.phase)))
        return

    sizes = [args.subscribers]
    if args.large:
        sizes = [100_000]
    if args.compare_rss:
        sizes = [10_000, 100_000]
    port = free_port()
    sink = start_sink(port)
    try:
        rows = [bench_one(n, args.connections, args.size_kb, port, args.profile) for n in sizes]
    finally:
        sink.terminate()
        try:
            sink.wait(timeout=5)
        except subprocess.TimeoutExpired:
            sink.kill()
    print_table(rows)


def _phase(spec: list[str]) -> dict[str, Any]:
    name, workdir, port, conns, *rest = spec
    folder = Path(workdir)
    if name == "setup":
        return phase_setup(folder, int(rest[0]), float(rest[1]), int(port), int(conns))
    if name == "engine":
        return phase_engine(folder, Path(rest[0]) if rest else None)
    if name == "baseline":
        return phase_baseline(folder, int(rest[0]), int(conns), int(port))
    raise SystemExit(f"unknown phase {name}")


if __name__ == "__main__":
    main()
