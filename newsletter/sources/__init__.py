"""Article sources: a folder of article files and RSS/Atom feeds.

Every reader hands a :class:`~newsletter.sources.base.Draft` to the one policy in
:mod:`newsletter.sources.base`, which makes the ``Article`` (key, headline, summary).
"""
