"""Untrusted HTML from feeds and Markdown, made safe for an email body.

:func:`sanitize_html` runs everything through nh3 (the ammonia sanitizer, which parses like a
browser) with a small allow-list, then tidies nh3's normalized output for email clients:
headings mapped to h2-h4, images capped in width and made fluid, tracking pixels and dead
links removed.
"""

from __future__ import annotations

import html
import re
from collections.abc import Callable
from urllib.parse import urljoin, urlsplit

import nh3

from newsletter.text import NON_TEXT_TAGS

ALLOWED_TAGS = frozenset(
    {
        "p", "br", "hr", "a", "strong", "em", "b", "i", "u", "s", "sub", "sup",
        "ul", "ol", "li", "blockquote", "pre", "code",
        "h1", "h2", "h3", "h4", "h5", "h6",  # h1, h5, h6 are renamed to h2 / h4 below
        "img", "figure", "figcaption",
        "table", "caption", "thead", "tbody", "tfoot", "tr", "th", "td",
    }
)  # fmt: skip
ALLOWED_ATTRIBUTES = {
    "a": frozenset({"href", "title"}),
    "img": frozenset({"src", "alt", "title", "width", "height"}),
    "th": frozenset({"colspan", "rowspan"}),
    "td": frozenset({"colspan", "rowspan"}),
}
# Removed together with everything inside them (other unknown tags are unwrapped).
DROPPED_WITH_CONTENT = NON_TEXT_TAGS
LINK_SCHEMES = frozenset({"http", "https", "mailto"})
IMAGE_SCHEMES = frozenset({"http", "https"})
IMAGE_MAX_WIDTH = 600  # px: the usual width of an email body
IMAGE_STYLE = "max-width:100%;height:auto"

# nh3 serializes its output in a normal form: lower-case tag names, every attribute value in
# double quotes with `"`, `<` and `>` escaped. The regular expressions below only ever see
# that form, never the untrusted input.
_HEADING_TAG = re.compile(r"<(/?)h([156])>")
_HEADING_MAP = {"1": "2", "5": "4", "6": "4"}
_IMG_TAG = re.compile(r"<img((?: [a-z-]+=\"[^\"]*\")*)>")
_ATTRIBUTE = re.compile(r' ([a-z-]+)="([^"]*)"')
_LINK_WITHOUT_HREF = re.compile(r"<a((?: [a-z-]+=\"[^\"]*\")*)>(.*?)</a>", re.DOTALL)
_EMPTY_PARAGRAPH = re.compile(r"<p>\s*</p>")
_WHITESPACE = re.compile(r"\s+")
_PARAGRAPH_BREAK = re.compile(r"\n[ \t\r\f\v]*\n")


def sanitize_html(html_text: str, *, base_url: str) -> str:
    """Return ``html_text`` reduced to an email-safe subset, with absolute http(s) URLs.

    Relative links and image sources are resolved against ``base_url``; anything that is not
    http(s) afterwards (``javascript:``, ``data:``, relative to a non-http base) is dropped,
    except ``mailto:`` links.
    """
    cleaned = nh3.clean(
        html_text,
        tags=set(ALLOWED_TAGS),
        clean_content_tags=set(DROPPED_WITH_CONTENT),
        attributes={tag: set(names) for tag, names in ALLOWED_ATTRIBUTES.items()},
        attribute_filter=_url_filter(base_url),
        url_schemes=set(LINK_SCHEMES),
        link_rel="noopener noreferrer",
        strip_comments=True,
    )
    cleaned = _HEADING_TAG.sub(lambda m: f"<{m[1]}h{_HEADING_MAP[m[2]]}>", cleaned)
    cleaned = _IMG_TAG.sub(_email_image, cleaned)
    cleaned = _LINK_WITHOUT_HREF.sub(_unwrap_dead_link, cleaned)
    cleaned = _EMPTY_PARAGRAPH.sub("", cleaned)
    return cleaned.strip()


def text_to_html(text: str) -> str:
    """Plain text as HTML: escaped, one ``<p>`` per blank-line separated paragraph."""
    paragraphs = (_WHITESPACE.sub(" ", part).strip() for part in _PARAGRAPH_BREAK.split(text))
    return "".join(f"<p>{html.escape(part, quote=False)}</p>" for part in paragraphs if part)


def _url_filter(base_url: str) -> Callable[[str, str, str], str | None]:
    def keep(tag: str, attribute: str, value: str) -> str | None:
        if attribute == "href":
            return absolute_url(value, base_url, schemes=LINK_SCHEMES)
        if attribute == "src":
            return absolute_url(value, base_url, schemes=IMAGE_SCHEMES)
        return value

    return keep


def absolute_url(
    value: str, base_url: str, *, schemes: frozenset[str] = IMAGE_SCHEMES
) -> str | None:
    """``value`` resolved against ``base_url``, or None unless it is absolute with a scheme in
    ``schemes`` (and, for http(s), a host)."""
    value = value.strip()
    if not value or value.startswith("#"):  # no link, or one into a page the reader lacks
        return None
    try:
        url = urljoin(base_url, value)
        parts = urlsplit(url)
    except ValueError:  # e.g. an unbalanced "[" in an IPv6 host
        return None
    if parts.scheme not in schemes:
        return None
    if parts.scheme in ("http", "https") and not parts.hostname:
        return None
    return url


def _email_image(match: re.Match[str]) -> str:
    attributes = dict(_ATTRIBUTE.findall(match[1]))
    width, height = _pixels(attributes.pop("width", None)), _pixels(attributes.pop("height", None))
    if "src" not in attributes:
        return ""
    if (width is not None and width <= 1) or (height is not None and height <= 1):
        return ""  # a tracking pixel
    if width is not None:
        # Outlook ignores max-width and uses the width attribute; without a height attribute
        # it keeps the aspect ratio.
        attributes["width"] = str(min(width, IMAGE_MAX_WIDTH))
    attributes["style"] = IMAGE_STYLE
    return "<img" + "".join(f' {name}="{value}"' for name, value in attributes.items()) + ">"


def _pixels(value: str | None) -> int | None:
    if value is None:
        return None
    value = value.strip().removesuffix("px")
    return int(value) if value.isascii() and value.isdigit() else None


def _unwrap_dead_link(match: re.Match[str]) -> str:
    return match[0] if ' href="' in match[1] else match[2]
