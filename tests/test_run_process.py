"""``newsletter run`` as real processes against a real SMTP server on loopback.

The cron has a seconds field set to a few seconds after the test starts (in a zone that is
not UTC), so the schedule genuinely fires; if a process starts late, its start-up check sends
the same slot. Every wait polls with a deadline, and every process is killed in the end.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from aiosmtpd.smtp import Envelope
from sqlalchemy import select

from newsletter.app import Context
from newsletter.config import load_settings
from newsletter.schedule import slot_key
from newsletter.store import slots
from newsletter.store.schema import deliveries, digests
from newsletter.subscribers import add_subscriber
from tests.conftest import REPO, write_config
from tests.smtp_servers import RecordingHandler, SmtpTestServer

pytestmark = pytest.mark.both_stores  # see tests/conftest.py

ZONE = "America/New_York"
DEADLINE = 60.0


def _write_config(tmp_path: Path, store_url: str, port: int, fire: datetime, **smtp: int) -> Path:
    local = fire.astimezone(ZoneInfo(ZONE))
    return write_config(
        tmp_path / "newsletter.toml",
        store={"url": store_url},
        smtp={"port": port, "retry_base_seconds": 0.01, "retry_max_seconds": 0.05, **smtp},
        schedule={"cron": f"{local.second} {local.minute} {local.hour} * * *", "timezone": ZONE},
        logging={"level": "INFO"},
    )


def _subscribe(config: Path, emails: list[str]) -> None:
    ctx = Context.open(load_settings(config))
    try:
        for email in emails:
            add_subscriber(ctx.store, email, "", now=datetime.now(UTC))
    finally:
        ctx.close()


def _slot(config: Path, key: str) -> slots.SlotRun | None:
    ctx = Context.open(load_settings(config))
    try:
        with ctx.store.atomic() as conn:
            return slots.get(conn, key)
    finally:
        ctx.close()


@contextmanager
def _running(config: Path, logs: list[Path]) -> Iterator[list[subprocess.Popen[bytes]]]:
    """``newsletter run`` once per log file; whatever still runs at the end is killed."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("NEWSLETTER_")}
    env["PYTHONPATH"] = str(REPO)
    processes: list[subprocess.Popen[bytes]] = []
    try:
        for log_path in logs:
            with log_path.open("wb") as log_file:
                processes.append(
                    subprocess.Popen(
                        [sys.executable, "-m", "newsletter", "--config", str(config), "run"],
                        cwd=config.parent,
                        env=env,
                        stdout=log_file,
                        stderr=subprocess.STDOUT,
                    )
                )
        yield processes
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait(timeout=10)


def _wait_for(
    condition: Callable[[], bool], what: str, processes: list[subprocess.Popen[bytes]]
) -> None:
    deadline = time.monotonic() + DEADLINE
    while not condition():
        for process in processes:
            assert process.poll() is None, f"newsletter run exited early ({process.returncode})"
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def _terminate(processes: list[subprocess.Popen[bytes]]) -> list[int]:
    for process in processes:
        process.send_signal(signal.SIGTERM)
    return [process.wait(timeout=DEADLINE) for process in processes]


def test_two_run_processes_send_the_slot_once_and_stop_on_sigterm(tmp_path: Path, store_url: str):
    emails = ["ada@example.org", "bob@example.org", "cy@example.org"]
    fire = (datetime.now(UTC) + timedelta(seconds=5)).replace(microsecond=0)
    key = slot_key(fire)
    logs = [tmp_path / "run-1.log", tmp_path / "run-2.log"]
    with SmtpTestServer() as server:
        config = _write_config(tmp_path, store_url, server.port, fire)
        _subscribe(config, emails)
        with _running(config, logs) as processes:
            _wait_for(lambda: len(server.received) >= len(emails), "the digest", processes)
            _wait_for(
                lambda: (row := _slot(config, key)) is not None and row.done,
                f"slot {key} to be recorded",
                processes,
            )
            _wait_for(
                lambda: all(key in path.read_text(encoding="utf-8") for path in logs),
                "both processes to decide about the slot",
                processes,
            )
            codes = _terminate(processes)

    output = [path.read_text(encoding="utf-8") for path in logs]
    assert codes == [0, 0], "\n\n".join(output)
    assert sorted(server.handler.recipients()) == emails  # exactly one message each
    assert sum(f"slot {key}: sent digest" in text for text in output) == 1, output
    assert all("scheduler started" in text and "scheduler stopped" in text for text in output)
    ctx = Context.open(load_settings(config))
    try:
        with ctx.store.atomic() as conn:
            assert conn.execute(select(digests.c.slot)).scalars().all() == [key]
    finally:
        ctx.close()
    row = _slot(config, key)
    assert row is not None and row.outcome is not None
    assert row.outcome.startswith("sent digest 1 (")


def test_sigterm_mid_send_exits_0_and_a_restart_within_grace_finishes_the_digest(
    tmp_path: Path, store_url: str
):
    emails = [f"reader{i}@example.org" for i in range(6)]

    def slow(envelope: Envelope, attempt: int) -> str | None:
        time.sleep(0.3)  # a slow server, so SIGTERM lands while messages are in flight
        return None

    fire = (datetime.now(UTC) + timedelta(seconds=5)).replace(microsecond=0)
    key = slot_key(fire)
    with SmtpTestServer(RecordingHandler(data_reply=slow)) as server:
        config = _write_config(tmp_path, store_url, server.port, fire, connections=1, claim_batch=1)
        _subscribe(config, emails)
        first_log = tmp_path / "first.log"
        with _running(config, [first_log]) as processes:
            _wait_for(lambda: len(server.received) >= 1, "the first message", processes)
            [code] = _terminate(processes)
        first = first_log.read_text(encoding="utf-8")
        assert code == 0, first
        sent_before_restart = len(server.received)
        assert 1 <= sent_before_restart < len(emails), first
        row = _slot(config, key)
        assert row is not None and not row.done and row.outcome is not None
        assert row.outcome.startswith("interrupted: "), row.outcome

        second_log = tmp_path / "second.log"
        with _running(config, [second_log]) as processes:
            _wait_for(
                lambda: (row := _slot(config, key)) is not None and row.done,
                "the restart to finish the slot",
                processes,
            )
            [code] = _terminate(processes)
        second = second_log.read_text(encoding="utf-8")
        assert code == 0, second
        assert f"slot {key}" in second and "resuming unfinished digest 1" in second

    assert sorted(server.handler.recipients()) == emails  # nobody twice, nobody missed
    ctx = Context.open(load_settings(config))
    try:
        with ctx.store.atomic() as conn:
            states = conn.execute(select(deliveries.c.state)).scalars().all()
            assert conn.execute(select(digests.c.state)).scalars().all() == ["sent"]
    finally:
        ctx.close()
    assert states == ["sent"] * len(emails)
