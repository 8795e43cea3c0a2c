"""Commands that build and send digests: demo, send-now, resend, preview, status, inbox."""

from __future__ import annotations

import shutil
import sys
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from typing import TYPE_CHECKING

import click

from newsletter.cli.base import CliState, StopSignal, pass_state, stop_on_signals
from newsletter.errors import DeliveryError, UsageError

if TYPE_CHECKING:
    from newsletter import app
    from newsletter.app.send import SendReport
    from newsletter.config import Settings


def _report_line(report: SendReport) -> str:
    line = f"{report.sent} sent, {report.failed} failed"
    if report.counts.get("pending"):
        line += f", {report.counts['pending']} left to retry"
    if report.interrupted:
        line += ", stopped early (resumable with send-now)"
    if report.digest_failed:
        line += ": nobody received it"
    return line


def _print_summary(summary: app.SendSummary) -> None:
    for report in summary.resumed:
        click.echo(f"resumed digest {report.digest_id}: {_report_line(report)}")
    if summary.report is not None:
        click.echo(
            f"digest {summary.digest_id} \u201c{summary.subject}\u201d: "
            f"{summary.articles} articles, {_report_line(summary.report)}"
        )
    elif summary.skipped_reason:
        click.echo(f"{summary.skipped_reason}; nothing new was sent.")


def _print_queued(ctx: app.Context, summary: app.SendSummary) -> None:
    from newsletter.app.senders import live_workers

    for digest_id in summary.left_to_workers:
        click.echo(f"unfinished digest {digest_id}: left to the workers")
    if summary.queued is not None:
        click.echo(
            f"digest {summary.digest_id} \u201c{summary.subject}\u201d: {summary.articles} "
            f"articles, queued for {summary.queued} subscribers"
        )
    elif summary.skipped_reason:
        click.echo(f"{summary.skipped_reason}; nothing new was queued.")
    if (summary.queued is not None or summary.left_to_workers) and not live_workers(ctx):
        click.echo("no `newsletter worker` is running on this database yet; start one to send it")


def _fail_if_nobody_received(ctx: app.Context, reports: list[SendReport]) -> None:
    """One line and exit code 3 when a digest of this run reached nobody."""
    from newsletter.app.status import digest_failure_reasons

    if not reports:
        return
    report = reports[0]
    reasons = digest_failure_reasons(ctx, report.digest_id)
    why = f" (most often: {reasons[0][0]})" if reasons else ""
    failed = report.counts.get("failed", 0)
    raise DeliveryError(
        f"digest {report.digest_id} reached nobody: all {failed} deliveries failed{why}; its "
        "articles go out with the next digest. Fix the cause, then "
        f"`newsletter resend {report.digest_id} --failed` (or wait for the next digest)"
    )


def _exit_if_stopped(stop: StopSignal) -> None:
    """Exit 130 (Ctrl-C) or 143 (SIGTERM) when a signal stopped the send, so schedulers see
    it; the digest is resumable."""
    code = stop.exit_code()
    if code is not None:
        click.get_current_context().exit(code)


@click.command("send-now")
@click.option("--dry-run", is_flag=True, help="Show what would be sent; send and mark nothing.")
@click.option(
    "--to",
    "test_address",
    metavar="ADDRESS",
    help="Send one test copy to ADDRESS; mark nothing as sent.",
)
@click.option(
    "--queue",
    is_flag=True,
    help="Only make the digest and its outbox; `newsletter worker` processes deliver it.",
)
@pass_state
def send_now(state: CliState, dry_run: bool, test_address: str | None, queue: bool) -> None:
    """Send the digest of new articles to every active subscriber now.

    Queued confirmation emails go out first. Any digest a previous run left unfinished
    (crash, Ctrl-C, SMTP outage) is finished first too; nobody who got it receives it again.
    With --queue it returns at once and leaves the sending (the new digest, the unfinished
    ones, the confirmation emails) to `newsletter worker`. Exit codes: 0 done, 3 a digest
    reached nobody (its articles go to the next one) or the server could not be used, 130
    stopped by Ctrl-C, 143 stopped by SIGTERM (both resumable).
    """
    from newsletter import app
    from newsletter.app.confirmations import resume_confirmations
    from newsletter.logs import progress_for

    ctx = state.context()
    if queue and (dry_run or test_address):
        raise UsageError("--queue makes the digest for the workers: leave out --dry-run and --to")
    if queue:
        _print_queued(ctx, app.send_now(ctx, queue=True))
        return
    if test_address:
        envelope, upcoming = app.send_test_copy(ctx, test_address)
        click.echo(
            f"test copy of \u201c{upcoming.rendered.subject}\u201d sent to {envelope.recipient}"
        )
        return
    if dry_run:
        _dry_run(ctx)
        return
    with stop_on_signals() as stop:
        resume_confirmations(ctx, stop=stop)  # what the confirmation queue holds goes first
        summary = app.send_now(ctx, stop=stop, progress=progress_for())
    _print_summary(summary)
    _exit_if_stopped(stop)
    _fail_if_nobody_received(ctx, summary.failed)


@click.command()
@click.argument("digest_id", metavar="DIGEST", type=click.IntRange(min=1))
@click.option(
    "--failed",
    is_flag=True,
    help="Queue again the deliveries of DIGEST that failed (required).",
)
@pass_state
def resend(state: CliState, digest_id: int, failed: bool) -> None:
    """Send a digest again to the subscribers whose delivery of it failed.

    Run it after fixing the cause (`newsletter status` shows the reasons). Each failed
    delivery of a still active subscriber is queued again once and sent; running it again
    sends nothing twice. DIGEST is the number `newsletter status` shows.
    """
    from newsletter.app.resend import resend_failed
    from newsletter.logs import progress_for

    if not failed:
        raise UsageError("say which deliveries to send again: --failed")
    ctx = state.context()
    with stop_on_signals() as stop:
        result = resend_failed(ctx, digest_id, stop=stop, progress=progress_for())
    report = result.report
    if report is None:
        click.echo(f"digest {digest_id}: no failed deliveries to send again.")
        return
    click.echo(
        f"digest {digest_id}: {result.requeued} failed deliveries queued again; "
        f"{_report_line(report)}"
    )
    _exit_if_stopped(stop)
    _fail_if_nobody_received(ctx, [report] if report.digest_failed else [])


def _dry_run(ctx: app.Context) -> None:
    from newsletter.app.send import plan_send

    plan = plan_send(ctx)
    for digest_id in plan.unfinished:
        click.echo(f"would first finish unfinished digest {digest_id}")
    upcoming = plan.upcoming
    if upcoming is None:
        click.echo("no new articles since the last digest; nothing would be sent.")
        return
    click.echo(
        f"would send \u201c{upcoming.rendered.subject}\u201d to "
        f"{plan.active_subscribers} active subscribers:"
    )
    for article in upcoming.articles:
        click.echo(f"  {article.published:%Y-%m-%d}  {article.title}")
    size = len(upcoming.rendered.html.encode())
    click.echo(
        f"HTML size {size / 1000:.1f} KB"
        + (" (summaries only)" if upcoming.rendered.summaries_only else "")
    )


@click.command()
@click.option(
    "--output",
    "-o",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write the HTML here and do not open a browser.",
)
@pass_state
def preview(state: CliState, output: Path | None) -> None:
    """Render the next digest without sending or marking anything, and open it in a browser."""
    import webbrowser

    from newsletter.app.preview import preview_digest, sample_copy

    ctx = state.context()
    upcoming, _ = preview_digest(ctx)
    if upcoming is None:
        click.echo("no new articles since the last digest; there is nothing to preview.")
        return
    html, _ = sample_copy(upcoming)
    target = output or (ctx.settings.var_dir / "preview.html")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(html, encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"{target}: cannot write the preview: {exc.strerror}") from exc
    click.echo(
        f"preview of \u201c{upcoming.rendered.subject}\u201d "
        f"({len(upcoming.articles)} articles) written to {target}"
    )
    if output is None and not webbrowser.open(target.resolve().as_uri()):
        click.echo(f"open it in a browser: {target.resolve().as_uri()}")


@click.command()
@click.option("--limit", default=10, show_default=True, help="How many recent digests to list.")
@pass_state
def status(state: CliState, limit: int) -> None:
    """List recent digests: deliveries per state, reasons of failures, bounce and complaint
    rates (hard bounces per delivery attempted, spam complaints per delivery accepted)."""
    from newsletter.app.status import digest_status

    rows = digest_status(state.context(), limit=limit)
    if not rows:
        click.echo("no digests yet.")
        return
    for row in rows:
        counts = ", ".join(f"{n} {s}" for s, n in sorted(row.counts.items())) or "no recipients"
        slot = f" slot {row.slot}" if row.slot else ""
        click.echo(
            f"#{row.id} {row.created_at:%Y-%m-%d %H:%M} UTC{slot} [{row.state}] "
            f"{row.subject}: {counts}"
        )
        for reason, n in row.failures:
            click.echo(f"    {n} failed: {reason}")
        if row.bounce_rate is not None:
            complaints = f"{row.complaint_rate:.2%}" if row.complaint_rate is not None else "-"
            click.echo(
                f"    bounce rate {row.bounce_rate:.1%} ({row.hard_bounces} bounced), "
                f"complaint rate {complaints} ({row.complaints} complaints)"
            )


@click.command()
@click.option("--port", default=8025, show_default=True, help="Port to listen on (127.0.0.1).")
@click.option(
    "--folder",
    type=click.Path(file_okay=False, path_type=Path),
    help="Where to store messages. Default: var/inbox.",
)
@pass_state
def inbox(state: CliState, port: int, folder: Path | None) -> None:
    """Run a local capture SMTP server that stores every message as an .eml file."""
    from newsletter.inbox import CaptureInbox

    target = folder or state.settings.var_dir / "inbox"
    with CaptureInbox(target, port=port), stop_on_signals() as stop:
        click.echo(
            f"capture inbox listening on 127.0.0.1:{port}, saving to {target}; Ctrl-C to stop"
        )
        stop.wait()


DEMO_SUBSCRIBERS = Path(__file__).resolve().parent.parent / "demo_subscribers.csv"


@click.command()
@pass_state
def demo(state: CliState) -> None:
    """Send the sample articles in seeds/ to sample subscribers through a local capture inbox.

    Everything is real (SQLite, SMTP over loopback); state goes to var/demo/, reset each time.
    """
    from newsletter import app
    from newsletter.app.subscriptions import import_subscribers
    from newsletter.inbox import CaptureInbox
    from newsletter.logs import progress_for

    base = state.settings
    root = base.var_dir / "demo"
    shutil.rmtree(root, ignore_errors=True)
    with CaptureInbox(root / "inbox") as capture:
        settings = _demo_settings(base, root, capture.port)
        ctx = app.Context.open(settings)
        try:
            report, _ = import_subscribers(ctx, DEMO_SUBSCRIBERS)
            click.echo(f"imported {report.imported} sample subscribers")
            with stop_on_signals() as stop:
                summary = app.send_now(ctx, stop=stop, progress=progress_for())
        finally:
            ctx.close()
    _print_summary(summary)
    messages = sorted((root / "inbox").glob("*.eml"))
    for eml in messages:
        _write_html_part(eml)
    click.echo(
        f"\n{len(messages)} messages received in {root / 'inbox'} "
        "(.eml files, with .html beside each)"
    )
    if messages:
        click.echo(
            f"look at one in a browser:  {messages[0].with_suffix('.html').resolve().as_uri()}"
        )
    command = _this_command()
    click.echo(
        f"preview a digest yourself: {command} preview    (or {command} admin add-user NAME, "
        f"then {command} serve and log in at /preview)"
    )


def _this_command() -> str:
    """How the user can call this program again (``.venv/bin/newsletter`` after ``make demo``)."""
    program = Path(sys.argv[0])
    if program.name != "newsletter":
        return "newsletter"
    try:
        return str(program.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(program)


def _demo_settings(base: Settings, root: Path, port: int) -> Settings:
    return base.model_copy(
        update={
            "smtp": base.smtp.model_copy(
                update={"host": "127.0.0.1", "port": port, "security": "none", "username": None}
            ),
            "store": base.store.model_copy(update={"url": f"sqlite:///{root / 'newsletter.db'}"}),
            # The sample articles have fixed dates; the demo must work on any day.
            "digest": base.digest.model_copy(update={"max_age_days": 36500}),
        }
    )


def _write_html_part(eml: Path) -> None:
    message = message_from_bytes(eml.read_bytes(), policy=policy.default)
    assert isinstance(message, EmailMessage)
    part = message.get_body(("html",))
    if part is not None:
        eml.with_suffix(".html").write_text(part.get_content(), encoding="utf-8")
