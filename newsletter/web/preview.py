"""The preview: the next digest as it would be sent, reloaded when its inputs change.

For logged-in operators only (the next digest is not public yet).

The page polls ``/preview/fingerprint`` (a hash of the modification times of the template
folders, the articles folder and the config file) and reloads itself when it changes. An
edited config file is read again here, so the preview follows it without a restart.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from newsletter import app
from newsletter.app.digest import NextDigest
from newsletter.app.preview import PREVIEW_VALUES, preview_digest, preview_inputs, sample_copy
from newsletter.config import Settings, load_settings
from newsletter.errors import NewsletterError
from newsletter.web.auth import Auth
from newsletter.web.pages import email_response

VIEWS = {"desktop": 600, "phone": 375}
POLL_MS = 1500  # how often the page asks for the fingerprint; it backs off to 15 s on errors


def _entries(root: Path) -> Iterator[tuple[str, int, int]]:
    """``(path, mtime_ns, size)`` of every visible file under ``root``, in a stable order."""
    if root.is_file():
        st = root.stat()
        yield str(root), st.st_mtime_ns, st.st_size
        return
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            if name.startswith(".") or name.endswith("~"):  # editor swap and backup files
                continue
            try:
                st = os.stat(os.path.join(folder, name))
            except OSError:  # removed while walking
                continue
            yield os.path.join(folder, name), st.st_mtime_ns, st.st_size


def fingerprint(settings: Settings) -> str:
    """Changes whenever a template, an article file or the config file changes."""
    digest = hashlib.sha256()
    for root in preview_inputs(settings):
        digest.update(f"{root}\n".encode())
        if root.exists():
            for path, mtime, size in _entries(root):
                digest.update(f"{path}\0{mtime}\0{size}\n".encode())
    return digest.hexdigest()[:20]


def _stamp(path: Path | None) -> tuple[int, int] | None:
    try:
        st = path.stat() if path else None
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size) if st else None


class PreviewSource:
    """The context previews use: the server's, with settings re-read when the file changes."""

    def __init__(self, base: app.Context) -> None:
        self.base = base
        self._ctx = base
        self._config = _stamp(base.settings.config_path)
        self._lock = threading.Lock()

    def context(self) -> app.Context:
        """The current context; ``ConfigError`` while the edited config file is invalid."""
        path = self.base.settings.config_path
        if path is None:
            return self._ctx
        with self._lock:
            stamp = _stamp(path)
            if stamp != self._config:
                settings = load_settings(path)
                self._ctx = app.Context(settings, self.base.store, self.base.clock)
                self._config = stamp
            return self._ctx

    def settings(self) -> Settings:
        try:
            return self.context().settings
        except NewsletterError:
            return self._ctx.settings


@dataclass(frozen=True)
class Preview:
    upcoming: NextDigest | None
    problems: list[str]
    html: str = ""
    text: str = ""
    size: int = 0
    limit: int = 0


def build_preview(source: PreviewSource) -> Preview:
    """The next digest for the preview page, with the sample reader's fields filled in."""
    ctx = source.context()
    upcoming, gathered = preview_digest(ctx)
    if upcoming is None:
        return Preview(None, gathered.problems)
    html, text = sample_copy(upcoming)
    return Preview(
        upcoming,
        gathered.problems,
        html=html,
        text=text,
        size=len(upcoming.rendered.html.encode("utf-8")),
        limit=ctx.settings.digest.max_html_bytes,
    )


def routes(source: PreviewSource, auth: Auth) -> list[Route]:
    async def page(request: Request) -> Response:
        view = request.query_params.get("view", "desktop")
        view = view if view in VIEWS else "desktop"
        stamp = await run_in_threadpool(fingerprint, source.settings())
        try:
            preview: Preview | None = await run_in_threadpool(build_preview, source)
            error = None
        except NewsletterError as exc:
            preview, error = None, str(exc)
        return auth.render(
            request,
            "preview",
            preview=preview,
            error=error,
            view=view,
            views=VIEWS,
            fingerprint=stamp,
            poll_ms=POLL_MS,
            sample=PREVIEW_VALUES,
        )

    async def email_html(request: Request) -> Response:
        preview = await run_in_threadpool(build_preview, source)
        if preview.upcoming is None:
            return PlainTextResponse("no new articles: there is nothing to preview", 404)
        return email_response(preview.html)

    async def email_text(request: Request) -> Response:
        preview = await run_in_threadpool(build_preview, source)
        if preview.upcoming is None:
            return PlainTextResponse("no new articles: there is nothing to preview", 404)
        return PlainTextResponse(preview.text, headers={"Cache-Control": "no-store"})

    async def current_fingerprint(request: Request) -> Response:
        stamp = await run_in_threadpool(fingerprint, source.settings())
        return JSONResponse({"fingerprint": stamp}, headers={"Cache-Control": "no-store"})

    guarded = auth.required
    return [
        Route("/preview", guarded(page), name="preview"),
        Route("/preview/email.html", guarded(email_html), name="preview_html"),
        Route("/preview/email.txt", guarded(email_text), name="preview_text"),
        Route("/preview/fingerprint", guarded(current_fingerprint), name="preview_fingerprint"),
    ]
