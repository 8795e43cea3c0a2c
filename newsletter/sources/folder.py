"""Read articles from a folder (``[sources] articles_dir``, ``seeds/`` by default).

Readers are chosen by file extension from :data:`READERS` (as Pelican's readers are): ``.txt``
is the article collector's scraped text (:mod:`newsletter.sources.scraped`), ``.md`` is
Markdown with YAML front matter (:mod:`newsletter.sources.markdown`). Every file is checked
against ``[sources] max_article_bytes`` before a byte of it is read, decoded as UTF-8 with line
ends normalized, and handed to its reader. A file that cannot be read becomes a problem for the
caller to report; the other files still go out. Two files that make the same key are a
conflict: the first (by name) is kept and the other reported, naming both.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Protocol

from newsletter.config import SourcesSettings
from newsletter.errors import ArticleError, SourceError
from newsletter.models import Article
from newsletter.sources.base import Draft, SourceResult, finish_article, first_by_key
from newsletter.sources.markdown import MarkdownReader
from newsletter.sources.scraped import ScrapedTextReader

DEFAULT_MAX_ARTICLE_BYTES: int = SourcesSettings.model_fields["max_article_bytes"].default


class FileReader(Protocol):
    """Reads one kind of article file: ``read`` gets the decoded text (``\\n`` line ends)."""

    @property
    def extensions(self) -> tuple[str, ...]:
        """The file name endings it reads, lower case with the dot: ``(".txt",)``."""
        ...

    @property
    def description(self) -> str:
        """What the files are, for messages: ``"scraped text"``."""
        ...

    def read(self, text: str, path: Path) -> Draft:
        """A Draft of the article; ``ArticleError`` naming ``path`` when it is unusable."""
        ...


def _registry(*readers: FileReader) -> dict[str, FileReader]:
    return {extension: reader for reader in readers for extension in reader.extensions}


READERS: dict[str, FileReader] = _registry(ScrapedTextReader(), MarkdownReader())


def read_article_file(path: Path, *, max_bytes: int = DEFAULT_MAX_ARTICLE_BYTES) -> Article:
    """Read one article file with the reader for its extension; raise ArticleError saying
    what to fix. Files over ``max_bytes`` are refused without being read."""
    reader = READERS.get(path.suffix.lower())
    if reader is None:
        kinds = " or ".join(f"{ext} ({r.description})" for ext, r in READERS.items())
        raise ArticleError(
            f"{path}: unsupported file type {path.suffix or '(none)'!r}; articles must be {kinds}"
        )
    data = _read_bounded(path, max_bytes)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise ArticleError(
            f"{path}: line {line}: not valid UTF-8 (byte 0x{data[exc.start]:02x}); "
            "save the file as UTF-8"
        ) from None
    text = text.removeprefix("\ufeff").replace("\r\n", "\n").replace("\r", "\n")
    return finish_article(reader.read(text, path))


def _read_bounded(path: Path, max_bytes: int) -> bytes:
    """The bytes of ``path``, refused (ArticleError) when there are more than ``max_bytes``."""
    too_big = (
        f"is larger than [sources] max_article_bytes ({max_bytes:,} bytes); "
        "shorten the article or raise the limit"
    )
    try:
        with path.open("rb") as file:
            size = _size(file.fileno())
            if size is not None and size > max_bytes:
                raise ArticleError(f"{path}: {size:,} bytes {too_big}")
            data = file.read(max_bytes + 1)  # a file still growing stops here too
    except OSError as exc:
        raise ArticleError(f"{path}: cannot read file: {exc.strerror or exc}") from exc
    if len(data) > max_bytes:
        raise ArticleError(f"{path}: {too_big}")
    return data


def _size(fileno: int) -> int | None:
    status = os.fstat(fileno)
    return status.st_size if stat.S_ISREG(status.st_mode) else None


def read_articles_dir(
    directory: Path, *, max_bytes: int = DEFAULT_MAX_ARTICLE_BYTES
) -> SourceResult:
    """Read every article file in ``directory`` (not sub-folders) that a reader handles, by name.

    Hidden files and other extensions are ignored. Unreadable files, files over ``max_bytes``
    and files whose key an earlier file already has (with other content) are returned as
    ``problems`` instead of stopping the run; nothing is logged here. Raises ``SourceError``
    when the folder itself cannot be listed.
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
    result = SourceResult()
    found: list[Article] = []
    for path in sorted(entries, key=lambda p: p.name):
        if path.name.startswith(".") or path.suffix.lower() not in READERS:
            continue
        if not path.is_file():
            continue
        try:
            found.append(read_article_file(path, max_bytes=max_bytes))
        except ArticleError as exc:
            result.problems.append(exc)
    result.articles, duplicates = first_by_key(found)
    for duplicate in duplicates:
        if duplicate.same_content:
            result.duplicates.append(duplicate)
        else:
            result.problems.append(
                ArticleError(
                    f"{duplicate.article.origin}: skipped: it has the same key "
                    f"({duplicate.kept.key}) as {duplicate.kept.origin} but other text; "
                    "rename one of them (in NNN_<id>.txt the <id> identifies the article)"
                )
            )
    return result
