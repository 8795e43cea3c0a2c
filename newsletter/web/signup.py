"""Subscribing: a form and a JSON endpoint that only queue the request, double opt-in by email.

Every accepted request gets the same answer at once, whether or not the address is on the
list and whether or not the mail server is up: the request is only recorded
(``app.subscriptions.record_signup``) and the confirmation queue mails it later, at most one
email an hour and a few a day per address. Requests are limited per client address
(``X-Forwarded-For`` counts only from ``[web] trusted_proxies``). The form is accepted only
from our own pages (``Origin``/``Referer`` must be ``[web] base_url``'s, or this server's own
loopback address), the API only as ``application/json`` (which a browser cannot send to
another site without asking first): another site cannot make its visitors sign up.
"""

from __future__ import annotations

import json
import logging
from typing import Any
from urllib.parse import urlsplit

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from newsletter import app
from newsletter.app import subscriptions
from newsletter.config import is_loopback_host
from newsletter.errors import SubscriberError
from newsletter.web.pages import Pages
from newsletter.web.ratelimit import ClientAddress, SlidingWindow

log = logging.getLogger(__name__)

HONEYPOT = "website"  # hidden from people; bots that fill every field get a polite no-op
MAX_FIELD = 400
CHECK_INBOX = "Check your inbox: we sent you a link to confirm your subscription."
CROSS_SITE = (
    "This form can only be sent from its own page. Open the subscribe page again and send it "
    "from there."
)
JSON_ONLY = "send the request with Content-Type: application/json"
# Our own form page must send its Origin (a ``no-referrer`` page would send "null").
FORM_REFERRER_POLICY = "same-origin"


def _origin(url: str) -> str | None:
    """``scheme://host[:port]`` of a URL, the default port left out; None if it has none."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError:
        return None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return None
    host = parts.hostname.lower()
    host = f"[{host}]" if ":" in host else host
    default = 443 if parts.scheme == "https" else 80
    return f"{parts.scheme}://{host}" + (f":{port}" if port not in (None, default) else "")


class SameOrigin:
    """Whether a form POST comes from one of our pages, by its ``Origin`` (else ``Referer``).

    Accepted: ``[web] base_url``'s origin, and the server's own address when it is loopback
    (a local ``serve`` or test, reached at 127.0.0.1). A request with neither header, or
    ``Origin: null``, is refused: browsers send one with every form.
    """

    def __init__(self, base_url: str) -> None:
        self.expected = _origin(base_url)

    def __call__(self, request: Request) -> bool:
        origin = request.headers.get("origin")
        if origin is None or origin == "null":
            origin = request.headers.get("referer")
        claimed = _origin(origin) if origin else None
        if claimed is None:
            return False
        if claimed == self.expected:
            return True
        own = request.url.hostname or ""
        return is_loopback_host(own) and claimed == _origin(str(request.base_url))


def routes(ctx: app.Context, pages: Pages, limiter: SlidingWindow) -> list[Route]:
    client = ClientAddress(ctx.settings.web.trusted_proxies)
    same_origin = SameOrigin(ctx.settings.web.base_url)

    def too_many(request: Request) -> float:
        address = client.of(request)
        wait = limiter.hit(address)
        if wait:
            log.info("subscribe: rate limit reached for %s", address)
        return wait

    def form_page(request: Request, *, status: int = 200, **context: Any) -> Response:
        values = {"email": "", "name": "", "error": None, **context}
        page = pages.render(request, "subscribe", status=status, public=True, **values)
        page.headers["Referrer-Policy"] = FORM_REFERRER_POLICY
        return page

    async def show_form(request: Request) -> Response:
        return form_page(request)

    async def submit_form(request: Request) -> Response:
        if not same_origin(request):
            return form_page(request, status=403, error=CROSS_SITE)
        async with request.form(max_files=0, max_fields=20) as form:
            fields = {k: str(v)[:MAX_FIELD] for k, v in form.items() if isinstance(v, str)}
        email, name = fields.get("email", "").strip(), fields.get("name", "").strip()
        wait = too_many(request)
        if wait:
            return form_page(
                request,
                status=429,
                email=email,
                name=name,
                error=f"Too many attempts from your address; try again in {wait:.0f} seconds.",
            )
        if fields.get(HONEYPOT):
            return pages.render(request, "subscribed", public=True)
        try:
            await run_in_threadpool(subscriptions.record_signup, ctx, email, name)
        except SubscriberError as exc:
            return form_page(request, status=422, email=email, name=name, error=str(exc))
        return pages.render(request, "subscribed", public=True)

    async def submit_json(request: Request) -> Response:
        media_type = request.headers.get("content-type", "").partition(";")[0].strip().lower()
        if media_type != "application/json":
            return JSONResponse({"error": JSON_ONLY}, status_code=415)
        wait = too_many(request)
        if wait:
            return JSONResponse(
                {"error": f"too many requests; try again in {wait:.0f} seconds"},
                status_code=429,
                headers={"Retry-After": f"{wait:.0f}"},
            )
        try:
            body = json.loads(await request.body())
        except (ValueError, UnicodeDecodeError, RecursionError):  # nested too deep, too
            body = None
        if not isinstance(body, dict) or not isinstance(body.get("email"), str):
            return JSONResponse(
                {"error": 'send a JSON object like {"email": "you@example.org", "name": "You"}'},
                status_code=400,
            )
        name = body.get("name")
        name = name if isinstance(name, str) else ""
        try:
            await run_in_threadpool(
                subscriptions.record_signup, ctx, body["email"][:MAX_FIELD], name[:MAX_FIELD]
            )
        except SubscriberError as exc:
            return JSONResponse({"error": str(exc)}, status_code=422)
        return JSONResponse({"status": "pending", "message": CHECK_INBOX}, status_code=202)

    return [
        Route("/subscribe", show_form, methods=["GET"], name="subscribe"),
        Route("/subscribe", submit_form, methods=["POST"]),
        Route("/api/subscribe", submit_json, methods=["POST"], name="api_subscribe"),
    ]
