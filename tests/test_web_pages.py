"""The operator's pages over HTTP: preview (with live-reload fingerprint), archive, errors."""

from __future__ import annotations

import html
import os
import re
import shutil
import warnings
from collections.abc import Callable
from pathlib import Path

import pytest

from newsletter import app
from newsletter.app import Context
from newsletter.config import load_settings
from newsletter.message import fill_tokens
from newsletter.store import digests as digest_rows
from newsletter.subscribers import add_subscriber
from newsletter.web import create_app
from newsletter.web.preview import PREVIEW_VALUES, fingerprint
from tests.admin_login import cheap_passwords, operator_client
from tests.conftest import SEEDS, FrozenClock
from tests.smtp_servers import SmtpTestServer

with warnings.catch_warnings():  # starlette prefers httpx2; httpx is what is installed
    warnings.simplefilter("ignore", UserWarning)
    from starlette.testclient import TestClient

TOKEN = re.compile(r"NL[0-9a-f]{12}Q")
pytestmark = pytest.mark.usefixtures("cheap_passwords")  # the preview needs a login
__all__ = ["cheap_passwords"]


@pytest.fixture
def articles(tmp_path: Path) -> Path:
    folder = tmp_path / "articles"
    shutil.copytree(SEEDS, folder)
    return folder


@pytest.fixture
def ctx(make_context: Callable[..., Context], articles: Path) -> Context:
    return make_context(sources={"articles_dir": str(articles)})


@pytest.fixture
def client(ctx: Context) -> TestClient:
    """Logged in as an operator: the preview is for operators only."""
    return operator_client(ctx)


def srcdoc(page: str) -> str:
    found = re.search(r'srcdoc="([^"]*)"', page)
    assert found is not None, "no iframe srcdoc"
    return html.unescape(found.group(1))


def touch_later(path: Path) -> None:
    """Change a file's modification time visibly, whatever the file system's resolution."""
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 2_000_000_000))


# --- preview ---------------------------------------------------------------------------


def test_preview_shows_subject_preheader_size_text_and_the_email(ctx, client):
    upcoming, _ = app.preview_digest(ctx)
    assert upcoming is not None

    page = client.get("/preview")

    assert page.status_code == 200
    text = page.text
    assert html.escape(upcoming.rendered.subject) in text
    assert html.escape(upcoming.rendered.preheader) in text
    size_kb = len(upcoming.rendered.html.encode()) / 1000
    assert f"{size_kb:.1f} KB</strong>" in text and "of 102 KB" in text
    email = srcdoc(text)
    for article in upcoming.articles:
        assert article.title in html.unescape(email)
    assert "Hello Alex Reader," in email  # sample values, no tokens left
    assert not TOKEN.search(email) and not TOKEN.search(text)
    assert 'width="600"' in text
    text_part = re.search(r'<pre id="text-part">(.*?)</pre>', text, re.S)
    assert text_part is not None
    expected = fill_tokens(upcoming.rendered.text, upcoming.tokens, PREVIEW_VALUES, escape=False)
    assert html.unescape(text_part.group(1)) == expected


def test_preview_phone_view_is_375_wide(client):
    page = client.get("/preview?view=phone").text
    assert 'width="375"' in page
    assert 'data-view="phone" data-width="375" aria-pressed="true"' in page


def test_preview_marks_nothing(ctx, client):
    before, _ = app.preview_digest(ctx)
    client.get("/preview")
    client.get("/preview/email.html")
    after, _ = app.preview_digest(ctx)
    assert before is not None and after is not None
    assert [a.key for a in after.articles] == [a.key for a in before.articles]
    with ctx.store.atomic() as conn:
        assert digest_rows.known_keys(conn, [a.key for a in before.articles]) == set()


def test_preview_email_and_text_alone(client):
    email = client.get("/preview/email.html")
    text = client.get("/preview/email.txt")

    assert email.status_code == 200 and "<html" in email.text
    assert "sandbox" in email.headers["content-security-policy"]
    assert "script-src" not in email.headers["content-security-policy"]
    assert text.headers["content-type"].startswith("text/plain")
    assert "Hello Alex Reader," in text.text and not TOKEN.search(text.text)


def test_preview_with_nothing_new(make_context, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    client = operator_client(make_context(sources={"articles_dir": str(empty)}))

    page = client.get("/preview")

    assert page.status_code == 200 and "Nothing new to send" in page.text
    assert client.get("/preview/email.html").status_code == 404


def test_a_broken_template_shows_one_line_on_the_preview(make_context, articles, tmp_path):
    templates = tmp_path / "templates"
    templates.mkdir()
    (templates / "digest.html.j2").write_text("<p>{{ no_such_variable }}</p>")
    client = operator_client(make_context(digest={"templates_dir": str(templates)}))

    page = client.get("/preview")

    assert page.status_code == 200
    assert "Cannot build the digest:" in page.text
    assert "digest.html.j2, line 1: &#39;no_such_variable&#39; is undefined" in page.text


def test_fingerprint_changes_when_an_article_is_touched_or_added(ctx, client, articles):
    first = client.get("/preview/fingerprint").json()["fingerprint"]
    assert client.get("/preview/fingerprint").json()["fingerprint"] == first  # stable

    touch_later(next(articles.glob("*.txt")))
    touched = client.get("/preview/fingerprint").json()["fingerprint"]
    (articles / "new.md").write_text("---\ntitle: New\ndate: 2026-11-25\n---\nBody.\n")
    added = client.get("/preview/fingerprint").json()["fingerprint"]
    (articles / ".new.md.swp").write_text("editor noise")

    assert len({first, touched, added}) == 3
    assert client.get("/preview/fingerprint").json()["fingerprint"] == added


def test_fingerprint_follows_templates_and_the_config_file(tmp_path, articles):
    templates = tmp_path / "templates"
    templates.mkdir()
    (templates / "digest.txt.j2").write_text("{{ subject }}\n")
    config = tmp_path / "newsletter.toml"
    config.write_text(
        f'[sources]\narticles_dir = "{articles}"\n[digest]\ntemplates_dir = "{templates}"\n'
    )
    settings = load_settings(config)
    first = fingerprint(settings)

    touch_later(templates / "digest.txt.j2")
    second = fingerprint(settings)
    touch_later(config)
    third = fingerprint(settings)

    assert len({first, second, third}) == 3


def test_preview_reads_the_edited_config_again(tmp_path, articles, clock: FrozenClock):
    config = tmp_path / "newsletter.toml"

    def write(title: str) -> None:
        config.write_text(
            f'[newsletter]\ntitle = "{title}"\n[sources]\narticles_dir = "{articles}"\n'
            f'[digest]\nmax_age_days = 36500\n[store]\nurl = "sqlite:///{tmp_path / "n.db"}"\n'
            '[web]\nsecret = "a-test-secret-0123456789"\n'
        )

    write("First Title")
    ctx = Context.open(load_settings(config), clock=clock)
    client = operator_client(ctx)
    try:
        assert "First Title" in srcdoc(client.get("/preview").text)

        write("Second Title")
        touch_later(config)
        assert "Second Title" in srcdoc(client.get("/preview").text)

        config.write_text("[newsletter]\ntitle = 42\n")
        touch_later(config)
        broken = client.get("/preview")
        assert broken.status_code == 200 and "newsletter.title" in broken.text
        assert client.get("/preview/fingerprint").status_code == 200  # still polling
    finally:
        ctx.close()


# --- archive ---------------------------------------------------------------------------


def test_archive_lists_sent_digests_and_shows_each(
    make_context, smtp_server: SmtpTestServer, clock
):
    ctx = make_context(smtp={"port": smtp_server.port})
    client = TestClient(create_app(ctx))
    assert "No digest has been sent yet" in client.get("/archive").text
    add_subscriber(ctx.store, "ada@example.org", "Ada", now=clock())
    summary = app.send_now(ctx)
    assert summary.digest_id is not None and summary.subject is not None

    listing = client.get("/archive")
    page = client.get(f"/archive/{summary.digest_id}")
    alone = client.get(f"/archive/{summary.digest_id}/email.html")

    assert listing.status_code == 200
    assert f'href="/archive/{summary.digest_id}"' in listing.text
    assert html.escape(summary.subject) in listing.text
    assert page.status_code == 200 and html.escape(summary.subject) in page.text
    email = srcdoc(page.text)
    assert "Hello reader," in email  # neutral values; the unsubscribe link is the sign-up page
    assert 'href="https://news.example.org/subscribe"' in email
    assert "ada@example.org" not in email and not TOKEN.search(email)
    assert alone.status_code == 200 and "Hello reader," in alone.text
    assert "sandbox" in alone.headers["content-security-policy"]


def test_unknown_or_unsent_digest_is_404(client):
    response = client.get("/archive/999")
    assert response.status_code == 404
    assert "There is no sent digest #999" in response.text


# --- the rest --------------------------------------------------------------------------


def test_index_and_404_pages(client):
    assert client.get("/").status_code == 200
    missing = client.get("/no/such/page")
    assert missing.status_code == 404 and "Not found" in missing.text


def test_pages_allow_only_their_own_scripts(client):
    page = client.get("/preview")
    policy = page.headers["content-security-policy"]
    nonce = re.search(r"'nonce-([^']+)'", policy)
    assert nonce is not None
    assert f'<script nonce="{nonce.group(1)}">' in page.text
    assert "frame-ancestors 'self'" in policy
    assert page.headers["x-content-type-options"] == "nosniff"
    other = client.get("/preview").headers["content-security-policy"]
    assert other != policy  # a fresh nonce per response


def test_a_broken_page_template_is_one_line_500(make_context, tmp_path):
    templates = tmp_path / "templates"
    (templates / "web").mkdir(parents=True)
    (templates / "web" / "index.html.j2").write_text("{% if %}")
    client = TestClient(create_app(make_context(digest={"templates_dir": str(templates)})))

    response = client.get("/")

    assert response.status_code == 500
    assert "web/index.html.j2" in response.text
    assert "Traceback" not in response.text
