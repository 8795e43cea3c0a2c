"""Read articles from a folder (``[sources] articles_dir``, ``seeds/`` by default).

Two formats, chosen by extension: ``.txt`` is the article collector's scraped text
(:mod:`newsletter.sources.scraped`), ``.md`` is Markdown with YAML front matter
(:mod:`newsletter.sources.markdown`). A file that cannot be read becomes a problem for the
caller to report; the other files still go out.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from newsletter.errors import ArticleError, SourceError
from newsletter.models import Article
from newsletter.sources.markdown import parse_markdown
from newsletter.sources.scraped import parse_scraped

_PARSERS: dict[str, Callable[[str, Path], Article]] = {
    ".txt": parse_scraped,
    ".md": parse_markdown,
}


@dataclass(frozen=True)
class FolderResult:
    articles: list[Article]
    problems: list[ArticleError]  # one per skipped file


def read_article_file(path: Path) -> Article:
    """Read one ``.txt`` or ``.md`` article file; raise ArticleError saying what to fix."""
    parser = _PARSERS.get(path.suffix.lower())
    if parser is None:
        raise ArticleError(
            f"{path}: unsupported file type {path.suffix or '(none)'!r}; "
            "articles must be .txt (scraped text) or .md (Markdown with front matter)"
        )
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ArticleError(f"{path}: cannot read file: {exc.strerror or exc}") from exc
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise ArticleError(
            f"{path}: line {line}: not valid UTF-8 (byte 0x{data[exc.start]:02x}); "
            "save the file as UTF-8"
        ) from None
    text = text.removeprefix("\ufeff").replace("\r\n", "\n").replace("\r", "\n")
    return parser(text, path)


def read_articles_dir(directory: Path) -> FolderResult:
    """Read every ``*.txt`` and ``*.md`` file in ``directory`` (not sub-folders), by name.

    Hidden files and other extensions are ignored. Unreadable files are returned as
    ``problems`` instead of stopping the run; nothing is logged here.
    """
    setting = "[sources] articles_dir"
    try:
        entries = list(directory.iterdir())
    except FileNotFoundError:
        raise SourceError(
            f"{directory}: articles folder not found; create it or point {setting} at one"
        ) from None
    except NotADirectoryError:
        raise SourceError(
            f"{directory}: not a folder; point {setting} at a folder of .txt/.md articles"
        ) from None
    except OSError as exc:
        raise SourceError(
            f"{directory}: cannot list articles folder ({exc.strerror or exc}); check {setting}"
        ) from exc
    articles: list[Article] = []
    problems: list[ArticleError] = []
    for path in sorted(entries, key=lambda p: p.name):
        if path.name.startswith(".") or path.suffix.lower() not in _PARSERS:
            continue
        if not path.is_file():
            continue
        try:
            articles.append(read_article_file(path))
        except ArticleError as exc:
            problems.append(exc)
    return FolderResult(articles=articles, problems=problems)
