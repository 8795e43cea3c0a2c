"""Digest templates may print subscriber data, never test or change it (rendered once for all)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from newsletter.config import load_settings
from newsletter.errors import TemplateError
from newsletter.models import Article
from newsletter.personalization import TokenSet
from newsletter.render import HTML_TEMPLATE, make_template_environment, render_digest
from newsletter.template_check import check_personal_fields
from tests.conftest import Run

NOW = datetime(2026, 11, 26, 7, 0, tzinfo=UTC)


def check(folder: Path, source: str, **partials: str) -> None:
    (folder / HTML_TEMPLATE).write_text(source, encoding="utf-8")
    for name, text in partials.items():
        (folder / name.replace("__", ".")).write_text(text, encoding="utf-8")
    check_personal_fields(make_template_environment(folder), HTML_TEMPLATE)


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (
            '{% if subscriber.attrs.city == "Paris" %}Hi{% endif %}',
            "subscriber.attrs.city is used in a comparison",
        ),
        ("{% if subscriber.name %}Hi{% endif %}", "subscriber.name is used in {% if %}"),
        ("{{ subscriber.name|upper }}", "subscriber.name is used in the filter |upper"),
        ("{{ subscriber.email|urlencode }}", "subscriber.email is used in the filter |urlencode"),
        ('{{ subscriber.name|default("friend") }}', "is used in the filter |default"),
        ('{{ subscriber.name or "friend" }}', "subscriber.name is used in a boolean expression"),
        ('{{ "a" if unsubscribe_url else "b" }}', "unsubscribe_url is used in an inline if"),
        ("{{ subscriber.attrs.city is defined }}", "is used in a test (is ...)"),
        ("{% for tag in subscriber.attrs.tags %}{{ tag }}{% endfor %}", "is used in {% for %}"),
        ("{% set who = subscriber.name %}{{ who }}", "subscriber.name is used in {% set %}"),
        ("{% filter upper %}{{ subscriber.name }}{% endfilter %}", "is used in {% filter upper %}"),
        ("{% set footer %}{{ subscriber.email }}{% endset %}{{ footer }}", "is used in {% set %}"),
        ("{{ subscriber.attrs.get('city', 'x') }}", "is used in a call"),
        ("{{ subscriber.attrs }}", "subscriber.attrs is not a subscriber field"),
        ("{{ subscriber }}", "subscriber is not a subscriber field"),
        ("{{ subscriber.name[:3] }}", "is not a subscriber field"),
        ("{{ subscriber.name|length }}", "is used in the filter |length"),
    ],
)
def test_control_flow_or_changes_on_subscriber_data_are_refused(
    tmp_path: Path, line: str, expected: str
) -> None:
    with pytest.raises(TemplateError) as caught:
        check(tmp_path, f"<p>Digest</p>\n<p>Hello</p>\n{line}\n")
    message = str(caught.value)
    assert message.startswith(f"{tmp_path / HTML_TEMPLATE}, line 3: ")
    assert expected in message
    assert "rendered once for all subscribers" in message and "\n" not in message


@pytest.mark.parametrize(
    "line",
    [
        "{{ subscriber.name }}",
        "{{ subscriber.name|e }}",
        "{{ subscriber.email|escape|safe }}",
        '{{ subscriber.attrs["city"] }} {{ subscriber.attrs.city }}',
        '<a href="{{ unsubscribe_url }}">x</a> {{ subscriber.unsubscribe_url }}',
        '{{ "Hello " ~ subscriber.name ~ "!" }}',
        '{{ ("Sent to %s"|format(subscriber.email))|wrap(indent="  ") }}',
        "{% for a in articles %}{% if a.url %}{{ subscriber.name }}{% endif %}{% endfor %}",
        "{% filter wrap %}{{ subscriber.name }}{% endfilter %}",
        "{% macro footer() %}{{ subscriber.email }}{% endmacro %}{{ footer() }}",
    ],
)
def test_printing_subscriber_data_is_allowed(tmp_path: Path, line: str) -> None:
    check(tmp_path, f"<p>Digest</p>\n{line}\n")


def test_an_included_partial_is_checked_and_named(tmp_path: Path) -> None:
    with pytest.raises(TemplateError) as caught:
        check(
            tmp_path,
            '<p>Digest</p>\n{% include "_footer.html.j2" %}\n',
            _footer__html__j2='<p>Bye</p>\n\n{% if subscriber.attrs.plan == "pro" %}x{% endif %}',
        )
    assert str(caught.value).startswith(f"{tmp_path / '_footer.html.j2'}, line 3: ")
    assert "subscriber.attrs.plan is used in a comparison" in str(caught.value)


def test_the_builtin_templates_pass(tmp_path: Path) -> None:
    env = make_template_environment(None)
    check_personal_fields(env, "digest.html.j2")
    check_personal_fields(env, "digest.txt.j2")


def test_a_refused_template_stops_the_render_before_anything_is_built(tmp_path: Path) -> None:
    (tmp_path / "digest.txt.j2").write_text(
        "Hello\n{% if subscriber.attrs.city == 'Paris' %}Bonjour{% endif %}\n", encoding="utf-8"
    )
    config = load_settings(None, digest={"templates_dir": tmp_path})
    article = Article(key="a", title="T", published=NOW, summary="S")
    with pytest.raises(TemplateError, match=r"digest\.txt\.j2, line 2: subscriber\.attrs\.city"):
        render_digest([article], settings=config, now=NOW, tokens=TokenSet())


def test_the_cli_says_it_in_one_line(
    env: Path, run: Run, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    templates = tmp_path / "templates"
    templates.mkdir()
    (templates / HTML_TEMPLATE).write_text(
        "<p>{% if subscriber.name == 'Ada' %}Hi Ada{% endif %}</p>\n", encoding="utf-8"
    )
    monkeypatch.setenv("NEWSLETTER_DIGEST__TEMPLATES_DIR", str(templates))

    code, _, err = run("send-now", "--dry-run")

    assert code != 0
    lines = err.strip().splitlines()
    assert (
        len(lines) == 1
        and "digest.html.j2, line 1: subscriber.name is used in a comparison" in lines[0]
    )
