"""Parse Markdown article files with YAML front matter.

::

    ---
    title: Night trams return to the river line   # required
    date: 2026-11-21 08:30:00+01:00              # required; a date or datetime, naive means UTC
    url: https://example.org/night-trams         # optional, http/https only
    summary: One or two sentences.               # optional, derived from the body otherwise
    tags: [transit, city]                        # optional, a list or "transit, city"
    ---
    The body, in CommonMark.

Article content is untrusted: raw HTML is escaped, not passed through, and markdown-it's
``validateLink`` drops ``javascript:``, ``vbscript:``, ``file:`` and non-image ``data:`` links.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import yaml
from markdown_it import MarkdownIt
from markdown_it.token import Token

from newsletter.errors import ArticleError
from newsletter.sources.base import Draft, Identity
from newsletter.sources.sanitize import sanitize_html
from newsletter.text import clip, collapse, is_http_url

# The "commonmark" preset enables raw HTML by default: switch it off explicitly.
_MARKDOWN = MarkdownIt("commonmark", {"html": False})
_YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_FENCE = "---"
# Builds the error for a front matter key: fail(key, reason), with the key's line number.
_Fail = Callable[[str, str], ArticleError]
_DATE_HINT = "use a date like 2026-11-21 or a datetime like 2026-11-21T08:30:00+01:00"


@dataclass(frozen=True)
class MarkdownReader:
    """The reader for ``.md`` files: Markdown with YAML front matter."""

    extensions: tuple[str, ...] = (".md",)
    description: str = "Markdown with front matter"

    def read(self, text: str, path: Path) -> Draft:
        """A Draft from the text of a Markdown file; ``ArticleError`` if it is unusable."""
        return parse_markdown(text, path)


def parse_markdown(text: str, path: Path) -> Draft:
    """A Draft from the text of a ``.md`` file; raise ArticleError if unusable."""
    if not text.strip():
        raise ArticleError(f"{path}: file is empty; expected '---' front matter (title, date)")
    lines = text.split("\n")
    if lines[0].rstrip() != _FENCE:
        raise ArticleError(
            f"{path}: line 1: expected '---' to open the front matter (title and date are "
            f"required), got {clip(lines[0])!r}"
        )
    close = next((n for n in range(1, len(lines)) if lines[n].rstrip() == _FENCE), None)
    if close is None:
        raise ArticleError(
            f"{path}: line 1: front matter opened with '---' is never closed; "
            "add a '---' line after the last key"
        )
    fields, key_lines = _load_front_matter("\n".join(lines[1:close]), close, path)

    def fail(key: str, reason: str) -> ArticleError:
        where = f"line {key_lines[key]}: " if key in key_lines else f"lines 1-{close + 1}: "
        return ArticleError(f"{path}: {where}{reason}")

    title = _text_field(fields, "title", fail)
    if not title:
        raise fail("title", "front matter needs a non-empty 'title' (add 'title: <headline>')")
    published = _date_field(fields.get("date"), fail)
    url = _url_field(fields.get("url"), fail)
    tags = _tags_field(fields.get("tags"), fail)

    body = "\n".join(lines[close + 1 :])
    tokens = _MARKDOWN.parse(body)
    if not tokens:
        raise ArticleError(
            f"{path}: no article text after the front matter (line {close + 1}); "
            "add the body below the closing '---'"
        )
    return Draft(
        identity=Identity(url=url or "", file_id=path.stem, file_kind="md"),
        published=published,
        origin=str(path),
        title=title,
        summary=_text_field(fields, "summary", fail),
        lead=_first_paragraph_text(tokens),
        # The same email-safe subset as feed content: headings mapped, images capped,
        # relative links resolved against the article's URL (or dropped without one).
        body_html=sanitize_html(
            _MARKDOWN.renderer.render(tokens, _MARKDOWN.options, {}), base_url=url or ""
        ),
        url=url,
        tags=tags,
    )


def _load_front_matter(
    source: str, close: int, path: Path
) -> tuple[dict[str, Any], dict[str, int]]:
    """The front matter as a dict, and the file line number of each top-level key."""
    loader = _YAML_LOADER(source)
    try:
        node = loader.get_single_node()
        if node is None:
            raise ArticleError(
                f"{path}: lines 1-{close + 1}: front matter is empty; add 'title:' and 'date:'"
            )
        if not isinstance(node, yaml.MappingNode):
            raise ArticleError(
                f"{path}: line {node.start_mark.line + 2}: front matter must be 'key: value' "
                "lines (title, date, url, summary, tags)"
            )
        fields: dict[str, Any] = {}
        key_lines: dict[str, int] = {}
        for key_node, value_node in node.value:
            key = str(loader.construct_object(key_node, deep=True))
            key_lines[key] = key_node.start_mark.line + 2
            try:
                fields[key] = loader.construct_object(value_node, deep=True)
            except (ValueError, TypeError, yaml.YAMLError) as exc:  # e.g. date: 2026-02-30
                raise ArticleError(
                    f"{path}: line {key_lines[key]}: bad value for {key!r}: {collapse(str(exc))}"
                ) from None
        return fields, key_lines
    except yaml.MarkedYAMLError as exc:
        # The context ("while parsing a flow sequence") points at where the bad value starts.
        mark = exc.context_mark or exc.problem_mark
        where = f"line {mark.line + 2}" if mark else f"lines 1-{close + 1}"
        problem = ", ".join(part for part in (exc.context, exc.problem) if part) or "syntax error"
        raise ArticleError(
            f"{path}: {where}: front matter is not valid YAML: {problem} "
            "(quote values that contain ': ' or start with a special character)"
        ) from None
    except yaml.YAMLError as exc:
        raise ArticleError(
            f"{path}: lines 1-{close + 1}: front matter is not valid YAML: {collapse(str(exc))}"
        ) from None
    finally:
        loader.dispose()


def _text_field(fields: dict[str, Any], key: str, fail: _Fail) -> str:
    value = fields.get(key)
    if value is None:
        return ""
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise fail(key, f"{key!r} must be text, got {clip(repr(value))} (put it in quotes)")
    return collapse(str(value))


def _date_field(value: Any, fail: _Fail) -> datetime:
    if value is None:
        raise fail("date", f"front matter needs a 'date' ({_DATE_HINT})")
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value.strip())
        except ValueError:
            raise fail("date", f"bad 'date' {clip(value)!r}; {_DATE_HINT}") from None
    if isinstance(value, datetime):
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)
    if isinstance(value, date):
        return datetime(value.year, value.month, value.day, tzinfo=UTC)
    raise fail("date", f"bad 'date' {clip(repr(value))}; {_DATE_HINT}")


def _url_field(value: Any, fail: _Fail) -> str | None:
    if value is None or value == "":
        return None
    if is_http_url(value):
        return value.strip()
    raise fail("url", f"'url' must be an http:// or https:// address, got {clip(repr(value))}")


def _tags_field(value: Any, fail: _Fail) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        value = value.split(",")
    if not isinstance(value, list) or any(
        isinstance(tag, bool | list | dict) or tag is None for tag in value
    ):
        raise fail("tags", "'tags' must be a list like [city, transit] or a string 'city, transit'")
    tags = (collapse(str(tag)) for tag in value)
    return tuple(dict.fromkeys(tag for tag in tags if tag))


def _first_paragraph_text(tokens: Sequence[Token]) -> str:
    """Plain text of the first paragraph (or, failing that, the first block with text)."""
    inlines = [t for t in tokens if t.type == "inline" and t.children]
    for index, token in enumerate(tokens[:-1]):
        if token.type == "paragraph_open" and tokens[index + 1].type == "inline":
            inlines.insert(0, tokens[index + 1])
            break
    for inline in inlines:
        parts = []
        for child in inline.children or ():
            if child.type in ("text", "text_special", "code_inline"):
                parts.append(child.content)
            elif child.type in ("softbreak", "hardbreak"):
                parts.append(" ")
        text = collapse("".join(parts))
        if text:
            return text
    return ""
