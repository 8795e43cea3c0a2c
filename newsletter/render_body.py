"""Sanitized article HTML fitted into the digest's layout (a Jinja filter for the templates).

Feed and Markdown bodies arrive sanitized (:mod:`newsletter.sources.sanitize`), in nh3's normal
form: lower-case tags, double-quoted attributes, headings h2-h4 without attributes, images as
``<img src=".." [alt title width] style="..">``. The expressions below only ever see that form;
anything else passes through unchanged.
"""

from __future__ import annotations

import re

MAX_HEADING_LEVEL = 6
# Outlook (Word) ignores CSS sizes on images and uses the width attribute, so every image gets
# one no wider than the column. An image of unknown width gets the column width for Outlook and
# ``width:auto`` for everyone else, where CSS wins over the attribute: natural size, capped.
_KNOWN_WIDTH_STYLE = "max-width:100%;height:auto;border:0"
_UNKNOWN_WIDTH_STYLE = "width:auto;max-width:100%;height:auto;border:0"

_HEADING_TAG = re.compile(r"<(/?)h([1-6])>")
_IMG_TAG = re.compile(r"<img((?: [a-z-]+=\"[^\"]*\")*)>")
_ATTRIBUTE = re.compile(r' ([a-z-]+)="([^"]*)"')


def fit_body(html: str, *, headline_level: int = 2, column_width: int = 600) -> str:
    """``html`` with its headings below ``headline_level`` (h2 -> h3 under an h2 headline) and
    every image given a ``width`` attribute of at most ``column_width`` pixels."""
    shift = max(headline_level - 1, 0)

    def level(found: re.Match[str]) -> str:
        deeper = max(int(found[2]) + shift, headline_level + 1)
        return f"<{found[1]}h{min(deeper, MAX_HEADING_LEVEL)}>"

    html = _HEADING_TAG.sub(level, str(html))
    return _IMG_TAG.sub(lambda m: _fitted_image(m[1], column_width), html)


def _fitted_image(attributes_text: str, column_width: int) -> str:
    attributes = dict(_ATTRIBUTE.findall(attributes_text))
    attributes.pop("height", None)  # without it, a narrowed image keeps its aspect ratio
    attributes.setdefault("alt", "")  # no alt: screen readers would read out the file name
    width = attributes.get("width", "")
    if width.isascii() and width.isdigit() and int(width) > 0:
        attributes["width"] = str(min(int(width), column_width))
        attributes["style"] = _KNOWN_WIDTH_STYLE
    else:
        attributes["width"] = str(column_width)
        attributes["style"] = _UNKNOWN_WIDTH_STYLE
    return "<img" + "".join(f' {name}="{value}"' for name, value in attributes.items()) + ">"
