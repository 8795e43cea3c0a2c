"""Shared fixtures: a real SMTP server, settings pointed at tmp files, a controllable clock.

The store: tests get a SQLite file in ``tmp_path``. A module marked ``both_stores`` runs each
of its tests that uses the store (through ``store_url``: ``env``, ``make_settings``,
``make_context``) twice, on SQLite and on a fresh database of a real PostgreSQL server: one
private cluster per session (``tests/postgres.py``), and per test a copy of a template
database already at the latest schema revision.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from newsletter.app import Context
from newsletter.cli import cli
from newsletter.cli.base import run_guarded
from newsletter.config import Settings, load_settings
from newsletter.store import Store
from tests.postgres import PostgresCluster, running_cluster
from tests.smtp_servers import SmtpTestServer

REPO = Path(__file__).resolve().parent.parent
SEEDS = REPO / "seeds"


STORE_BACKENDS = ("sqlite", "postgresql")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "both_stores: its tests that use the store run on SQLite and on PostgreSQL",
    )
    config.addinivalue_line(
        "markers",
        "sqlite_store: runs on SQLite only, even in a both_stores module (about SQLite "
        "itself, or slow and its store part covered on PostgreSQL by another test)",
    )


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    marked = metafunc.definition.get_closest_marker
    if (
        "store_url" in metafunc.fixturenames
        and marked("both_stores")
        and not marked("sqlite_store")
    ):
        metafunc.parametrize("store_url", STORE_BACKENDS, indirect=True)


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresCluster]:
    """One private PostgreSQL cluster for the whole session, started on first use."""
    with running_cluster() as cluster:
        yield cluster


@pytest.fixture(scope="session")
def postgres_template(postgres: PostgresCluster) -> str:
    """A database at the latest schema revision, copied for each test (faster than creating
    the tables every time); nobody connects to it after this."""
    name = postgres.create_database("template")
    Store.open(postgres.url(name)).close()
    return name


@pytest.fixture
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The test's database: ``tmp_path/newsletter.db``, or a fresh PostgreSQL database when
    the test is parametrized with ``postgresql`` (see ``both_stores``)."""
    backend = getattr(request, "param", "sqlite")
    if backend == "sqlite":
        yield f"sqlite:///{tmp_path / 'newsletter.db'}"
        return
    cluster: PostgresCluster = request.getfixturevalue("postgres")
    name = cluster.create_database(template=request.getfixturevalue("postgres_template"))
    yield cluster.url(name)
    cluster.drop_database(name)


class FrozenClock:
    """A clock tests move by hand."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock(datetime(2026, 11, 26, 7, 0, tzinfo=UTC))


@pytest.fixture
def smtp_server() -> Iterator[SmtpTestServer]:
    with SmtpTestServer() as server:
        yield server


SettingsFactory = Callable[..., Settings]
Run = Callable[..., tuple[int, str, str]]


def clear_newsletter_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests never see the developer's own NEWSLETTER_* settings."""
    for name in list(os.environ):
        if name.startswith("NEWSLETTER_"):
            monkeypatch.delenv(name)


@pytest.fixture
def run(capsys: pytest.CaptureFixture[str]) -> Run:
    """Run the CLI as the console script does: ``code, stdout, stderr = run("send-now")``."""

    def invoke(*args: str) -> tuple[int, str, str]:
        code = run_guarded(cli, list(args))
        out, err = capsys.readouterr()
        return code, out, err

    return invoke


@pytest.fixture
def env(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    smtp_server: SmtpTestServer,
    store_url: str,
) -> Path:
    """Point every CLI setting at tmp_path (a SQLite ``news.db``, or the test's PostgreSQL
    database) and the test SMTP server, through the environment."""
    clear_newsletter_env(monkeypatch)
    monkeypatch.chdir(tmp_path)
    if store_url.startswith("sqlite"):
        store_url = f"sqlite:///{tmp_path / 'news.db'}"
    monkeypatch.setenv("NEWSLETTER_STORE__URL", store_url)
    monkeypatch.setenv("NEWSLETTER_SMTP__PORT", str(smtp_server.port))
    monkeypatch.setenv("NEWSLETTER_SOURCES__ARTICLES_DIR", str(SEEDS))
    monkeypatch.setenv("NEWSLETTER_DIGEST__MAX_AGE_DAYS", "36500")
    monkeypatch.setenv("NEWSLETTER_WEB__SECRET", "cli-test-secret-0123456789")
    monkeypatch.setenv("NEWSLETTER_WEB__BASE_URL", "https://news.example.org")
    monkeypatch.setenv("NEWSLETTER_LOGGING__LEVEL", "WARNING")
    return tmp_path


def _merge(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


@pytest.fixture
def make_settings(monkeypatch: pytest.MonkeyPatch, store_url: str) -> SettingsFactory:
    """``make_settings(smtp={"port": 1025}, digest={...})``: defaults pointed at tmp_path
    (or the test's PostgreSQL database)."""
    clear_newsletter_env(monkeypatch)

    def factory(**overrides: Any) -> Settings:
        base = {
            "store": {"url": store_url},
            "sources": {"articles_dir": str(SEEDS)},
            "digest": {"max_age_days": 36500},
            "web": {
                "secret": "test-secret-0123456789abcdef",
                "base_url": "https://news.example.org",
            },
            "smtp": {"retry_base_seconds": 0.01, "retry_max_seconds": 0.05},
        }
        return load_settings(None, **_merge(base, overrides))

    return factory


TEST_SECRET = "test-secret-0123456789abcdef"


def _toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    return json.dumps(str(value))  # a JSON string is a valid TOML basic string


def write_config(path: Path, **sections: dict[str, Any]) -> Path:
    """A config file for subprocess tests: the test defaults (a SQLite file beside ``path``,
    the seeds, a long age window, a web secret) overridden by ``sections``."""
    base: dict[str, Any] = {
        "store": {"url": f"sqlite:///{path.parent / 'newsletter.db'}"},
        "sources": {"articles_dir": str(SEEDS)},
        "digest": {"max_age_days": 36500},
        "web": {"secret": TEST_SECRET},
        "logging": {"level": "WARNING"},
    }
    merged = _merge(base, sections)
    lines = []
    for name, values in merged.items():
        lines.append(f"[{name}]")
        lines.extend(f"{key} = {_toml_value(value)}" for key, value in values.items())
        lines.append("")
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


@pytest.fixture
def make_context(
    make_settings: SettingsFactory, clock: FrozenClock
) -> Iterator[Callable[..., Context]]:
    opened: list[Context] = []

    def factory(**overrides: Any) -> Context:
        ctx = Context.open(make_settings(**overrides), clock=clock)
        opened.append(ctx)
        return ctx

    yield factory
    for ctx in opened:
        ctx.close()
