"""The preview: the next digest as it would be sent, shown with a sample reader's fields."""

from __future__ import annotations

from pathlib import Path

from newsletter.app.context import Context
from newsletter.app.digest import Gathered, NextDigest, next_digest
from newsletter.config import Settings
from newsletter.message import fill_tokens
from newsletter.render import builtin_templates_dir

# The personal fields of the sample reader every preview shows (CLI and web alike).
PREVIEW_VALUES = {
    "name": "Alex Reader",
    "email": "alex@example.org",
    "unsubscribe_url": "#unsubscribe",
}


def preview_digest(ctx: Context) -> tuple[NextDigest | None, Gathered]:
    """The next digest as it would be sent, marking and storing nothing."""
    return next_digest(ctx, remember=False)


def sample_copy(upcoming: NextDigest) -> tuple[str, str]:
    """The digest's HTML and text parts as the sample reader (``PREVIEW_VALUES``) gets them."""
    html = fill_tokens(upcoming.rendered.html, upcoming.tokens, PREVIEW_VALUES, escape=True)
    text = fill_tokens(upcoming.rendered.text, upcoming.tokens, PREVIEW_VALUES, escape=False)
    return html, text


def preview_inputs(settings: Settings) -> list[Path]:
    """What the next digest is made from: the template folders, the articles folder and the
    config file. A preview is stale when any file under them changes."""
    paths = [builtin_templates_dir(), settings.sources.articles_dir]
    if settings.digest.templates_dir is not None:
        paths.append(settings.digest.templates_dir)
    if settings.config_path is not None:
        paths.append(settings.config_path)
    return paths
