"""A private PostgreSQL server for tests: ``initdb`` + ``pg_ctl`` in a temporary directory.

The cluster listens on a free loopback port and a socket directory of its own, trusts local
connections, and is stopped at the end of the session. Nothing is installed as a service.
PostgreSQL refuses to run as root, so under root (as in CI) the cluster runs as the
``postgres`` system user the Debian package creates.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from newsletter.inbox import free_port

START_TIMEOUT_SECONDS = 60


def find_bin_dir() -> Path | None:
    """The newest installed PostgreSQL's bin folder (Debian keeps them out of PATH)."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=_major_version)
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).resolve().parent if initdb else None


def _major_version(path: str) -> int:
    part = Path(path).parts[-3]
    return int(part) if part.isdigit() else 0


class PostgresCluster:
    """A running cluster; ``url(name)`` gives a SQLAlchemy URL for database ``name``."""

    def __init__(self, bin_dir: Path, root: Path, port: int) -> None:
        self.bin_dir = bin_dir
        self.root = root
        self.port = port
        self.data = root / "data"
        self.socket_dir = root / "sock"
        self._counter = 0
        self._admin: Any = None  # a psycopg connection, made on first use

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{database}"

    def create_database(self, prefix: str = "t", *, template: str | None = None) -> str:
        """A new database, empty or a copy of ``template`` (which nobody may be connected to);
        returns its name."""
        self._counter += 1
        name = f"{prefix}_{os.getpid()}_{self._counter}"
        copy = f' TEMPLATE "{template}" STRATEGY FILE_COPY' if template else ""
        self.execute(f'CREATE DATABASE "{name}"{copy}')
        return name

    def drop_database(self, name: str) -> None:
        self.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def execute(self, sql: str) -> None:
        """One statement outside a transaction (CREATE/DROP DATABASE), on a kept connection:
        faster than starting ``psql`` for each of the many databases tests make."""
        if self._admin is None:
            import psycopg  # the dev extra has it; only tests that use PostgreSQL need it

            self._admin = psycopg.connect(
                host="127.0.0.1",
                port=self.port,
                user="postgres",
                dbname="postgres",
                autocommit=True,
            )
        self._admin.execute(sql.encode())

    def close(self) -> None:
        if self._admin is not None:
            self._admin.close()
            self._admin = None

    def psql(self, sql: str, database: str = "postgres") -> str:
        """Run SQL with the server's own ``psql``; returns its output."""
        return self._psql(database, "-At", "-c", sql)

    def load_sql_file(self, path: Path, database: str) -> None:
        """Load a plain SQL dump (``pg_dump`` output) into ``database``."""
        self._psql(database, "-f", str(path))

    def _psql(self, database: str, *args: str) -> str:
        command = [str(self.bin_dir / "psql"), "-h", "127.0.0.1", "-p", str(self.port)]
        command += ["-U", "postgres", "-d", database, "-v", "ON_ERROR_STOP=1", "-q", *args]
        result = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
        if result.returncode != 0:
            raise RuntimeError(f"psql failed: {result.stderr.strip()}")
        return result.stdout


def _as_server_user() -> list[str]:
    """PostgreSQL will not run as root: run its tools as ``postgres`` when we are root."""
    if os.geteuid() != 0:
        return []
    try:
        pwd.getpwnam("postgres")
    except KeyError as exc:
        raise RuntimeError("running as root and there is no 'postgres' user to run as") from exc
    return ["runuser", "-u", "postgres", "--"]


@contextmanager
def running_cluster(bin_dir: Path | None = None) -> Iterator[PostgresCluster]:
    """Start a throwaway cluster; stop it and remove its files afterwards."""
    bin_dir = bin_dir or find_bin_dir()
    if bin_dir is None:
        raise RuntimeError(
            "PostgreSQL is not installed: apt-get install postgresql (.ci/run does this)"
        )
    root = Path(tempfile.mkdtemp(prefix="newsletter-pg-"))
    prefix = _as_server_user()
    if prefix:
        shutil.chown(root, user="postgres")
    cluster = PostgresCluster(bin_dir, root, free_port())
    initdb = [*prefix, str(bin_dir / "initdb"), "-D", str(cluster.data), "-A", "trust"]
    subprocess.run(
        [*initdb, "-U", "postgres", "-E", "UTF8", "--locale=C.UTF-8"],
        check=True,
        capture_output=True,
        timeout=START_TIMEOUT_SECONDS,
    )
    cluster.socket_dir.mkdir()
    if prefix:
        shutil.chown(cluster.socket_dir, user="postgres")
    options = (
        f"-p {cluster.port} -h 127.0.0.1 -k {cluster.socket_dir} "
        "-c fsync=off -c synchronous_commit=off -c full_page_writes=off "
        "-c max_connections=200"
    )
    pg_ctl = [*prefix, str(bin_dir / "pg_ctl"), "-D", str(cluster.data)]
    subprocess.run(
        [*pg_ctl, "-o", options, "-l", str(root / "server.log"), "-w", "start"],
        check=True,
        capture_output=True,
        timeout=START_TIMEOUT_SECONDS + 10,
    )
    try:
        yield cluster
    finally:
        cluster.close()
        subprocess.run(
            [*pg_ctl, "-m", "immediate", "stop"],
            capture_output=True,
            timeout=START_TIMEOUT_SECONDS,
            check=False,
        )
        shutil.rmtree(root, ignore_errors=True)
