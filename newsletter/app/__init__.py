"""Use cases: the one place that wires the stages and the store together.

The CLI, the scheduler and the web app all call these, so a digest is built the same way
whichever door it came through. One module per concern: ``digest`` (gathering and building
the next digest), ``preview``, ``send`` (sending digests), ``send_lock``, ``send_copy`` (a
test copy), ``resend``, ``status``, ``archive``, ``slots`` (scheduled runs), ``sources`` and
``explain`` (inspecting the sources), ``subscriptions`` (signing up, adding, importing),
``confirmations`` (the confirmation emails' queue), ``links`` (unsubscribe and confirm
links), ``subscriber_list`` (listing, exporting, showing and forgetting people), ``bounces``
(VERP envelope senders, reading the bounce mailbox), ``database`` (the schema revision and
upgrades), ``users`` and ``login`` (the web app's accounts and sessions), ``admin`` (what the
admin pages show and do).
"""

from newsletter.app.context import Context, utc_now
from newsletter.app.digest import NextDigest, gather_candidates, next_digest
from newsletter.app.preview import preview_digest
from newsletter.app.send import SendSummary, send_now
from newsletter.app.send_copy import send_test_copy

__all__ = [
    "Context",
    "NextDigest",
    "SendSummary",
    "gather_candidates",
    "next_digest",
    "preview_digest",
    "send_now",
    "send_test_copy",
    "utc_now",
]
