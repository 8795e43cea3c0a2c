"""Subscribing: a form and a JSON endpoint, rate-limited per IP, double opt-in by email.

Both answer the same whether or not the address is already on the list, so the form cannot
be used to find out who subscribes.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from newsletter import app
from newsletter.app import subscriptions
from newsletter.errors import DeliveryError, SubscriberError
from newsletter.web.pages import Pages
from newsletter.web.ratelimit import SlidingWindow

log = logging.getLogger(__name__)

HONEYPOT = "website"  # hidden from people; bots that fill every field get a polite no-op
MAX_FIELD = 400
CHECK_INBOX = "Check your inbox: we sent you a link to confirm your subscription."
NOT_SENT = "We could not send the confirmation email just now; please try again later."


def _client_ip(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def _too_many(limiter: SlidingWindow, request: Request) -> float:
    wait = limiter.hit(_client_ip(request))
    if wait:
        log.info("subscribe: rate limit reached for %s", _client_ip(request))
    return wait


def _subscribe(ctx: app.Context, email: str, name: str) -> None:
    result = subscriptions.subscribe(ctx, email, name)
    log.info("subscribe request for %s (%s)", result.email, "mailed" if result.mailed else "active")


def routes(ctx: app.Context, pages: Pages, limiter: SlidingWindow) -> list[Route]:
    def form_page(request: Request, *, status: int = 200, **context: Any) -> Response:
        values = {"email": "", "name": "", "error": None, **context}
        return pages.render(request, "subscribe", status=status, public=True, **values)

    async def show_form(request: Request) -> Response:
        return form_page(request)

    async def submit_form(request: Request) -> Response:
        async with request.form(max_files=0, max_fields=20) as form:
            fields = {k: str(v)[:MAX_FIELD] for k, v in form.items() if isinstance(v, str)}
        email, name = fields.get("email", "").strip(), fields.get("name", "").strip()
        wait = _too_many(limiter, request)
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
            await run_in_threadpool(_subscribe, ctx, email, name)
        except SubscriberError as exc:
            return form_page(request, status=422, email=email, name=name, error=str(exc))
        except DeliveryError as exc:
            log.warning("subscribe: %s", exc)
            return form_page(request, status=503, email=email, name=name, error=NOT_SENT)
        return pages.render(request, "subscribed", public=True)

    async def submit_json(request: Request) -> Response:
        wait = _too_many(limiter, request)
        if wait:
            return JSONResponse(
                {"error": f"too many requests; try again in {wait:.0f} seconds"},
                status_code=429,
                headers={"Retry-After": f"{wait:.0f}"},
            )
        try:
            body = json.loads(await request.body())
        except (ValueError, UnicodeDecodeError):
            body = None
        if not isinstance(body, dict) or not isinstance(body.get("email"), str):
            return JSONResponse(
                {"error": 'send a JSON object like {"email": "you@example.org", "name": "You"}'},
                status_code=400,
            )
        name = body.get("name")
        name = name if isinstance(name, str) else ""
        try:
            await run_in_threadpool(_subscribe, ctx, body["email"][:MAX_FIELD], name[:MAX_FIELD])
        except SubscriberError as exc:
            return JSONResponse({"error": str(exc)}, status_code=422)
        except DeliveryError as exc:
            log.warning("subscribe: %s", exc)
            return JSONResponse({"error": NOT_SENT}, status_code=503)
        return JSONResponse({"status": "pending", "message": CHECK_INBOX}, status_code=202)

    return [
        Route("/subscribe", show_form, methods=["GET"], name="subscribe"),
        Route("/subscribe", submit_form, methods=["POST"]),
        Route("/api/subscribe", submit_json, methods=["POST"], name="api_subscribe"),
    ]
