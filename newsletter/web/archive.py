"""The archive: every sent digest, as a list and as pages, from the database."""

from __future__ import annotations

from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from newsletter import app
from newsletter.message import fill_tokens
from newsletter.models import DigestState
from newsletter.personalization import TokenSet
from newsletter.store import digests as digest_rows
from newsletter.web.pages import Pages, email_response

# Personal fields in archived digests: nobody in particular.
NEUTRAL_VALUES = {"name": "reader", "email": "", "unsubscribe_url": "#"}


def _sent(ctx: app.Context) -> list[digest_rows.DigestSummary]:
    with ctx.store.atomic() as conn:
        return digest_rows.list_digests(conn, sent_only=True)


def _one(ctx: app.Context, digest_id: int) -> tuple[digest_rows.StoredDigest, str]:
    with ctx.store.atomic() as conn:
        digest = digest_rows.get_digest(conn, digest_id)
    if digest is None or digest.state is not DigestState.SENT:
        raise HTTPException(404, f"there is no sent digest #{digest_id}")
    tokens = TokenSet(nonce=digest.token_nonce)
    return digest, fill_tokens(digest.html, tokens, NEUTRAL_VALUES, escape=True)


def routes(ctx: app.Context, pages: Pages) -> list[Route]:
    async def listing(request: Request) -> Response:
        digests = await run_in_threadpool(_sent, ctx)
        return pages.render(request, "archive", digests=digests)

    async def page(request: Request) -> Response:
        digest, html = await run_in_threadpool(_one, ctx, request.path_params["digest_id"])
        return pages.render(request, "archive_digest", digest=digest, html=html)

    async def email_html(request: Request) -> Response:
        _, html = await run_in_threadpool(_one, ctx, request.path_params["digest_id"])
        return email_response(html)

    return [
        Route("/archive", listing, name="archive"),
        Route("/archive/{digest_id:int}", page, name="archive_digest"),
        Route("/archive/{digest_id:int}/email.html", email_html, name="archive_html"),
    ]
