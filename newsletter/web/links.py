"""The signed links from emails: unsubscribe (page and RFC 8058 one-click) and confirm.

A GET never changes anything (mail scanners follow links): it shows a page whose button
POSTs back to the same URL. A POST whose body has ``List-Unsubscribe=One-Click`` is the
mailbox provider's one-click unsubscribe (RFC 8058) and gets a short plain answer.
A tampered, foreign or absurd token gets 400 and an expired confirmation link 410; neither
changes anything, and neither does a body over the app's size limit (413, checked first).
Unsubscribe links never expire.
"""

from __future__ import annotations

import logging

from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from newsletter import app
from newsletter.app import links
from newsletter.app.links import LinkExpired, Outcome
from newsletter.errors import TokenError
from newsletter.models import SubscriberState
from newsletter.web.pages import Pages

log = logging.getLogger(__name__)

ONE_CLICK_FIELD = "List-Unsubscribe"
ONE_CLICK_VALUE = "One-Click"


async def _form_fields(request: Request) -> dict[str, str]:
    """The POSTed form (urlencoded or multipart, as RFC 8058 allows); empty if unreadable.

    A body over the app's size limit is not unreadable: the 413 goes out, before anything
    changes.
    """
    try:
        async with request.form(max_files=0, max_fields=20) as form:
            return {key: value for key, value in form.items() if isinstance(value, str)}
    except HTTPException:
        raise
    except Exception:  # a malformed body is treated as an empty form
        return {}


def _status_for(error: TokenError) -> int:
    return 410 if isinstance(error, LinkExpired) else 400


def routes(ctx: app.Context, pages: Pages) -> list[Route]:
    def link_error(request: Request, error: TokenError) -> Response:
        expired = isinstance(error, LinkExpired)
        return pages.render(
            request,
            "link_error",
            status=_status_for(error),
            public=True,
            title="This link has expired" if expired else "This link is not valid",
            message=str(error),
        )

    async def unsubscribe_page(request: Request) -> Response:
        token = request.path_params["token"]
        try:
            link = await run_in_threadpool(links.open_link, ctx, token, links.UNSUBSCRIBE)
        except TokenError as exc:
            return link_error(request, exc)
        already = link.subscriber.state is SubscriberState.UNSUBSCRIBED
        return pages.render(
            request,
            "unsubscribe",
            public=True,
            subscriber=link.subscriber,
            done=already,
            already=already,
        )

    async def unsubscribe_post(request: Request) -> Response:
        token = request.path_params["token"]
        fields = await _form_fields(request)
        one_click = fields.get(ONE_CLICK_FIELD) == ONE_CLICK_VALUE
        try:
            result = await run_in_threadpool(links.unsubscribe, ctx, token)
        except TokenError as exc:
            if one_click:
                return PlainTextResponse(str(exc), status_code=_status_for(exc))
            return link_error(request, exc)
        already = result.outcome is Outcome.ALREADY
        if one_click:
            return PlainTextResponse("already unsubscribed" if already else "unsubscribed")
        return pages.render(
            request,
            "unsubscribe",
            public=True,
            subscriber=result.subscriber,
            done=True,
            already=already,
        )

    async def confirm_page(request: Request) -> Response:
        token = request.path_params["token"]
        try:
            link = await run_in_threadpool(links.open_link, ctx, token, links.CONFIRM)
        except TokenError as exc:
            return link_error(request, exc)
        state = link.subscriber.state
        if link.used or state is SubscriberState.ACTIVE:
            outcome = Outcome.ALREADY
        elif state is SubscriberState.PENDING:
            outcome = None  # show the button
        else:
            outcome = Outcome.STALE
        return pages.render(
            request, "confirm", public=True, subscriber=link.subscriber, outcome=outcome
        )

    async def confirm_post(request: Request) -> Response:
        token = request.path_params["token"]
        await request.body()  # read first: a body over the size limit is a 413, nothing done
        try:
            result = await run_in_threadpool(links.confirm, ctx, token)
        except TokenError as exc:
            return link_error(request, exc)
        return pages.render(
            request, "confirm", public=True, subscriber=result.subscriber, outcome=result.outcome
        )

    return [
        Route("/unsubscribe/{token}", unsubscribe_page, methods=["GET"], name="unsubscribe"),
        Route("/unsubscribe/{token}", unsubscribe_post, methods=["POST"]),
        Route("/confirm/{token}", confirm_page, methods=["GET"], name="confirm"),
        Route("/confirm/{token}", confirm_post, methods=["POST"]),
    ]
