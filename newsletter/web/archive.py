"""The archive pages: every sent digest, as a list and one by one."""

from __future__ import annotations

from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from newsletter import app
from newsletter.app.archive import ArchivedDigest, archived_digest, sent_digests
from newsletter.web.pages import Pages, email_response


def _one(ctx: app.Context, digest_id: int) -> ArchivedDigest:
    archived = archived_digest(ctx, digest_id)
    if archived is None:
        raise HTTPException(404, f"there is no sent digest #{digest_id}")
    return archived


def routes(ctx: app.Context, pages: Pages) -> list[Route]:
    async def listing(request: Request) -> Response:
        digests = await run_in_threadpool(sent_digests, ctx)
        return pages.render(request, "archive", digests=digests)

    async def page(request: Request) -> Response:
        archived = await run_in_threadpool(_one, ctx, request.path_params["digest_id"])
        return pages.render(request, "archive_digest", digest=archived.digest, html=archived.html)

    async def email_html(request: Request) -> Response:
        archived = await run_in_threadpool(_one, ctx, request.path_params["digest_id"])
        return email_response(archived.html)

    return [
        Route("/archive", listing, name="archive"),
        Route("/archive/{digest_id:int}", page, name="archive_digest"),
        Route("/archive/{digest_id:int}/email.html", email_html, name="archive_html"),
    ]
