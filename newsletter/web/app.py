"""The web app: public pages (archive, unsubscribe, subscribe, confirm) and, behind a login,
the admin pages and the preview (Starlette)."""

from __future__ import annotations

import logging
from datetime import timedelta

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from newsletter import app
from newsletter.app.admin import NextRun
from newsletter.errors import NewsletterError
from newsletter.web import admin, archive, links, preview, signup
from newsletter.web.auth import Auth
from newsletter.web.pages import Pages
from newsletter.web.ratelimit import SlidingWindow

log = logging.getLogger(__name__)

SUBSCRIBE_LIMIT = 5  # subscribe requests per IP address ...
SUBSCRIBE_WINDOW = timedelta(minutes=1)  # ... in this sliding window
MAX_BODY_BYTES = 64 * 1024  # forms and JSON here are tiny


def create_app(
    ctx: app.Context,
    *,
    subscribe_limit: int = SUBSCRIBE_LIMIT,
    subscribe_window: timedelta = SUBSCRIBE_WINDOW,
    next_run: NextRun | None = None,
) -> Starlette:
    """The ASGI app for ``ctx``; serve it with uvicorn, test it with Starlette's TestClient.

    ``next_run(now)`` gives the next scheduled run for the dashboard (the CLI passes the
    ``[schedule]``'s); without it the dashboard shows none. ``app.state.retries`` holds the
    "retry failed" sends started from the digest pages.
    """
    pages = Pages(ctx.settings)
    auth = Auth(ctx, pages)
    retries = admin.Retries(ctx)
    limiter = SlidingWindow(subscribe_limit, subscribe_window, clock=ctx.clock)

    async def index(request: Request) -> Response:
        await auth.session(request)
        return auth.render(
            request,
            "index",
            base_url=ctx.settings.web.base_url,
            public_archive=ctx.settings.web.public_archive,
        )

    async def not_found(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        if exc.status_code != 404:
            return PlainTextResponse(exc.detail, status_code=exc.status_code)
        detail = exc.detail if exc.detail != "Not Found" else "There is no page at this address."
        return pages.render(request, "not_found", status=404, message=detail)

    async def newsletter_error(request: Request, exc: Exception) -> Response:
        log.error("%s %s: %s", request.method, request.url.path, exc)
        try:
            return pages.render(request, "error", status=500, message=str(exc))
        except NewsletterError:  # the error page's own template is broken
            return PlainTextResponse(f"error: {exc}", status_code=500)

    routes = [
        Route("/", index, name="index"),
        *auth.routes(),
        *admin.routes(ctx, auth, retries, next_run=next_run),
        *preview.routes(preview.PreviewSource(ctx), auth),
        *archive.routes(ctx, auth),
        *links.routes(ctx, pages),
        *signup.routes(ctx, pages, limiter),
    ]
    starlette = Starlette(
        routes=routes,
        exception_handlers={HTTPException: not_found, NewsletterError: newsletter_error},
        max_body_size=MAX_BODY_BYTES,
    )
    starlette.state.retries = retries
    return starlette
