"""The admin pages under ``/admin``: dashboard, subscribers, one digest (all need a login).

State-changing forms (add, unsubscribe, retry failed) POST with the session's CSRF token and
answer with a redirect (post/redirect/get), so reloading a page never does it twice.
"""

from __future__ import annotations

import logging
import tempfile
import threading
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlencode

from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response, StreamingResponse
from starlette.routing import Route

from newsletter import app
from newsletter.app import admin
from newsletter.errors import NewsletterError, SubscriberError
from newsletter.models import SubscriberState
from newsletter.web.auth import Auth

log = logging.getLogger(__name__)

NOTICES = {
    "added": "Added {email} as active.",
    "unsubscribed": "Unsubscribed {email}.",
    "already": "{email} was already unsubscribed.",
    "retry": "The failed deliveries are being queued again and sent.",
    "retrying": "A retry of this digest is already running.",
}
_CHUNK = 64 * 1024


def _int_param(request: Request, name: str) -> int | None:
    value = request.query_params.get(name, "")
    return int(value) if value.isascii() and value.isdigit() and len(value) <= 12 else None


def _state_param(request: Request) -> SubscriberState | None:
    value = request.query_params.get("state", "")
    return SubscriberState(value) if value in SubscriberState.__members__.values() else None


class Retries:
    """``resend --failed`` runs started from the digest page, each in its own thread, and
    what the last one of each digest came to (shown on its page; kept in memory only).

    The send is resumable like any other: if the server stops mid-way, the next send or
    scheduled run finishes it.
    """

    def __init__(self, ctx: app.Context) -> None:
        self.ctx = ctx
        self._threads: dict[int, threading.Thread] = {}
        self._outcomes: dict[int, str] = {}
        self._lock = threading.Lock()

    def start(self, digest_id: int) -> bool:
        """Start a retry of ``digest_id``; False if one is still running."""
        with self._lock:
            running = self._threads.get(digest_id)
            if running is not None and running.is_alive():
                return False
            thread = threading.Thread(
                target=self._run, args=(digest_id,), name=f"retry-digest-{digest_id}", daemon=True
            )
            self._threads[digest_id] = thread
            self._outcomes.pop(digest_id, None)
        thread.start()
        return True

    def status(self, digest_id: int) -> str | None:
        """ "running", or how the last retry of ``digest_id`` ended (None: none since start)."""
        with self._lock:
            thread = self._threads.get(digest_id)
            if thread is not None and thread.is_alive():
                return "The retry is running: reload to follow."
            return self._outcomes.get(digest_id)

    def _run(self, digest_id: int) -> None:
        try:
            summary = admin.retry_failed(self.ctx, digest_id)
        except NewsletterError as exc:
            log.error("retry of digest %s: %s", digest_id, exc)
            outcome = f"The last retry stopped: {exc}"
        except Exception as exc:
            log.exception("retry of digest %s failed unexpectedly", digest_id)
            outcome = f"The last retry stopped: {type(exc).__name__}"
        else:
            report = summary.report
            outcome = (
                f"The last retry queued {summary.requeued} deliveries again: "
                f"{report.sent if report else 0} sent, {report.failed if report else 0} failed."
            )
            log.info("retry of digest %s: %s", digest_id, outcome)
        with self._lock:
            self._outcomes[digest_id] = outcome

    def join(self, timeout: float) -> None:
        """Wait for the running retries (tests, shutdown)."""
        with self._lock:
            threads = list(self._threads.values())
        for thread in threads:
            thread.join(timeout)


def _export_chunks(ctx: app.Context) -> Iterator[bytes]:
    """The CSV export, written to a temporary file first (the list may be large)."""
    with tempfile.TemporaryFile("w+", encoding="utf-8", newline="") as spool:
        admin.export(ctx, spool)
        spool.seek(0)
        while chunk := spool.read(_CHUNK):
            yield chunk.encode("utf-8")


def routes(
    ctx: app.Context, auth: Auth, retries: Retries, *, next_run: admin.NextRun | None
) -> list[Route]:
    def subscribers_url(**params: Any) -> str:
        query = urlencode({k: v for k, v in params.items() if v})
        return "/admin/subscribers" + (f"?{query}" if query else "")

    async def dashboard(request: Request) -> Response:
        data = await run_in_threadpool(admin.dashboard, ctx, next_run=next_run)
        return auth.render(request, "admin_dashboard", dashboard=data)

    async def subscriber_list(request: Request) -> Response:
        query = request.query_params.get("q", "")[:200]
        state = _state_param(request)
        page = await run_in_threadpool(
            lambda: admin.subscribers_page(
                ctx,
                query=query,
                state=state,
                before=_int_param(request, "before"),
                after=_int_param(request, "after"),
            )
        )
        notice = NOTICES.get(request.query_params.get("notice", ""))
        email = request.query_params.get("email", "")[:320]
        return auth.render(
            request,
            "admin_subscribers",
            page=page,
            query=query,
            state=state.value if state else "",
            states=[s.value for s in SubscriberState],
            notice=notice.format(email=email) if notice else None,
            error=None,
            page_url=lambda **p: subscribers_url(q=query, state=state.value if state else "", **p),
        )

    async def add(request: Request) -> Response:
        fields = await auth.checked_form(request)
        if fields is None:
            return auth.forbidden(request)
        email, name = fields.get("email", "").strip(), fields.get("name", "").strip()
        try:
            added = await run_in_threadpool(admin.add_subscriber, ctx, email, name)
        except SubscriberError as exc:
            page = await run_in_threadpool(admin.subscribers_page, ctx)
            return auth.render(
                request,
                "admin_subscribers",
                status=422,
                page=page,
                query="",
                state="",
                states=[s.value for s in SubscriberState],
                notice=None,
                error=str(exc),
                page_url=lambda **p: subscribers_url(**p),
            )
        log.info("admin: %s added %s", auth.user_name(request), added.email)
        url = subscribers_url(q=added.email, notice="added", email=added.email)
        return RedirectResponse(url, status_code=303)

    async def unsubscribe(request: Request) -> Response:
        fields = await auth.checked_form(request)
        if fields is None:
            return auth.forbidden(request)
        try:
            address, changed = await run_in_threadpool(
                admin.unsubscribe, ctx, fields.get("email", "")
            )
        except SubscriberError as exc:
            raise HTTPException(404, str(exc)) from None
        log.info("admin: %s unsubscribed %s", auth.user_name(request), address)
        back = fields.get("back", "")
        if not back.startswith("/admin/subscribers"):
            back = subscribers_url(q=address)
        separator = "&" if "?" in back else "?"
        notice = urlencode({"notice": "unsubscribed" if changed else "already", "email": address})
        return RedirectResponse(f"{back}{separator}{notice}", status_code=303)

    async def export(request: Request) -> Response:
        stamp = ctx.clock().strftime("%Y%m%d-%H%M%S")
        return StreamingResponse(
            _export_chunks(ctx),
            media_type="text/csv; charset=utf-8",
            headers={
                "Content-Disposition": f'attachment; filename="subscribers-{stamp}.csv"',
                "Cache-Control": "no-store",
                "X-Content-Type-Options": "nosniff",
            },
        )

    async def digest(request: Request) -> Response:
        digest_id = request.path_params["digest_id"]
        after = _int_param(request, "failed_after") or 0
        detail = await run_in_threadpool(
            lambda: admin.digest_detail(ctx, digest_id, failed_after=after)
        )
        if detail is None:
            raise HTTPException(404, f"there is no digest #{digest_id}")
        notice = NOTICES.get(request.query_params.get("notice", ""))
        return auth.render(
            request,
            "admin_digest",
            detail=detail,
            notice=notice,
            retry_status=retries.status(digest_id),
        )

    async def retry(request: Request) -> Response:
        digest_id = request.path_params["digest_id"]
        fields = await auth.checked_form(request)
        if fields is None:
            return auth.forbidden(request)
        if await run_in_threadpool(admin.digest_detail, ctx, digest_id) is None:
            raise HTTPException(404, f"there is no digest #{digest_id}")
        log.info("admin: %s retries digest %s", auth.user_name(request), digest_id)
        started = retries.start(digest_id)
        notice = "retry" if started else "retrying"
        return RedirectResponse(f"/admin/digests/{digest_id}?notice={notice}", status_code=303)

    guarded = auth.required
    return [
        Route("/admin", guarded(dashboard), name="admin"),
        Route("/admin/subscribers", guarded(subscriber_list), name="admin_subscribers"),
        Route("/admin/subscribers/add", guarded(add), methods=["POST"]),
        Route("/admin/subscribers/unsubscribe", guarded(unsubscribe), methods=["POST"]),
        Route("/admin/subscribers.csv", guarded(export), name="admin_export"),
        Route("/admin/digests/{digest_id:int}", guarded(digest), name="admin_digest"),
        Route("/admin/digests/{digest_id:int}/retry", guarded(retry), methods=["POST"]),
    ]
