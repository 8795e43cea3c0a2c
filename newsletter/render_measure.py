"""What each article's block weighs in a rendered part, for the size fitting.

A render for measuring gets titles that write a marker before themselves wherever a template
prints them as they are; the part is then cut at the markers into one piece per article. The
markers exist only in these renders: the digest that is sent is rendered without them.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from itertools import pairwise

import markupsafe

from newsletter.models import Article

TAG = re.compile(r"<[A-Za-z]")  # an element start: what premailer adds a style="" to
SizeOf = Callable[[str], int]  # worst-case bytes of a rendered piece


@dataclass(frozen=True)
class Cost:
    """What a piece of a rendered part weighs: bytes, elements, worst-case personal growth."""

    size: int = 0
    tags: int = 0
    personal: int = 0  # extra bytes once its tokens hold the longest personal values

    def minus(self, other: Cost) -> Cost:
        return Cost(self.size - other.size, self.tags - other.tags, self.personal - other.personal)

    def at_least(self, other: Cost) -> Cost:
        return Cost(
            max(self.size, other.size),
            max(self.tags, other.tags),
            max(self.personal, other.personal),
        )

    def share(self, weight: int, whole: int) -> Cost:
        """This cost's part for ``weight`` out of ``whole``, rounded up."""
        return Cost(
            -(-self.size * weight // whole),
            -(-self.tags * weight // whole),
            -(-max(self.personal, 0) * weight // whole),
        )

    def estimate(self, style_per_tag: float) -> float:
        """Worst-case bytes once ``style_per_tag`` bytes of style are added to each element."""
        return self.size + style_per_tag * self.tags + self.personal


def cost_of(piece: str, size_of: SizeOf) -> Cost:
    size = len(piece.encode("utf-8"))
    return Cost(size, len(TAG.findall(piece)), size_of(piece) - size)


class _HtmlMarked(str):
    """A title that writes a marker before itself where a template prints it (autoescaped)."""

    marker: str

    def __html__(self) -> str:
        return self.marker + str(markupsafe.escape(str.__str__(self)))


class _TextMarked(str):
    """A title that writes a marker before itself where a text template prints it."""

    marker: str

    def __str__(self) -> str:
        return self.marker + str.__str__(self)


class BlockMarkers:
    """Markers for one digest's measuring renders (a random nonce: article text cannot forge)."""

    def __init__(self) -> None:
        self.nonce = "NLm" + secrets.token_hex(6)
        # Case-insensitive: a template may upper-case what it prints.
        self.pattern = re.compile(re.escape(self.nonce) + r"M(\d+)M", re.IGNORECASE)

    def marked(self, articles: Sequence[Article], *, html: bool) -> tuple[Article, ...]:
        """Copies of ``articles`` whose titles print a marker first (HTML or text templates)."""
        kind = _HtmlMarked if html else _TextMarked
        copies = []
        for index, article in enumerate(articles):
            title = kind(article.title)
            title.marker = f"{self.nonce}M{index}M"
            copies.append(replace(article, title=title))
        return tuple(copies)

    def block_costs(
        self, doc: str, skeleton: Cost, size_of: SizeOf, weights: Sequence[int]
    ) -> list[Cost]:
        """Each article's share of ``doc`` (rendered from :meth:`marked` articles): from its
        title's marker to the next one. ``skeleton`` is the part without articles; without
        every marker (a template that changes titles) the articles share by ``weights``."""
        count = len(weights)
        if not count:
            return []
        total = cost_of(self.pattern.sub("", doc), size_of).minus(skeleton)
        starts: dict[int, int] = {}
        for match in self.pattern.finditer(doc):
            index = int(match.group(1))
            if index < count:
                starts.setdefault(index, match.start())
        if len(starts) < count:
            whole = sum(weights)
            return [total.share(weight, whole) for weight in weights]
        order = sorted(starts, key=starts.__getitem__)
        blocks: dict[int, Cost] = {}
        rest, largest = total, Cost()
        for first, second in pairwise(order):
            cost = cost_of(self.pattern.sub("", doc[starts[first] : starts[second]]), size_of)
            blocks[first] = cost
            rest, largest = rest.minus(cost), largest.at_least(cost)
        # The last block runs into the footer: it gets what is left, at least the largest other.
        blocks[order[-1]] = rest.at_least(largest)
        return [blocks[i] for i in range(count)]
