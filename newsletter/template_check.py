"""Digest templates may print subscriber data, nothing more.

The digest is rendered once for everyone with placeholder tokens in place of each subscriber's
fields (see :mod:`newsletter.personalization`), so ``{% if subscriber.attrs.city == "Paris" %}``
would test the token, never the value, and silently give every subscriber the same branch.
Such a template is refused before it renders, naming the file and line.
"""

from __future__ import annotations

from functools import lru_cache

import jinja2
from jinja2 import meta, nodes

from newsletter.errors import TemplateError

PERSONAL_NAMES = frozenset({"subscriber", "unsubscribe_url"})
SUBSCRIBER_FIELDS = frozenset({"name", "email", "unsubscribe_url"})
# Filters that leave a token whole, so the value put in its place later reads the same.
# ``format`` only as the value of a ``%s`` (``"Hi %s"|format(subscriber.name)``).
PASS_THROUGH_FILTERS = frozenset({"e", "escape", "forceescape", "safe", "string", "wrap"})

_CONSTRUCTS: tuple[tuple[type[nodes.Node], str], ...] = (
    (nodes.If, "{% if %}"),
    (nodes.For, "{% for %}"),
    (nodes.CondExpr, "an inline if"),
    (nodes.Compare, "a comparison"),
    (nodes.Test, "a test (is ...)"),
    (nodes.And, "a boolean expression"),
    (nodes.Or, "a boolean expression"),
    (nodes.Not, "a boolean expression"),
    (nodes.Call, "a call"),
    (nodes.Assign, "{% set %}"),
    (nodes.AssignBlock, "{% set %}"),
    (nodes.With, "{% with %}"),
    (nodes.FilterBlock, "{% filter %}"),
    (nodes.Getitem, "a subscript"),
    (nodes.Getattr, "an attribute lookup"),
)


def check_personal_fields(env: jinja2.Environment, name: str) -> None:
    """Refuse ``name`` (and what it includes, imports or extends) if it does anything with a
    subscriber's fields but print them: ``TemplateError`` naming the file and line."""
    seen: set[str] = set()
    pending = [name]
    while pending:
        current = pending.pop()
        if current in seen:
            continue
        seen.add(current)
        try:
            source, filename, _ = env.loader.get_source(env, current)  # type: ignore[union-attr]
        except jinja2.TemplateNotFound:
            continue  # rendering reports it, with the line that asked for it
        pending.extend(_checked_source(env, current, filename, source))


@lru_cache(maxsize=64)
def _checked_source(
    env: jinja2.Environment, name: str, filename: str | None, source: str
) -> tuple[str, ...]:
    """Check one template's source (once per version of it); the templates it refers to."""
    tree = env.parse(source, name, filename)
    _check(tree, [], filename or name)
    return tuple(ref for ref in meta.find_referenced_templates(tree) if ref)


def _check(node: nodes.Node, ancestors: list[nodes.Node], filename: str) -> None:
    if isinstance(node, nodes.Name) and node.name in PERSONAL_NAMES and node.ctx == "load":
        problem = _misuse(node, ancestors)
        if problem:
            raise TemplateError(
                f"{filename}, line {node.lineno}: {problem}; the digest is rendered once for all "
                "subscribers, so subscriber fields and unsubscribe_url can only be printed as they "
                "are ({{ subscriber.name }}), not tested, compared, changed or passed on"
            )
    ancestors.append(node)
    for child in node.iter_child_nodes():
        _check(child, ancestors, filename)
    ancestors.pop()


def _misuse(name: nodes.Name, ancestors: list[nodes.Node]) -> str | None:
    """Why this use of ``subscriber``/``unsubscribe_url`` is refused; None when it is fine."""
    reference: nodes.Node = name
    depth = len(ancestors) - 1
    while depth >= 0 and _is_lookup_of(ancestors[depth], reference):
        reference = ancestors[depth]
        depth -= 1
    label = _describe(reference)
    if not _is_field(reference):
        return (
            f"{label} is not a subscriber field (print subscriber.name, subscriber.email, "
            "subscriber.attrs.<column> or unsubscribe_url)"
        )
    value = reference
    while depth >= 0 and _passes_through(ancestors[depth], value):
        value = ancestors[depth]
        depth -= 1
    parent = ancestors[depth] if depth >= 0 else None
    if isinstance(parent, nodes.Output) and any(item is value for item in parent.nodes):
        for outer in ancestors[:depth]:
            if isinstance(outer, nodes.FilterBlock) and not _filters_pass(outer.filter):
                return f"{label} is used in {{% filter {outer.filter.name} %}}"
            if isinstance(outer, nodes.AssignBlock):
                return f"{label} is used in {{% set %}}"
        return None
    return f"{label} is used in {_construct(parent)}"


def _is_lookup_of(node: nodes.Node, inner: nodes.Node) -> bool:
    return isinstance(node, nodes.Getattr | nodes.Getitem) and node.node is inner


def _describe(node: nodes.Node) -> str:
    if isinstance(node, nodes.Name):
        return node.name
    if isinstance(node, nodes.Getattr):
        return f"{_describe(node.node)}.{node.attr}"
    if isinstance(node, nodes.Getitem):
        key = repr(node.arg.value) if isinstance(node.arg, nodes.Const) else "..."
        return f"{_describe(node.node)}[{key}]"
    return "subscriber data"


def _is_field(node: nodes.Node) -> bool:
    """``unsubscribe_url``, ``subscriber.name|email|unsubscribe_url``, ``subscriber.attrs.X``."""
    if isinstance(node, nodes.Name):
        return node.name == "unsubscribe_url"
    if isinstance(node, nodes.Getattr) and isinstance(node.node, nodes.Name):
        return node.node.name == "subscriber" and node.attr in SUBSCRIBER_FIELDS
    inner = node.node if isinstance(node, nodes.Getattr | nodes.Getitem) else None
    is_attrs = (
        isinstance(inner, nodes.Getattr)
        and inner.attr == "attrs"
        and isinstance(inner.node, nodes.Name)
        and inner.node.name == "subscriber"
    )
    if isinstance(node, nodes.Getitem):
        return is_attrs and isinstance(node.arg, nodes.Const) and isinstance(node.arg.value, str)
    return is_attrs


def _passes_through(node: nodes.Node, value: nodes.Node) -> bool:
    """True when ``node`` hands ``value`` on whole: a pass-through filter, ``~``, ``%s``."""
    if isinstance(node, nodes.Filter):
        if node.node is value:
            return node.name in PASS_THROUGH_FILTERS
        return node.name == "format" and any(arg is value for arg in node.args)
    if isinstance(node, nodes.Concat):
        return True
    return isinstance(node, nodes.MarkSafe | nodes.MarkSafeIfAutoescape)


def _filters_pass(node: nodes.Node | None) -> bool:
    while isinstance(node, nodes.Filter):
        if node.name not in PASS_THROUGH_FILTERS:
            return False
        node = node.node
    return True


def _construct(node: nodes.Node | None) -> str:
    if isinstance(node, nodes.Filter):
        return f"the filter |{node.name}"
    for kind, description in _CONSTRUCTS:
        if isinstance(node, kind):
            return description
    return "an expression"
