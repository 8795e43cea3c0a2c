"""newsletter: turn new articles into a daily email digest and deliver it over SMTP."""

from __future__ import annotations


def __getattr__(name: str) -> str:
    # Read lazily: importlib.metadata costs tens of milliseconds that `newsletter --help` and
    # every library import would otherwise pay.
    if name != "__version__":
        raise AttributeError(f"module 'newsletter' has no attribute {name!r}")
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("newsletter")
    except PackageNotFoundError:  # running from a source tree that was never installed
        return "0.0.0+unknown"


__all__ = ["__version__"]
