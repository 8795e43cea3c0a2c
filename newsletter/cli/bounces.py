"""``newsletter bounces check``: read the bounce mailbox and apply what it says."""

from __future__ import annotations

import click

from newsletter.cli.base import CliState, pass_state, stop_on_signals


@click.group()
def bounces() -> None:
    """Bounces and complaints that arrive after delivery ([bounces] in the config)."""


@bounces.command()
@pass_state
def check(state: CliState) -> None:
    """Read the bounce mailbox and apply what it says, each message once.

    Reads the new messages of [bounces] mailbox. A hard bounce makes the address bounced;
    soft bounces are counted ([bounces] soft_limit within soft_days makes it bounced); a
    spam complaint unsubscribes it with reason "complaint". Auto-replies and anything
    unrecognized change nothing. Prints how many messages had each outcome; running it
    again changes nothing.
    """
    from newsletter.app.bounces import OUTCOMES, check_bounces

    with stop_on_signals() as stop:
        done = check_bounces(state.context(), stop=stop)
    plural = "" if done.messages == 1 else "s"
    counts = ", ".join(f"{done.counts[outcome]} {outcome}" for outcome in OUTCOMES)
    click.echo(f"{done.messages} message{plural}: {counts}")
    if done.already_recorded:
        click.echo(f"{done.already_recorded} recorded by an earlier check, now marked done")
    click.echo(f"{done.bounced} bounced, {done.unsubscribed} unsubscribed by complaint")
