"""Importing files as people have them: large, broken, from Excel, with odd columns.

The 100,000-row import takes a few seconds (most of it is email-validator checking each
address).
"""

from __future__ import annotations

import csv
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import pytest

from newsletter import app
from newsletter.errors import UsageError
from newsletter.store import subscribers as rows
from newsletter.subscribers.csv_io import MAX_LINE_BYTES
from newsletter.subscribers.importing import IMPORT_BATCH, MAX_REPORTED, import_csv
from tests.conftest import Run

pytestmark = pytest.mark.both_stores  # see tests/conftest.py

ROWS = 100_000


@pytest.fixture
def ctx(make_context: Callable[..., app.Context]) -> app.Context:
    return make_context()


def emails(ctx: app.Context) -> set[str]:
    with ctx.store.atomic() as conn:
        return {row.email for row in rows.iter_all(conn)}


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


def test_100k_rows_stream_in_batches_with_progress(ctx, big_csv: Path, clock):
    seen: list[int] = []
    every: list[tuple[int, str]] = []

    report = import_csv(
        ctx.store,
        big_csv,
        now=clock(),
        on_progress=seen.append,
        on_reject=lambda line, reason: every.append((line, reason)),
    )

    broken = (ROWS - 1) // 1000
    assert report.lines == ROWS
    assert report.imported == ROWS - 1 - broken
    assert report.rejected_count == len(every) == broken + 1
    assert report.rejected == every[:MAX_REPORTED]  # the first few, in line order
    assert every == sorted(every)
    assert every[0][0] == 1001  # line numbers count the header
    assert "'broken-999' is not a valid email address" in every[0][1]
    assert every[-1] == (ROWS + 1, "user0@example.org repeats line 2")
    assert len(seen) >= report.imported // IMPORT_BATCH  # about once per batch
    assert seen == sorted(seen) and seen[-1] == ROWS
    with ctx.store.atomic() as conn:
        assert rows.count_by_state(conn) == {"active": report.imported}
        last = rows.get_by_email(conn, f"user{ROWS - 2}@example.org")
    assert last is not None and last.attrs == {"city": "City 88", "plan": "plan-2"}


def bad_rows_file(path: Path, count: int) -> Path:
    """``count`` rows with the wrong number of columns: cheap to reject, many of them."""
    with path.open("w", encoding="utf-8", newline="") as handle:
        handle.write("email,name\n")
        handle.writelines(f"user{i}@example.org,Name {i},extra\n" for i in range(count))
    return path


def peak_import_memory(ctx: app.Context, path: Path, clock) -> tuple[int, int]:
    tracemalloc.start()
    try:
        report = import_csv(ctx.store, path, now=clock())
        return tracemalloc.get_traced_memory()[1], report.rejected_count
    finally:
        tracemalloc.stop()


def test_memory_stays_flat_however_many_rows_are_rejected(make_context, tmp_path, clock):
    small = bad_rows_file(tmp_path / "small.csv", 5_000)
    large = bad_rows_file(tmp_path / "large.csv", 50_000)

    small_peak, small_count = peak_import_memory(make_context(), small, clock)
    large_peak, large_count = peak_import_memory(make_context(), large, clock)

    assert (small_count, large_count) == (5_000, 50_000)
    assert large_peak < small_peak + 512 * 1024, (small_peak, large_peak)


def test_the_terminal_gets_the_first_rejections_and_a_count(run: Run, env: Path):
    source = bad_rows_file(env / "bad.csv", 5_000)

    code, out, err = run("subscribers", "import", str(source))

    lines = err.splitlines()
    assert code == 0 and out == "imported 0 subscribers, rejected 5000 rows\n"
    assert len(lines) == MAX_REPORTED + 1
    assert lines[0] == f"{source}:2: expected 2 columns, found 3"
    assert lines[-1] == (
        f"{source}: ... and {5000 - MAX_REPORTED} more rejected rows (list them all with --report)"
    )

    code, out, err = run("subscribers", "import", str(source), "--report", "all.csv")

    assert err == "" and out.endswith("rejected 5000 rows (listed in all.csv)\n")
    with (env / "all.csv").open(encoding="utf-8") as handle:
        listed = list(csv.reader(handle))
    assert len(listed) == 5001 and listed[-1] == ["5001", "expected 2 columns, found 3"]


def write_bytes(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def test_an_oversized_field_is_one_rejected_row_and_line_numbers_stay_right(ctx, tmp_path, clock):
    huge = b"x" * (csv.field_size_limit() + 10)
    source = write_bytes(
        tmp_path / "in.csv",
        b"email,name\nada@example.org,Ada\nbig@example.org," + huge + b"\n"
        b"bob@example.org,Bob\nbroken,Broken\n",
    )

    report = import_csv(ctx.store, source, now=clock())

    assert report.rejected[0][0] == 3
    assert report.rejected[0][1].startswith(
        f"a field is longer than {csv.field_size_limit()} characters"
    )
    assert report.rejected[1][0] == 5
    assert emails(ctx) == {"ada@example.org", "bob@example.org"}


def test_a_line_longer_than_the_limit_is_skipped_whole(ctx, tmp_path, clock):
    source = write_bytes(
        tmp_path / "in.csv",
        b"email,name\nada@example.org,Ada\n"
        + b"evil@example.org,"
        + b"y" * MAX_LINE_BYTES
        + b",\nbob@example.org,Bob\nbroken,X\n",
    )

    report = import_csv(ctx.store, source, now=clock())

    assert report.rejected[0] == (3, "line longer than 1024 KiB, skipped")
    assert report.rejected[1][0] == 5
    assert emails(ctx) == {"ada@example.org", "bob@example.org"}


def test_a_quoted_field_across_lines_is_reported_at_its_first_line(ctx, tmp_path, clock):
    source = write_bytes(
        tmp_path / "in.csv",
        b'email,name\nada@example.org,"Ada\nLovelace"\nbroken,"Two\nLines"\n'
        b"bob@example.org,Bob\nbroken2,X\n",
    )

    report = import_csv(ctx.store, source, now=clock())

    assert [line for line, _ in report.rejected] == [4, 7]
    assert emails(ctx) == {"ada@example.org", "bob@example.org"}
    with ctx.store.atomic() as conn:
        ada = rows.get_by_email(conn, "ada@example.org")
    assert ada is not None and ada.name == "Ada Lovelace"  # one line, for headers


def test_an_excel_sep_line_is_honoured(ctx, tmp_path, clock):
    source = write_bytes(
        tmp_path / "in.csv",
        "sep=;\r\nEmail;Name;Town\r\nzoe@example.com;Zoë;Zürich\r\nbroken;X;Y\r\n".encode(),
    )

    report = import_csv(ctx.store, source, now=clock())

    assert report.imported == 1 and report.rejected[0][0] == 4  # the sep line is line 1
    with ctx.store.atomic() as conn:
        zoe = rows.get_by_email(conn, "zoe@example.com")
    assert zoe is not None and zoe.name == "Zoë" and zoe.attrs == {"town": "Zürich"}


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("email;name\nada@example.org;Ada\n", "the columns look separated by semicolons"),
        ("Email\tName\nada@example.org\tAda\n", "the columns look separated by tabs"),
        ("First Name,first_name,email\nA,B,a@example.org\n", "columns 'First Name' and "),
        ("email,Email\na@example.org,b@example.org\n", "the header has two 'email' columns"),
        ("sep=,\n", "the file is empty"),
        ("\ufeff", "the file is empty"),
    ],
)
def test_header_problems_are_one_line_with_a_hint(ctx, tmp_path, clock, content, message):
    source = tmp_path / "in.csv"
    source.write_text(content, encoding="utf-8")
    with pytest.raises(UsageError, match=message) as caught:
        import_csv(ctx.store, source, now=clock())
    assert "\n" not in str(caught.value)
    assert emails(ctx) == set()


def test_colliding_columns_say_which_attribute(ctx, tmp_path, clock):
    source = tmp_path / "in.csv"
    source.write_text("email,First Name,first_name\na@example.org,A,B\n", encoding="utf-8")
    with pytest.raises(UsageError) as caught:
        import_csv(ctx.store, source, now=clock())
    assert str(caught.value) == (
        f"{source}: line 1: columns 'First Name' and 'first_name' would both be the attribute "
        "'first_name'; rename or remove one"
    )


def test_a_column_without_a_usable_name_is_noted_not_dropped_silently(run: Run, env: Path):
    source = env / "in.csv"
    source.write_text("email,Город\nada@example.org,Москва\n", encoding="utf-8")

    code, out, err = run("subscribers", "import", str(source))

    assert code == 0 and out == "imported 1 subscribers, rejected 0 rows\n"
    assert err.startswith(f"warning: {source}: column 'Город' ignored: attribute names need")


def test_a_bom_and_crlf_line_ends_are_fine(ctx, tmp_path, clock):
    source = write_bytes(tmp_path / "in.csv", b"\xef\xbb\xbfemail,name\r\nada@example.org,Ada\r\n")
    report = import_csv(ctx.store, source, now=clock())
    assert (report.imported, report.rejected) == (1, [])
