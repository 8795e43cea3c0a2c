"""The bounce mailbox check that ``newsletter run`` makes every ``[bounces] check_minutes``."""

from __future__ import annotations

import logging
import threading

from newsletter import app
from newsletter.app import bounces
from newsletter.errors import BounceCheckInProgress, NewsletterError

log = logging.getLogger(__name__)


class BounceChecker:
    """Runs one check of the bounce mailbox at a time; a failure never escapes.

    Created only with ``[bounces] mailbox`` set; ``ConfigError`` at once if it is unusable,
    so ``newsletter run`` stops at start rather than failing every few minutes.
    """

    def __init__(self, ctx: app.Context, *, stop: threading.Event) -> None:
        bounces.mailbox_location(ctx)
        self.ctx = ctx
        self.stop = stop
        self.minutes = ctx.settings.bounces.check_minutes
        self._lock = threading.Lock()

    def run(self) -> bounces.BounceCheck | None:
        """Check the mailbox now; one log line and None when it fails (the next run retries)."""
        with self._lock:
            if self.stop.is_set():
                return None
            try:
                return bounces.check_bounces(self.ctx, stop=self.stop)
            except BounceCheckInProgress as exc:
                log.info("bounce check skipped: %s", exc)
            except NewsletterError as exc:
                log.warning(
                    "bounce check failed: %s; the next check in %d min tries again",
                    exc,
                    self.minutes,
                )
            except Exception as exc:  # the scheduler must survive anything one check does
                log.error(
                    "bounce check failed unexpectedly (%s: %s); the next check in %d min "
                    "tries again",
                    type(exc).__name__,
                    exc,
                    self.minutes,
                )
                log.debug("the failed bounce check", exc_info=True)
            return None
