"""One SMTP connection's worker thread: send the chunks it is handed, report each outcome.

A worker owns one persistent SMTP connection (reused for ``reconnect_after`` messages,
replaced after a failure, checked with NOOP after ``IDLE_CHECK_SECONDS`` idle) and never touches
the database. It takes chunks of claimed rows from ``Shared.inbox`` and appends one result per
row to ``Shared.results``: an :class:`Outcome` (sent, failed, or pending again with a retry
time) or :class:`Released` for a row it did not try because the send is stopping or paused.
The coordinator, :class:`newsletter.delivery.engine.DeliveryEngine`, records them.
"""

from __future__ import annotations

import logging
import queue
import random
import smtplib
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

from newsletter.config import SmtpSettings
from newsletter.delivery.ratelimit import RateLimiter
from newsletter.delivery.smtp import classify, close_quietly, connect, drop, send_message
from newsletter.errors import DeliveryError
from newsletter.headers import UnsendableAddress
from newsletter.message import PreparedMessage
from newsletter.models import Clock, DeliveryState, Recipient
from newsletter.store.outbox import Outcome

log = logging.getLogger(__name__)
IDLE_CHECK_SECONDS = 10.0  # a connection idle this long is checked with NOOP before reuse


class Released:
    """A claimed row the worker did not try (stop or pause): back to pending, unchanged."""

    __slots__ = ("delivery_id",)

    def __init__(self, delivery_id: int) -> None:
        self.delivery_id = delivery_id


Result = Outcome | Released


@dataclass(frozen=True, slots=True)
class Shared:
    """What the coordinator shares with its workers: settings, the queues and the signals."""

    smtp: SmtpSettings
    message: PreparedMessage
    clock: Clock
    rng: random.Random  # retry jitter
    rate: RateLimiter
    stop: threading.Event  # requested from outside (Ctrl-C, SIGTERM)
    halt: threading.Event  # paused, or a worker failed
    inbox: queue.SimpleQueue[list[Recipient] | None]  # chunks of claimed rows; None ends a worker
    results: deque[Result]  # appended by workers, drained by the coordinator
    wake: threading.Event  # set after each chunk
    on_error: Callable[[BaseException], None]  # a bug in a worker: stop the whole send


class SmtpWorker(threading.Thread):
    """One SMTP connection, reused for many messages; reconnects after a count or a failure."""

    def __init__(self, shared: Shared, index: int, first: smtplib.SMTP | None) -> None:
        super().__init__(name=f"smtp-{index}", daemon=True)
        self.shared = shared
        self.client = first
        self.on_connection = 0
        self.last_used = time.monotonic()

    def run(self) -> None:
        shared = self.shared
        try:
            while (chunk := shared.inbox.get()) is not None:
                self._work(chunk)
                shared.wake.set()
        finally:
            close_quietly(self.client)
            self.client = None

    def _work(self, chunk: list[Recipient]) -> None:
        shared = self.shared
        results = shared.results
        for i, recipient in enumerate(chunk):
            if shared.halt.is_set() or shared.stop.is_set() or not shared.rate.acquire():
                results.extend(Released(r.delivery_id) for r in chunk[i:])
                return
            try:
                results.append(self._send(recipient))
            except BaseException as exc:  # not one message's problem (_send keeps those): stop
                results.extend(Released(r.delivery_id) for r in chunk[i:])
                shared.on_error(exc)
                return

    def _send(self, recipient: Recipient) -> Outcome:
        """Build and send one recipient's message. Whatever goes wrong with this one message
        (its data cannot be encoded, the server refuses it, a bug) becomes this delivery's
        outcome with the reason; it never stops the send for everyone else."""
        shared = self.shared
        attempts = recipient.attempts + 1
        try:
            envelope = shared.message.personalize(recipient, now=shared.clock())
        except UnsendableAddress as exc:  # the address has no form that can be sent
            return self._failed(recipient, attempts, _reason(exc))
        except Exception as exc:
            log.warning("delivery %s: cannot build the message: %s", recipient.delivery_id, exc)
            return self._failed(recipient, attempts, f"cannot build the message: {_reason(exc)}")
        try:
            client = self._usable_client()
            send_message(
                client,
                envelope.sender,
                envelope.recipient,
                envelope.data,
                smtputf8=envelope.smtputf8,
            )
        except DeliveryError as exc:  # could not (re)connect or log in
            return self._temporary(recipient, attempts, str(exc), connection=True)
        except (OSError, smtplib.SMTPException) as exc:
            failure = classify(exc, envelope.recipient)
            if failure.connection_lost:
                drop(self.client)  # no QUIT: the connection is gone or in an unknown state
                self.client = None
            # Otherwise send_message has sent RSET: the connection is ready for the next.
            if failure.permanent:
                return self._failed(recipient, attempts, failure.reason)
            return self._temporary(
                recipient, attempts, failure.reason, connection=failure.connection_lost
            )
        except Exception as exc:  # a bug while sending: this message fails, the connection goes
            log.warning("delivery %s: cannot send the message: %s", recipient.delivery_id, exc)
            drop(self.client)
            self.client = None
            return self._failed(recipient, attempts, f"cannot send the message: {_reason(exc)}")
        self.on_connection += 1
        self.last_used = time.monotonic()
        return Outcome(
            recipient.delivery_id, DeliveryState.SENT, attempts, message_id=envelope.message_id
        )

    @staticmethod
    def _failed(recipient: Recipient, attempts: int, reason: str) -> Outcome:
        return Outcome(recipient.delivery_id, DeliveryState.FAILED, attempts, error=reason)

    def _temporary(
        self, recipient: Recipient, attempts: int, reason: str, *, connection: bool
    ) -> Outcome:
        """A retry later with exponential backoff and jitter, or failed after max_attempts."""
        shared = self.shared
        settings = shared.smtp
        if attempts >= settings.max_attempts:
            return Outcome(
                recipient.delivery_id,
                DeliveryState.FAILED,
                attempts,
                error=f"gave up after {attempts} attempts: {reason}",
            )
        backoff = min(settings.retry_max_seconds, settings.retry_base_seconds * 2 ** (attempts - 1))
        delay = backoff * (0.5 + shared.rng.random())
        return Outcome(
            recipient.delivery_id,
            DeliveryState.PENDING,
            attempts,
            error=("connection: " if connection else "") + reason,
            next_attempt_at=shared.clock() + timedelta(seconds=delay),
        )

    def _usable_client(self) -> smtplib.SMTP:
        settings = self.shared.smtp
        if self.client is not None and self.on_connection >= settings.reconnect_after:
            close_quietly(self.client)
            self.client = None
        if self.client is not None and time.monotonic() - self.last_used > IDLE_CHECK_SECONDS:
            # Servers drop idle connections (while we waited for retries, or rendered).
            try:
                alive = self.client.noop()[0] == 250
            except (OSError, smtplib.SMTPException):
                alive = False
            if not alive:
                drop(self.client)
                self.client = None
        if self.client is None:
            self.client = connect(settings)
            self.on_connection = 0
            self.last_used = time.monotonic()
        return self.client


def _reason(exc: BaseException) -> str:
    """One line naming the error, short enough for the outbox and ``status``."""
    text = " ".join(str(exc).split())
    if not isinstance(exc, UnsendableAddress):  # not an expected refusal: say what kind
        text = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    return text[:300]
