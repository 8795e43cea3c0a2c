"""Rendering the web app's pages from ``templates/web/`` with safe response headers."""

from __future__ import annotations

import secrets
from datetime import datetime
from typing import Any

import jinja2
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response

from newsletter.config import Settings
from newsletter.errors import TemplateError
from newsletter.render import make_template_environment
from newsletter.render_text import collapse

# The email shown inside a page: no scripts, styles inline, images from anywhere.
EMAIL_CSP = (
    "default-src 'none'; style-src 'unsafe-inline'; img-src * data:; font-src * data:; "
    "sandbox allow-popups allow-popups-to-escape-sandbox"
)


def page_headers(nonce: str) -> dict[str, str]:
    """Headers for every HTML page: only our own scripts (by nonce), no framing, no referrer.

    ``Referrer-Policy: no-referrer`` matters: link pages carry their token in the URL.
    """
    return {
        "Content-Security-Policy": (
            "default-src 'none'; "
            f"script-src 'nonce-{nonce}'; "
            "style-src 'unsafe-inline'; img-src * data:; font-src * data:; connect-src 'self'; "
            "form-action 'self'; frame-ancestors 'self'; base-uri 'none'"
        ),
        "Referrer-Policy": "no-referrer",
        "X-Content-Type-Options": "nosniff",
        "X-Frame-Options": "SAMEORIGIN",
        "Cache-Control": "no-store",
    }


def email_headers() -> dict[str, str]:
    return {
        "Content-Security-Policy": EMAIL_CSP,
        "Referrer-Policy": "no-referrer",
        "X-Content-Type-Options": "nosniff",
        "Cache-Control": "no-store",
    }


def mask_email(address: str) -> str:
    """``ada.lovelace@example.org`` -> ``ad***@example.org``: recognizable, not harvestable."""
    local, _, domain = address.partition("@")
    keep = 2 if len(local) > 3 else 1
    return f"{local[:keep]}***@{domain}"


def long_datetime(value: datetime) -> str:
    return f"{value:%d %B %Y, %H:%M} UTC"


class Pages:
    """Renders ``web/<name>.html.j2``; a user's ``digest.templates_dir`` can override any page."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.env = make_template_environment(settings.digest.templates_dir)
        self.env.filters["long_datetime"] = long_datetime
        self.env.filters["mask_email"] = mask_email

    def render(
        self, request: Request, page: str, /, *, status: int = 200, **context: Any
    ) -> HTMLResponse:
        nonce = secrets.token_urlsafe(16)
        template = f"web/{page}.html.j2"
        values = {
            "newsletter": self.settings.newsletter,
            "path": request.url.path,
            "nonce": nonce,
            "public": False,  # True: a page for subscribers, without the operator's links
            **context,
        }
        try:
            html = self.env.get_template(template).render(values)
        except jinja2.TemplateError as exc:
            raise TemplateError(f"{template}: {collapse(str(exc))}") from exc
        return HTMLResponse(html, status_code=status, headers=page_headers(nonce))


def email_response(html: str) -> Response:
    """An email's HTML on its own, sandboxed (no scripts, its own origin)."""
    return HTMLResponse(html, headers=email_headers())
