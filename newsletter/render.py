"""Render stage: articles -> one RenderedDigest (subject, preheader, inlined HTML, text).

The digest is rendered and CSS-inlined once per digest, with the personal fields as tokens
(see :mod:`newsletter.personalization`); the message stage substitutes them per recipient.
It always fits ``[digest] max_html_bytes`` (see :mod:`newsletter.render_fit`). Article content
is untrusted: templates autoescape it, and only ``body_html`` (sanitized upstream) is inserted
as markup.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from datetime import datetime
from functools import lru_cache
from pathlib import Path
from types import TracebackType
from typing import Any, NamedTuple

import cssutils
import jinja2
from jinja2.sandbox import SandboxedEnvironment
from premailer import Premailer

from newsletter import render_body, render_text
from newsletter.config import Settings
from newsletter.errors import TemplateError
from newsletter.models import Article, RenderedDigest, SizeStep
from newsletter.personalization import TokenSet, worst_case_size
from newsletter.render_fit import Draft, Renderers, fit_digest
from newsletter.template_check import check_personal_fields

# cssutils logs a line per element for the mso-* properties Outlook needs. Silence it once,
# here: Premailer(cssutils_logging_handler=...) would add a handler to cssutils' global
# logger on every call, so we pass neither that nor a level.
cssutils.log.setLevel(logging.CRITICAL)

HTML_TEMPLATE = "digest.html.j2"
TEXT_TEMPLATE = "digest.txt.j2"
SUBJECT_MAX_CHARS = 150
PREHEADER_MAX_CHARS = 140
PREHEADER_MIN_CHARS = 90
_PREHEADER_SEPARATOR = " · "
_TEXT_EXTENSIONS = ("txt", "text", "txt.j2", "text.j2")
_HTML_EXTENSIONS = ("html", "htm", "xml", "html.j2", "htm.j2", "xml.j2")


class Section(NamedTuple):
    """One per-source group of articles, for ``settings.digest.sections_by_source``."""

    name: str
    articles: tuple[Article, ...]


def builtin_templates_dir() -> Path:
    """The templates shipped with the package (wheel) or the repository's ``templates/``."""
    packaged = Path(__file__).parent / "templates"
    if packaged.is_dir():
        return packaged
    return Path(__file__).parent.parent / "templates"


def make_template_environment(
    templates_dir: Path | None, *, autoescape: bool = True
) -> jinja2.Environment:
    """A Jinja environment that looks in ``templates_dir`` first, then the built-in templates.

    A user overrides any template by putting one with the same name in ``templates_dir``.
    Undefined variables are errors. With ``autoescape`` on, every template is escaped except
    ``*.txt`` / ``*.txt.j2`` ones.
    """
    loaders: list[jinja2.BaseLoader] = []
    if templates_dir is not None:
        if not templates_dir.is_dir():
            raise TemplateError(
                f"{templates_dir}: templates folder not found (check digest.templates_dir)"
            )
        loaders.append(jinja2.FileSystemLoader(templates_dir))
    loaders.append(jinja2.FileSystemLoader(builtin_templates_dir()))
    env = jinja2.Environment(
        loader=jinja2.ChoiceLoader(loaders),
        undefined=jinja2.StrictUndefined,
        autoescape=jinja2.select_autoescape(
            enabled_extensions=_HTML_EXTENSIONS,
            disabled_extensions=_TEXT_EXTENSIONS,
            default_for_string=True,
            default=True,
        )
        if autoescape
        else False,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["wrap"] = render_text.wrap
    env.filters["html_to_text"] = render_text.html_to_text
    env.filters["long_date"] = render_text.long_date
    env.filters["fit_body"] = render_body.fit_body
    env.tests["web_url"] = render_text.is_web_url
    return env


def render_digest(
    articles: Sequence[Article],
    *,
    settings: Settings,
    now: datetime,
    tokens: TokenSet,
    view_in_browser_url: str | None = None,
) -> RenderedDigest:
    """Render the digest once: subject, preheader, CSS-inlined HTML and the text part.

    ``view_in_browser_url`` (the digest's public archive page, the same for everyone) is
    printed as it is, so the size guarantee counts it exactly; None leaves the link out.

    Each part stays under ``settings.digest.max_html_bytes`` with the longest personal values a
    subscriber can have: articles are reduced to summaries, then the oldest to headlines, then
    the oldest are left out (``carried_over``); ``article_keys`` are the ones it carries.
    """
    env = _digest_environment(settings.digest.templates_dir)
    for name in (HTML_TEMPLATE, TEXT_TEMPLATE):
        try:
            check_personal_fields(env, name)
        except jinja2.TemplateError as exc:
            raise _template_error(exc, label=name, env=env) from exc
    base_url = settings.web.base_url
    headings: dict[tuple[str, ...], tuple[str, str]] = {}

    def subject_and_preheader(shown: Sequence[Article]) -> tuple[str, str]:
        key = tuple(article.key for article in shown)
        if key not in headings:
            subject = render_subject(
                settings.digest.subject, title=settings.newsletter.title, date=now, articles=shown
            )
            headings[key] = (subject, build_preheader(shown))
        return headings[key]

    def context(draft: Draft) -> dict[str, Any]:
        subject, preheader = subject_and_preheader(draft.originals)
        sections = group_by_source(draft.articles) if settings.digest.sections_by_source else None
        return {
            "newsletter": settings.newsletter,
            "articles": draft.articles,
            "sections": sections,
            "date": now,
            "subject": subject,
            "preheader": preheader,
            "subscriber": tokens.placeholder(),
            "unsubscribe_url": tokens.token("unsubscribe_url"),
            "web_base_url": base_url,
            "view_in_browser_url": view_in_browser_url,
            "summaries_only": draft.summaries_only,
        }

    renderers = Renderers(
        html=lambda draft: _render_template(env, HTML_TEMPLATE, context(draft)),
        inline=_inline_template_css,
        text=lambda draft: render_text.tidy(_render_template(env, TEXT_TEMPLATE, context(draft))),
        html_size=lambda html: worst_case_size(html, tokens, base_url=base_url, escaped=True),
        text_size=lambda text: worst_case_size(text, tokens, base_url=base_url, escaped=False),
    )
    fitted = fit_digest(articles, renderers, limit=settings.digest.max_html_bytes)
    subject, preheader = subject_and_preheader(fitted.draft.originals)
    return RenderedDigest(
        subject=subject,
        preheader=preheader,
        html=fitted.html,
        text=fitted.text,
        article_keys=tuple(article.key for article in fitted.draft.originals),
        summaries_only=fitted.step is not SizeStep.FULL,
        size_step=fitted.step,
        carried_over=fitted.carried_over,
    )


def render_subject(
    source: str, *, title: str, date: datetime, articles: Sequence[Article] = ()
) -> str:
    """Render the ``digest.subject`` setting as one header-safe line of text."""
    env = SandboxedEnvironment(undefined=jinja2.StrictUndefined, autoescape=False)
    try:
        raw = env.from_string(source).render(title=title, date=date, articles=articles)
    except Exception as exc:  # a user template can fail in any way; report it in one line
        raise _template_error(exc, label="digest.subject setting") from exc
    return render_text.truncate(render_text.collapse(raw), SUBJECT_MAX_CHARS)


def build_preheader(articles: Sequence[Article]) -> str:
    """Inbox preview text: the first titles, joined, about 100-140 characters."""
    titles = [t for t in (render_text.collapse(a.title) for a in articles) if t]
    if not titles:
        return ""
    preheader = render_text.truncate(titles[0], PREHEADER_MAX_CHARS)
    for title in titles[1:]:
        candidate = preheader + _PREHEADER_SEPARATOR + title
        if len(candidate) > PREHEADER_MAX_CHARS:
            break
        preheader = candidate
    summary = render_text.collapse(articles[0].summary)
    if len(titles) == 1 and summary and len(preheader) < PREHEADER_MIN_CHARS:
        preheader = render_text.truncate(f"{preheader} — {summary}", PREHEADER_MAX_CHARS)
    return preheader


def group_by_source(articles: Sequence[Article]) -> list[Section]:
    """Articles grouped by ``source`` (else ``origin``), in order of first appearance."""
    groups: dict[str, list[Article]] = {}
    for article in articles:
        name = render_text.collapse(article.source or article.origin) or "Other"
        groups.setdefault(name, []).append(article)
    return [Section(name, tuple(items)) for name, items in groups.items()]


def inline_css(html: str) -> str:
    """Copy the ``<style>`` rules into style attributes; the block stays for media queries."""
    premailer = Premailer(
        html,
        strip_important=False,  # keep the !important that lets media queries beat inline styles
        keep_style_tags=True,
        remove_classes=False,
        disable_validation=True,
        allow_network=False,
        cache_css_parsing=True,
    )
    return str(premailer.transform(pretty_print=False))


def _digest_environment(templates_dir: Path | None) -> jinja2.Environment:
    """The environment for ``templates_dir``, kept: Jinja recompiles a template when its file
    changes, so only unchanged templates are reused."""
    if templates_dir is not None and not templates_dir.is_dir():
        return make_template_environment(templates_dir)  # raises the one-line error
    return _cached_environment(templates_dir)


@lru_cache(maxsize=8)
def _cached_environment(templates_dir: Path | None) -> jinja2.Environment:
    return make_template_environment(templates_dir)


def _inline_template_css(html: str) -> str:
    try:
        return inline_css(html)
    except Exception as exc:  # lxml / cssutils errors on a user's template
        problem = render_text.collapse(f"{type(exc).__name__}: {exc}")
        raise TemplateError(f"{HTML_TEMPLATE}: cannot inline its CSS: {problem}") from exc


def _render_template(env: jinja2.Environment, name: str, context: Mapping[str, Any]) -> str:
    try:
        return env.get_template(name).render(context)
    except Exception as exc:  # a user template can fail in any way; report it in one line
        raise _template_error(exc, label=name, env=env) from exc


def _template_error(
    exc: BaseException, *, label: str, env: jinja2.Environment | None = None
) -> TemplateError:
    """One line: where (template file and line, when known) and what went wrong."""
    where = label
    filename, line = _location(exc)
    if filename and filename != "<template>":
        where = filename
    if line:
        where += f", line {line}"
    if isinstance(exc, jinja2.TemplateNotFound):
        searched = ", ".join(_search_path(env)) or "the template folders"
        problem = f"template {exc.name!r} not found in {searched}"
    elif isinstance(exc, jinja2.TemplateError):
        problem = exc.message or type(exc).__name__
    else:
        problem = f"{type(exc).__name__}: {exc}"
    return TemplateError(f"{where}: {render_text.collapse(problem)}")


def _location(exc: BaseException) -> tuple[str | None, int | None]:
    """Template file and line of an error, from Jinja's syntax error or rewritten traceback."""
    if isinstance(exc, jinja2.TemplateSyntaxError):
        return exc.filename or exc.name, exc.lineno
    found: tuple[str | None, int | None] = (None, None)
    tb: TracebackType | None = exc.__traceback__
    while tb is not None:  # Jinja rewrites frames to point at the template source
        if "__jinja_exception__" in tb.tb_frame.f_globals:
            found = (tb.tb_frame.f_code.co_filename, tb.tb_lineno)
        tb = tb.tb_next
    return found


def _search_path(env: jinja2.Environment | None) -> list[str]:
    loader = env.loader if env else None
    loaders = loader.loaders if isinstance(loader, jinja2.ChoiceLoader) else [loader]
    paths: list[str] = []
    for item in loaders:
        if isinstance(item, jinja2.FileSystemLoader):
            paths.extend(str(p) for p in item.searchpath)
    return paths
