"""The archive pages: every sent digest, as a list, one by one, and as an Atom feed.

Public unless ``[web] public_archive = false``; then only logged-in operators see them.
The pages show no subscriber's data (:mod:`newsletter.app.archive`).
"""

from __future__ import annotations

from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from newsletter import app
from newsletter.app.archive import (
    ArchivedDigest,
    archived_digest,
    digest_for_archive_key,
    feed_entries,
    sent_digests,
)
from newsletter.web.auth import Auth
from newsletter.web.pages import email_response

FEED_ENTRIES = 20
FEED_TEMPLATE = "web/archive_feed.xml.j2"


def _one(ctx: app.Context, digest_id: int) -> ArchivedDigest:
    archived = archived_digest(ctx, digest_id)
    if archived is None:
        raise HTTPException(404, f"there is no sent digest #{digest_id}")
    return archived


def routes(ctx: app.Context, auth: Auth) -> list[Route]:
    base_url = ctx.settings.web.base_url

    async def _public(request: Request) -> bool:
        """A subscriber's view (no operator links) unless an operator is logged in."""
        return await auth.session(request) is None

    async def listing(request: Request) -> Response:
        digests = await run_in_threadpool(sent_digests, ctx)
        return auth.render(request, "archive", digests=digests, public=await _public(request))

    async def page(request: Request) -> Response:
        archived = await run_in_threadpool(_one, ctx, request.path_params["digest_id"])
        await auth.session(request)
        return auth.render(request, "archive_digest", digest=archived.digest, html=archived.html)

    async def email_html(request: Request) -> Response:
        archived = await run_in_threadpool(_one, ctx, request.path_params["digest_id"])
        return email_response(archived.html)

    async def by_key(request: Request) -> Response:
        """The "View in browser" link of a digest: on to its page."""
        digest_id = await run_in_threadpool(digest_for_archive_key, ctx, request.path_params["key"])
        if digest_id is None:
            raise HTTPException(404, "there is no sent digest at this address")
        return RedirectResponse(f"/archive/{digest_id}", status_code=302)

    async def feed(request: Request) -> Response:
        entries = await run_in_threadpool(feed_entries, ctx, limit=FEED_ENTRIES)
        newest = entries[0].digest if entries else None
        xml = auth.pages.env.get_template(FEED_TEMPLATE).render(
            newsletter=ctx.settings.newsletter,
            base_url=base_url,
            entries=entries,
            updated=(newest.finished_at or newest.created_at) if newest else ctx.clock(),
        )
        return Response(
            xml,
            media_type="application/atom+xml; charset=utf-8",
            headers={"X-Content-Type-Options": "nosniff", "Cache-Control": "max-age=300"},
        )

    public = ctx.settings.web.public_archive
    guard = (lambda handler: handler) if public else auth.required
    return [
        Route("/archive", guard(listing), name="archive"),
        Route("/archive/feed.xml", guard(feed), name="archive_feed"),
        Route("/archive/d/{key}", guard(by_key), name="archive_key"),
        Route("/archive/{digest_id:int}", guard(page), name="archive_digest"),
        Route("/archive/{digest_id:int}/email.html", guard(email_html), name="archive_html"),
    ]
