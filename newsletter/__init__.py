"""newsletter: turn new articles into a daily email digest and deliver it over SMTP."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("newsletter")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
