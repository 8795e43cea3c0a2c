"""``newsletter subscribers ...`` as a user sees it: output, exit codes, one-line errors."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pytest

from tests.conftest import Run
from tests.smtp_servers import SmtpTestServer

pytestmark = pytest.mark.both_stores  # see tests/conftest.py


def test_add_list_remove(run: Run, env: Path):
    assert run("subscribers", "add", "Ada@Example.org", "--name", "Ada") == (
        0,
        "added ada@example.org (active)\n",
        "",
    )
    run("subscribers", "add", "zoe@example.com", "--name", "Zoë")

    assert run("subscribers", "remove", "ZOE@example.com")[1] == "unsubscribed zoe@example.com\n"
    assert run("subscribers", "remove", "zoe@example.com")[1] == (
        "zoe@example.com was already unsubscribed\n"
    )
    code, out, err = run("subscribers", "list")
    assert code == 0
    assert out == "ada@example.org\tactive\tAda\nzoe@example.com\tunsubscribed\tZoë\n"
    assert err == "2 subscribers\n"
    assert run("subscribers", "list", "--state", "active")[1] == "ada@example.org\tactive\tAda\n"


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (("add", "not-an-address"), 1, "error: 'not-an-address' is not a valid email address"),
        (("remove", "nobody@example.org"), 1, "error: nobody@example.org is not on the list"),
        (("import", "missing.csv"), 2, "error: missing.csv: file not found"),
    ],
)
def test_errors_are_one_line(run: Run, env: Path, args, code, message):
    result, _, err = run("subscribers", *args)
    assert result == code
    assert err.startswith(message) and err.count("\n") == 1
    assert "Traceback" not in err


def test_readding_an_unsubscribed_address_says_what_to_do(run: Run, env: Path):
    run("subscribers", "add", "ada@example.org")
    run("subscribers", "remove", "ada@example.org")
    code, _, err = run("subscribers", "add", "ada@example.org")
    assert code == 1
    assert "use --double-opt-in so they confirm themselves" in err


def test_add_with_double_opt_in_sends_the_confirmation(
    run: Run, env: Path, smtp_server: SmtpTestServer
):
    code, out, _ = run("subscribers", "add", "ada@example.org", "--double-opt-in")

    assert code == 0
    assert out == "added ada@example.org (pending); confirmation email sent\n"
    [message] = smtp_server.messages()
    assert message["Subject"] == "Please confirm your subscription to The Daily Digest"


def test_import_reports_rows_and_can_write_the_report(run: Run, env: Path):
    source = env / "list.csv"
    source.write_text("email,name,city\nada@example.org,Ada,London\nbroken,B,C\nzoe@example.com\n")

    code, out, err = run("subscribers", "import", str(source))

    assert code == 0
    assert out == "imported 1 subscribers, rejected 2 rows\n"
    assert err.splitlines()[0].startswith(f"{source}:3: 'broken' is not a valid email address")
    assert err.splitlines()[1] == f"{source}:4: expected 3 columns, found 1"

    code, out, err = run("subscribers", "import", str(source), "--report", "rejected.csv")

    assert out == "imported 0 subscribers, rejected 3 rows (listed in rejected.csv)\n"
    assert err == ""
    report = list(csv.reader((env / "rejected.csv").open(encoding="utf-8")))
    assert report[0] == ["line", "reason"]
    assert report[1] == ["2", "ada@example.org is already on the list (active)"]


def test_import_with_double_opt_in_mails_each(run: Run, env: Path, smtp_server: SmtpTestServer):
    source = env / "list.csv"
    source.write_text("email\nada@example.org\nzoe@example.com\n")

    code, out, _ = run("subscribers", "import", str(source), "--double-opt-in")

    assert code == 0
    assert out == "imported 2 subscribers, rejected 0 rows\nsent 2 confirmation emails\n"
    assert sorted(smtp_server.handler.recipients()) == ["ada@example.org", "zoe@example.com"]


def test_export_then_import_elsewhere(run: Run, env: Path, monkeypatch: pytest.MonkeyPatch):
    run("subscribers", "add", "ada@example.org", "--name", "Ada")
    run("subscribers", "add", "gone@example.org")
    run("subscribers", "remove", "gone@example.org")

    code, out, err = run("subscribers", "export")

    assert code == 0 and err == "exported 2 subscribers\n"
    exported = list(csv.DictReader(io.StringIO(out)))
    assert [(r["email"], r["state"]) for r in exported] == [
        ("ada@example.org", "active"),
        ("gone@example.org", "unsubscribed"),
    ]
    assert run("subscribers", "export", "-o", "list.csv")[0] == 0
    monkeypatch.setenv("NEWSLETTER_STORE__URL", f"sqlite:///{env / 'other.db'}")
    code, out, _ = run("subscribers", "import", "list.csv")
    assert out == (
        "imported 1 subscribers, 1 kept as unsubscribed/bounced, rejected 0 rows; "
        "an export: states and dates kept\n"
    )


@pytest.mark.sqlite_store  # a read-only SQLite file
def test_a_read_only_database_says_so_with_its_path(
    run: Run, env: Path, monkeypatch: pytest.MonkeyPatch
):
    run("subscribers", "add", "ada@example.org")
    database = env / "news.db"
    monkeypatch.setenv("NEWSLETTER_STORE__URL", f"sqlite:///file:{database}?mode=ro&uri=true")

    assert run("subscribers", "list")[1] == "ada@example.org\tactive\t\n"  # reading works
    code, _, err = run("subscribers", "add", "bob@example.org")

    assert code == 1 and err.count("\n") == 1
    assert err.startswith(f"error: database {database}: attempt to write a readonly database")
    assert err.endswith(" (check that the file and its folder are writable by this user)\n")
