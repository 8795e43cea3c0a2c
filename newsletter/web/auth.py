"""Logging in to the admin pages: ``/login``, ``/logout``, and the guard on private pages.

The session cookie is signed, ``HttpOnly``, ``SameSite=Lax`` and ``Secure`` when
``[web] base_url`` is https. Every state-changing admin form carries the session's CSRF token
in a hidden field (``csrf_token``), checked here; the login form, which has no session yet,
carries one that must match a cookie set with the form (double submit). Failed logins are
slowed down per user and per client by :mod:`newsletter.app.login`.
"""

from __future__ import annotations

import hmac
import logging
import re
import secrets
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import quote

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from newsletter import app
from newsletter.app import login
from newsletter.app.login import Session
from newsletter.web.pages import Pages
from newsletter.web.ratelimit import ClientAddress

log = logging.getLogger(__name__)

SESSION_COOKIE = "newsletter_session"
DEVICE_COOKIE = "newsletter_device"
LOGIN_COOKIE = "newsletter_login"
CSRF_FIELD = "csrf_token"
_SCOPE_KEY = "newsletter.session"  # where a request keeps its looked-up session
MAX_FIELD_CHARS = 1100  # a password may have 1024 characters
# Where a login may send the browser on: our own private pages only, never another site.
_NEXT = re.compile(r"/(admin|preview|archive)(/[A-Za-z0-9._~/%-]*)?(\?[A-Za-z0-9._~=&%+-]*)?")
FORM_EXPIRED = (
    "This form has expired or did not come from this site: reload the page and try again."
)

Handler = Callable[[Request], Awaitable[Response]]


def safe_next(value: str | None) -> str:
    """Where to go after logging in: ``value`` if it is one of our private pages."""
    return value if value and _NEXT.fullmatch(value) else "/admin"


def same_token(sent: str | None, expected: str | None) -> bool:
    """Constant-time comparison of a form's token with the expected one."""
    if not sent or not expected:
        return False
    encoded = sent.encode("utf-8", "surrogatepass")
    return hmac.compare_digest(encoded, expected.encode("utf-8", "surrogatepass"))


async def form_fields(request: Request) -> dict[str, str]:
    """The POSTed form's text fields (each cut to ``MAX_FIELD_CHARS``); empty if unreadable."""
    try:
        async with request.form(max_files=0, max_fields=20) as form:
            return {k: v[:MAX_FIELD_CHARS] for k, v in form.items() if isinstance(v, str)}
    except Exception:  # a malformed body is an empty form: the token check refuses it
        return {}


class Auth:
    """Sessions for the admin pages: who is logged in, the guard, and the login pages."""

    def __init__(self, ctx: app.Context, pages: Pages) -> None:
        self.ctx = ctx
        # Failed logins count per client too: behind a proxy, only [web] trusted_proxies
        # may say who the client is.
        self.client = ClientAddress(ctx.settings.web.trusted_proxies)
        self.pages = pages
        self.secure = ctx.settings.web.base_url.startswith("https://")

    async def session(self, request: Request) -> Session | None:
        """The logged-in operator of this request, if any (looked up once per request)."""
        if _SCOPE_KEY not in request.scope:
            cookie = request.cookies.get(SESSION_COOKIE)
            request.scope[_SCOPE_KEY] = (
                await run_in_threadpool(login.current_session, self.ctx, cookie) if cookie else None
            )
        found: Session | None = request.scope[_SCOPE_KEY]
        return found

    @staticmethod
    def user_name(request: Request) -> str:
        """Who is logged in, on a page behind :meth:`required` (for the log)."""
        session: Session | None = request.scope.get(_SCOPE_KEY)
        return session.user_name if session else "nobody"

    def required(self, handler: Handler) -> Handler:
        """``handler`` for logged-in operators only; anyone else is sent to ``/login``."""

        async def guarded(request: Request) -> Response:
            if await self.session(request) is None:
                if request.method != "GET":  # a form from an ended session: log in, start over
                    return RedirectResponse("/login", status_code=303)
                target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
                return RedirectResponse(f"/login?next={quote(target, safe='')}", status_code=303)
            return await handler(request)

        return guarded

    async def checked_form(self, request: Request) -> dict[str, str] | None:
        """The POSTed form if its CSRF token is the session's; None (refuse with 403) if not."""
        session = await self.session(request)
        fields = await form_fields(request)
        if session is None or not same_token(fields.get(CSRF_FIELD), session.csrf_token):
            log.warning("%s %s: CSRF token missing or wrong", request.method, request.url.path)
            return None
        return fields

    def render(
        self, request: Request, page: str, /, *, status: int = 200, **context: Any
    ) -> Response:
        """An admin page, with the session (user name, CSRF token for its forms)."""
        session: Session | None = request.scope.get(_SCOPE_KEY)
        return self.pages.render(request, page, status=status, session=session, **context)

    def forbidden(self, request: Request) -> Response:
        return self.render(request, "forbidden", status=403, message=FORM_EXPIRED)

    def _set_cookie(self, response: Response, name: str, value: str, **options: Any) -> None:
        response.set_cookie(
            name, value, httponly=True, samesite="lax", secure=self.secure, **options
        )

    def routes(self) -> list[Route]:
        return [
            Route("/login", self.login_page, methods=["GET"], name="login"),
            Route("/login", self.login_submit, methods=["POST"]),
            Route("/logout", self.logout, methods=["POST"], name="logout"),
        ]

    def _login_form(
        self,
        request: Request,
        *,
        status: int = 200,
        error: str | None = None,
        name: str = "",
        next_page: str | None = None,
        retry_after: int = 0,
    ) -> Response:
        token = secrets.token_urlsafe(24)
        response = self.render(
            request,
            "login",
            status=status,
            error=error,
            username=name,
            login_token=token,
            next=safe_next(next_page or request.query_params.get("next")),
        )
        self._set_cookie(response, LOGIN_COOKIE, token, path="/login")
        if retry_after:
            response.headers["Retry-After"] = str(retry_after)
        return response

    async def login_page(self, request: Request) -> Response:
        if await self.session(request) is not None:
            return RedirectResponse(safe_next(request.query_params.get("next")), status_code=303)
        return self._login_form(request)

    async def login_submit(self, request: Request) -> Response:
        fields = await form_fields(request)
        name = fields.get("username", "").strip()
        next_page = fields.get("next")
        if not same_token(fields.get(CSRF_FIELD), request.cookies.get(LOGIN_COOKIE)):
            return self._login_form(
                request, status=403, error=FORM_EXPIRED, name=name, next_page=next_page
            )
        result = await run_in_threadpool(
            login.log_in,
            self.ctx,
            name,
            fields.get("password", ""),
            client=self.client.of(request),
            device_cookie=request.cookies.get(DEVICE_COOKIE),
        )
        if result.wait_seconds:
            log.warning("login: delayed for %r from %s", name, self.client.of(request))
            wait = result.wait_seconds
            error = f"Too many failed attempts: try again in {wait} second{'s' * (wait != 1)}."
            return self._login_form(
                request, status=429, error=error, name=name, next_page=next_page, retry_after=wait
            )
        if result.user is None:
            log.warning("login: wrong name or password for %r", name)
            error = "Wrong user name or password."
            return self._login_form(
                request, status=403, error=error, name=name, next_page=next_page
            )
        cookie, _ = await run_in_threadpool(login.start_session, self.ctx, result.user)
        log.info("login: %s logged in", result.user.name)
        target = safe_next(fields.get("next"))
        response = RedirectResponse(target, status_code=303)
        max_age = int(login.SESSION_LIFETIME.total_seconds())
        self._set_cookie(response, SESSION_COOKIE, cookie, path="/", max_age=max_age)
        if result.device_cookie:
            device_age = int(login.DEVICE_LIFETIME.total_seconds())
            self._set_cookie(
                response, DEVICE_COOKIE, result.device_cookie, path="/login", max_age=device_age
            )
        response.delete_cookie(LOGIN_COOKIE, path="/login")
        return response

    async def logout(self, request: Request) -> Response:
        fields = await self.checked_form(request)
        if fields is None:
            if await self.session(request) is None:  # already logged out: nothing to end
                return RedirectResponse("/login", status_code=303)
            return self.forbidden(request)
        await run_in_threadpool(login.end_session, self.ctx, request.cookies.get(SESSION_COOKIE))
        response = RedirectResponse("/login", status_code=303)
        response.delete_cookie(SESSION_COOKIE, path="/")
        return response
