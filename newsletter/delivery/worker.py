"""One SMTP connection's worker thread: send the chunks it is handed, report each outcome.

A worker owns one persistent SMTP connection (reused for ``reconnect_after`` messages,
replaced after a failure, checked with NOOP after ``IDLE_CHECK_SECONDS`` idle) and never touches
the database. It sends through :class:`~newsletter.delivery.pipelining.SmtpSession`: pipelined
(about one round trip per message) when the server offers PIPELINING, one command at a time
otherwise. It takes chunks of claimed rows from ``Shared.inbox`` and appends one result per
row to ``Shared.results``: an :class:`Outcome` (sent, failed, or pending again with a retry
time) or :class:`Released` for a row whose message did not leave (the send is stopping or
paused, fewer connections are allowed, or the connection ended before its content went out).
The coordinator, :class:`newsletter.delivery.engine.DeliveryEngine`, records them.

With pipelining, a message's outcome arrives with the next message's replies. The worker goes
on across chunk boundaries while the next chunk is already queued, and flushes (sends the
held message and reads its reply) whenever it would wait: for a chunk, for a rate slot, before
a reconnection, when the send stops. So a held message never waits on anything, and at most
two messages per connection are on the wire.

Throttling: every reply goes through ``Shared.throttle`` (:mod:`newsletter.delivery.throttle`),
which sets the rate (the worker waits for its slot before each message) and how many
connections may be open (``Shared.gate``). When fewer are allowed, a worker whose connection
just ended (the 421 closed it, or the server refused to greet it) leaves at once, one with a
working connection at the end of its chunk; it hangs up and waits until one is allowed again.
A throttled message is retried after ``retry_base_seconds`` (with jitter), however often:
it never fails for it. ``pause_after_failures`` in a row still pauses a send that only ever
gets throttled.
"""

from __future__ import annotations

import logging
import queue
import random
import smtplib
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta

from newsletter.config import SmtpSettings
from newsletter.delivery.pipelining import (
    Accepted,
    Deferred,
    NotSent,
    OutgoingMessage,
    Refused,
    SmtpSession,
    Unconfirmed,
)
from newsletter.delivery.pipelining import Outcome as SessionOutcome
from newsletter.delivery.smtp import (
    IDLE_CHECK_SECONDS,
    ConnectFailed,
    SmtpConnector,
    close_quietly,
    drop,
    is_alive,
    smtputf8_refusal,
)
from newsletter.delivery.throttle import AdaptiveThrottle
from newsletter.headers import UnsendableAddress
from newsletter.message import PreparedMessage
from newsletter.models import Clock, DeliveryState, Recipient
from newsletter.store.outbox import Outcome

log = logging.getLogger(__name__)


class Released:
    """A claimed row whose message did not leave: back to pending, attempts unchanged."""

    __slots__ = ("delivery_id",)

    def __init__(self, delivery_id: int) -> None:
        self.delivery_id = delivery_id


Result = Outcome | Released


class ConnectionGate:
    """How many workers may hold a connection: each holds a slot while it works."""

    def __init__(self, allowed: int) -> None:
        self._allowed = allowed
        self._holders = 0
        self._closed = False
        self._changed = threading.Condition()

    def set_allowed(self, allowed: int) -> None:
        with self._changed:
            self._allowed = allowed
            self._changed.notify_all()

    def acquire(self) -> None:
        """Take a slot: wait until fewer than allowed are held, or the send ends (``close``)."""
        with self._changed:
            self._changed.wait_for(lambda: self._holders < self._allowed or self._closed)
            self._holders += 1

    def leave_if_over(self) -> bool:
        """Give the slot back if more are held than allowed (the caller then hangs up)."""
        if self._holders <= self._allowed:  # the usual case, without the lock
            return False
        with self._changed:
            if self._holders <= self._allowed:
                return False
            self._holders -= 1
            return True

    def close(self) -> None:
        """The send is ending: let every waiting worker go (to find its end in the inbox)."""
        with self._changed:
            self._closed = True
            self._changed.notify_all()


@dataclass(frozen=True, slots=True)
class Shared:
    """What the coordinator shares with its workers: settings, the queues and the signals."""

    smtp: SmtpSettings
    message: PreparedMessage
    clock: Clock
    rng: random.Random  # retry jitter
    throttle: AdaptiveThrottle  # the sending rate, and how many connections
    gate: ConnectionGate  # follows the throttle's connection limit
    connector: SmtpConnector
    stop: threading.Event  # requested from outside (Ctrl-C, SIGTERM)
    halt: threading.Event  # paused, or a worker failed
    inbox: queue.SimpleQueue[list[Recipient] | None]  # chunks of claimed rows; None ends a worker
    results: deque[Result]  # appended by workers, drained by the coordinator
    wake: threading.Event  # set after each chunk
    on_error: Callable[[BaseException], None]  # a bug in a worker: stop the whole send
    # False once the claims may have lapsed (the coordinator could not renew them): rows
    # not started yet go back instead of going out beside the sender that took them over
    leased: Callable[[], bool] = lambda: True


@dataclass(frozen=True, slots=True)
class _Submitted:
    """A message handed to the session whose outcome has not come back yet."""

    recipient: Recipient
    message_id: str


class SmtpWorker(threading.Thread):
    """One SMTP connection, reused for many messages; reconnects after a count or a failure."""

    def __init__(self, shared: Shared, index: int) -> None:
        super().__init__(name=f"smtp-{index}", daemon=True)
        self.shared = shared
        self.client: smtplib.SMTP | None = None
        self.session: SmtpSession | None = None
        self.submitted: dict[int, _Submitted] = {}  # at most two: one held, one awaiting reply
        self.has_slot = False  # in the gate: may hold a connection
        self.on_connection = 0
        self.last_used = time.monotonic()

    def run(self) -> None:
        shared = self.shared
        try:
            while (chunk := self._next_chunk()) is not None:
                self._work(chunk)
                shared.wake.set()
            self._hang_up()
        except BaseException as exc:  # a bug, not one message's problem: stop the send
            self._abandon()
            shared.on_error(exc)
        finally:
            shared.wake.set()

    def _next_chunk(self) -> list[Recipient] | None:
        shared = self.shared
        if self.has_slot and shared.gate.leave_if_over():  # throttled to fewer connections
            self.has_slot = False
            self._hang_up()
            shared.wake.set()
        if not self.has_slot:
            shared.gate.acquire()  # holding no rows while it waits
            self.has_slot = True
        try:
            return shared.inbox.get_nowait()  # queued already: the held message goes with it
        except queue.Empty:
            pass
        self._flush()  # nothing to send right now: no message may wait for the next chunk
        shared.wake.set()
        return shared.inbox.get()

    def _work(self, chunk: list[Recipient]) -> None:
        shared = self.shared
        for i, recipient in enumerate(chunk):
            if shared.halt.is_set() or shared.stop.is_set() or not shared.leased():
                self._release(chunk[i:])
                return
            if self.session is None and shared.gate.leave_if_over():  # not to reconnect
                self.has_slot = False
                self._release(chunk[i:])
                return
            delay = shared.throttle.reserve()
            if delay > 0:
                self._flush()  # the held message goes now, not after the wait
                if shared.stop.wait(delay):
                    self._release(chunk[i:])
                    return
            try:
                self._send(recipient)
            except BaseException:  # this one has its outcome, or _abandon releases it
                self._release(chunk[i + 1 :])
                raise

    def _send(self, recipient: Recipient) -> None:
        """Build one recipient's message and hand it to the session. Whatever goes wrong with
        this one message (its data cannot be encoded, the server refuses it, a bug) becomes
        this delivery's outcome with the reason; it never stops the send for everyone else."""
        shared = self.shared
        attempts = recipient.attempts + 1
        try:
            envelope = shared.message.personalize(recipient, now=shared.clock())
        except UnsendableAddress as exc:  # the address has no form that can be sent
            self._emit(self._failed(recipient, attempts, _reason(exc)))
            return
        except Exception as exc:
            log.warning("delivery %s: cannot build the message: %s", recipient.delivery_id, exc)
            self._emit(
                self._failed(recipient, attempts, f"cannot build the message: {_reason(exc)}")
            )
            return
        try:
            session = self._usable_session()
        except ConnectFailed as exc:  # could not (re)connect or log in
            throttled = shared.throttle.observe(exc.code, exc.text)
            self._emit(self._retry(recipient, attempts, str(exc), True, throttled=throttled))
            return
        except Exception as exc:  # a bug while connecting: this message fails
            log.warning("delivery %s: cannot connect: %s", recipient.delivery_id, exc)
            self._forget_connection()
            self._emit(
                self._failed(recipient, attempts, f"cannot send the message: {_reason(exc)}")
            )
            return
        if envelope.smtputf8 and not session.offers_smtputf8:
            self._emit(self._failed(recipient, attempts, smtputf8_refusal(envelope.recipient)))
            return
        self.submitted[recipient.delivery_id] = _Submitted(recipient, envelope.message_id)
        self.on_connection += 1
        outgoing = OutgoingMessage(
            recipient.delivery_id,
            envelope.sender,
            envelope.recipient,
            envelope.data,
            smtputf8=envelope.smtputf8,
            crlf=True,  # PreparedMessage writes CRLF line ends only (tests/wire.py checks)
        )
        try:
            outcomes = session.submit(outgoing)
        except Exception as exc:  # a bug while sending: this message fails, the connection goes
            log.warning("delivery %s: cannot send the message: %s", recipient.delivery_id, exc)
            del self.submitted[recipient.delivery_id]
            self._emit(
                self._failed(recipient, attempts, f"cannot send the message: {_reason(exc)}")
            )
            self._abandon()
            return
        self._take(outcomes)

    # -- outcomes ---------------------------------------------------------------------------
    def _take(self, outcomes: Sequence[SessionOutcome]) -> None:
        """Report what the session decided; forget a connection that ended."""
        for outcome in outcomes:
            result: Result
            if isinstance(outcome, NotSent):  # its content never left: as if never tried
                result = Released(outcome.id)
            else:
                result = self._outcome(self.submitted[outcome.id], outcome)
            del self.submitted[outcome.id]  # only now: after an error, _abandon releases it
            self.shared.results.append(result)
        if self.session is not None and not self.session.open:
            self._forget_connection()

    def _outcome(self, submitted: _Submitted, outcome: SessionOutcome) -> Outcome:
        recipient = submitted.recipient
        attempts = recipient.attempts + 1
        if isinstance(outcome, Accepted):
            return Outcome(
                recipient.delivery_id,
                DeliveryState.SENT,
                attempts,
                message_id=submitted.message_id,
            )
        if isinstance(outcome, Refused):
            return self._failed(recipient, attempts, outcome.reason)
        if isinstance(outcome, Deferred):
            # A refused sender is a problem of our account or configuration, never the
            # recipient's: temporary, and it counts towards pausing the send.
            prefix = "sender refused: " if outcome.stage == "mail" else ""
            throttled = self.shared.throttle.observe(outcome.code, outcome.text)
            reason = prefix + outcome.reason
            connection = outcome.code == 421  # the server closed the connection
            return self._retry(recipient, attempts, reason, connection, throttled=throttled)
        assert isinstance(outcome, Unconfirmed)
        return self._retry(recipient, attempts, outcome.reason, True, throttled=False)

    def _emit(self, outcome: Outcome) -> None:
        self.shared.results.append(outcome)

    def _release(self, recipients: Sequence[Recipient]) -> None:
        self.shared.results.extend(Released(r.delivery_id) for r in recipients)

    @staticmethod
    def _failed(recipient: Recipient, attempts: int, reason: str) -> Outcome:
        return Outcome(recipient.delivery_id, DeliveryState.FAILED, attempts, error=reason)

    def _retry(
        self, recipient: Recipient, attempts: int, reason: str, connection: bool, *, throttled: bool
    ) -> Outcome:
        """Pending again: after a short delay if throttled (never given up), else with
        exponential backoff and jitter, failed after ``max_attempts``."""
        shared = self.shared
        settings = shared.smtp
        if throttled:
            delay = settings.retry_base_seconds
        elif attempts >= settings.max_attempts:
            return Outcome(
                recipient.delivery_id,
                DeliveryState.FAILED,
                attempts,
                error=f"gave up after {attempts} attempts: {reason}",
            )
        else:
            delay = min(
                settings.retry_max_seconds, settings.retry_base_seconds * 2 ** (attempts - 1)
            )
        return Outcome(
            recipient.delivery_id,
            DeliveryState.PENDING,
            attempts,
            error=("connection: " if connection else "") + reason,
            next_attempt_at=shared.clock() + timedelta(seconds=delay * (0.5 + shared.rng.random())),
        )

    # -- the connection ------------------------------------------------------------------------
    def _usable_session(self) -> SmtpSession:
        settings = self.shared.smtp
        if self.session is not None and self.on_connection >= settings.reconnect_after:
            self._hang_up()
        if self.session is not None and time.monotonic() - self.last_used > IDLE_CHECK_SECONDS:
            # Servers drop idle connections (while we waited for retries, or rendered).
            self._flush()
            if self.client is None or not is_alive(self.client):
                self._forget_connection()
        if self.session is None:
            client = self.shared.connector.open()
            try:
                self.session = SmtpSession(client, timeout=settings.timeout)
            except (OSError, smtplib.SMTPException) as exc:
                drop(client)
                raise ConnectFailed(f"the connection ended at once: {_reason(exc)}") from exc
            self.client = client
            self.on_connection = 0
        self.last_used = time.monotonic()
        return self.session

    def _flush(self) -> None:
        """Send the message the session holds (if any) and report its outcome."""
        if self.session is not None and self.submitted:
            self._take(self.session.flush())
        if self.submitted:  # the session owes nothing more: cannot happen, never hang on it
            log.warning("%d messages had no outcome; they are sent again", len(self.submitted))
            self._release([s.recipient for s in self.submitted.values()])
            self.submitted.clear()

    def _hang_up(self) -> None:
        """Finish what is on the wire, then QUIT."""
        self._flush()
        if self.client is not None:
            close_quietly(self.client)
        self.client = self.session = None

    def _forget_connection(self) -> None:
        """The connection ended or is in an unknown state: close it without QUIT."""
        drop(self.client)
        self.client = self.session = None

    def _abandon(self) -> None:
        """After an error: drop the connection; messages without an outcome go back."""
        self._forget_connection()
        self._release([s.recipient for s in self.submitted.values()])
        self.submitted.clear()


def _reason(exc: BaseException) -> str:
    """One line naming the error, short enough for the outbox and ``status``."""
    text = " ".join(str(exc).split())
    if not isinstance(exc, UnsendableAddress):  # not an expected refusal: say what kind
        text = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    return text[:300]
