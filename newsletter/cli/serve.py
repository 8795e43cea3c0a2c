"""``newsletter serve``: the local web app (preview, archive, unsubscribe, subscribe) on uvicorn."""

from __future__ import annotations

import logging
import signal
import socket
from types import FrameType
from typing import TYPE_CHECKING

import click

from newsletter.cli.base import CliState, pass_state
from newsletter.errors import ConfigError, NewsletterError, UsageError

if TYPE_CHECKING:
    from collections.abc import Callable
    from datetime import datetime

    from newsletter.app import Context
    from newsletter.config import Settings

log = logging.getLogger(__name__)
STOP_GRACE_SECONDS = 5.0  # beyond the SMTP timeout, for the confirmation emails in flight


def _listen(host: str, port: int) -> socket.socket:
    """Bind now, so a busy port is one clear line instead of a server log."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise UsageError(f"cannot listen on {host}:{port}: unknown host ({exc.strerror})") from None
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
    except OSError as exc:
        sock.close()
        hint = " (choose another with --port)" if exc.errno in (98, 48) else ""
        raise UsageError(f"cannot listen on {host}:{port}: {exc.strerror}{hint}") from None
    return sock


@click.command()
@click.option("--host", help="Address to listen on. Default: [web] host (127.0.0.1).")
@click.option("--port", type=click.IntRange(0, 65535), help="Port. Default: [web] port (8000).")
@pass_state
def serve(state: CliState, host: str | None, port: int | None) -> None:
    """Run the web app: the subscribers' pages, the archive, and behind a login the admin
    pages and the preview of the next digest.

    It listens on loopback unless told otherwise; in production put a TLS proxy in front and
    set [web] base_url to its https address. Accounts: `newsletter admin add-user`. The
    preview reloads by itself when a template, an article or the config file changes. It
    also sends the confirmation emails of sign-ups, in the background. Ctrl-C stops it.
    """
    import uvicorn

    from newsletter.app.confirmations import ConfirmationQueue
    from newsletter.config import is_loopback_host
    from newsletter.web import create_app

    settings = state.settings
    host = host or settings.web.host
    port = settings.web.port if port is None else port
    web = settings.web
    problem = web.forgeable_links_problem()
    if problem:  # the pages would honour links anyone can forge
        raise ConfigError(problem)
    for warning in (web.plain_http_warning(), _default_among_previous(settings)):
        if warning:
            click.echo(f"warning: {warning}", err=True)
    if not is_loopback_host(host):
        click.echo(
            f"warning: listening on {host}: logins and admin pages travel in clear text unless "
            "a TLS proxy is in front; set [web] base_url to its https address",
            err=True,
        )
    ctx = state.context()
    app = create_app(ctx, next_run=_next_run(settings))
    sock = _listen(host, port)
    if not _has_admin_users(ctx):
        click.echo(
            "note: nobody can log in to /admin and /preview yet: newsletter admin add-user NAME",
            err=True,
        )
    bound_port = sock.getsockname()[1]
    shown = f"[{host}]" if ":" in host else host
    click.echo(f"serving on http://{shown}:{bound_port}/  (admin: /admin); Ctrl-C to stop")
    verbose = logging.getLogger("newsletter").getEffectiveLevel() <= logging.DEBUG
    config = uvicorn.Config(
        app,
        log_config=None,  # keep the logging configured by the CLI
        log_level="info" if verbose else "warning",
        access_log=verbose,
        lifespan="off",
        # X-Forwarded-For is read by the app, from [web] trusted_proxies only: uvicorn's
        # default would trust it from any local process.
        proxy_headers=False,
    )
    # Sign-ups are queued by the requests; this thread mails them (and retries).
    confirmations = ConfirmationQueue(state.context())
    confirmations.start()
    # uvicorn shuts down gracefully on SIGINT/SIGTERM, then raises the signal again for the
    # previous handler: this one, so that stopping the server is a normal exit.
    previous = {sig: signal.signal(sig, _note_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        uvicorn.Server(config).run(sockets=[sock])
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        confirmations.stop(timeout=settings.smtp.timeout + STOP_GRACE_SECONDS)
    click.echo("stopped")


def _has_admin_users(ctx: Context) -> bool:
    from newsletter.app import users

    return bool(users.list_users(ctx))


def _next_run(settings: Settings) -> Callable[[datetime], datetime | None]:
    """The dashboard's next scheduled run, from ``[schedule]`` (None if it cannot be read)."""
    from newsletter.schedule import Schedule

    def next_run(now: datetime) -> datetime | None:
        try:
            fires = Schedule.from_settings(settings.schedule).next_fires(now, 1)
        except NewsletterError as exc:
            log.warning("dashboard: no next run: %s", exc)
            return None
        return fires[0] if fires else None

    return next_run


def _default_among_previous(settings: Settings) -> str | None:
    from newsletter.config import DEFAULT_WEB_SECRET

    previous = [s.get_secret_value() for s in settings.web.previous_secrets]
    if DEFAULT_WEB_SECRET not in previous:
        return None
    return (
        "[web] previous_secrets holds the built-in default: anyone can forge unsubscribe "
        "links until you remove it (confirmation links signed with it are refused)"
    )


def _note_stop(signum: int, frame: FrameType | None) -> None:
    log.debug("%s after the server stopped", signal.Signals(signum).name)
