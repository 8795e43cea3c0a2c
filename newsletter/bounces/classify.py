"""What a message in the bounce mailbox says: a hard or soft bounce, a complaint, or nothing.

:func:`classify` takes the raw bytes and returns a :class:`Classification`, never raising:

- ARF feedback reports (RFC 5965, ``report-type=feedback-report``) with
  ``Feedback-Type: abuse`` are complaints;
- RFC 3464 delivery status notifications (``message/delivery-status``) and, failing that,
  the non-standard formats ``flufl.bounce`` knows (Exim, Yahoo, Microsoft, ...) are bounces:
  a code saying the mailbox is gone (``models.HARD_BOUNCE_CODES``, the rule SMTP-time
  refusals follow too) → hard; 4.x.x, mailbox full or delayed → soft; any other permanent
  refusal (a spam filter or policy, 5.7.x, ...) → refused: it says nothing about the address;
- auto-replies (``Auto-Submitted``, out-of-office, vacation) and anything else are ignored.

The result names where the delivery can be found: ``verp_candidates`` (addresses that may be
our VERP envelope sender: the envelope headers of the report, the enclosed message's
``Return-Path``, ARF's ``Original-Mail-From``), ``message_ids`` of the enclosed original and,
as a fallback, the failed ``recipients``. Matching them to a delivery is the caller's job.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from email.message import Message
from enum import StrEnum
from typing import Literal

from flufl.bounce import all_failures

from newsletter.bounces import reports
from newsletter.bounces.reports import header_text, header_texts
from newsletter.models import HARD_BOUNCE_CODES

log = logging.getLogger(__name__)  # flufl.bounce's own logger is quieted by newsletter.logs

Format = Literal["dsn", "arf", "bounce", "auto-reply", "other", "unreadable"]

_ENVELOPE_HEADERS = ("Delivered-To", "X-Original-To", "Envelope-To", "X-Envelope-To", "To")
_BOUNCE_SENDERS = {"mailer-daemon", "mailerdaemon", "mail-daemon", "postmaster"}
_AUTO_REPLY_HEADERS = ("X-Autoreply", "X-Autorespond", "X-Autoresponder", "X-Vacation")
_AUTO_REPLY_SUBJECT = re.compile(
    r"^\s*(auto:|automatic reply\b|auto[- ]?reply\b|auto[- ]?response\b)"
    r"|\b(out of (the )?office|vacation|abwesenheitsnotiz|r[ée]ponse automatique)\b",
    re.IGNORECASE,
)
_MAILBOX_FULL = re.compile(
    r"mailbox (is )?full|over ?quota|quota exceeded|exceeded (the )?storage|insufficient storage",
    re.IGNORECASE,
)
_SOFT_TEXT = re.compile(r"delayed|try again later|temporar(il)?y", re.IGNORECASE)


class BounceKind(StrEnum):
    """What a message means for the delivery it refers to."""

    HARD = "hard"  # the mailbox is gone
    SOFT = "soft"  # not now: full, delayed, temporarily refused
    REFUSED = "refused"  # refused for good, but not for the address (policy, spam filter)
    COMPLAINT = "complaint"
    IGNORED = "ignored"


@dataclass(frozen=True)
class Classification:
    """The meaning of one bounce-mailbox message and the clues to its delivery."""

    kind: BounceKind
    format: Format  # what the message was recognized as
    verp_candidates: tuple[str, ...] = ()
    recipients: tuple[str, ...] = ()
    message_ids: tuple[str, ...] = ()
    status: str | None = None  # RFC 3463 enhanced status code, "5.1.1"
    diagnostic: str | None = None  # the remote server's words, one line


def classify(raw: bytes) -> Classification:
    """Classify one raw message from the bounce mailbox; never raises."""
    try:
        return _classify(reports.parse_message(raw))
    except Exception as exc:  # one strange message must not stop the mailbox being read
        log.warning("could not classify a bounce-mailbox message: %s", type(exc).__name__)
        return Classification(BounceKind.IGNORED, "unreadable", diagnostic=type(exc).__name__)


def _classify(message: Message) -> Classification:
    enclosed = reports.enclosed_headers(message)
    candidates = _envelope_addresses(message) + _return_paths(enclosed)
    message_ids = _message_ids(enclosed)

    feedback = next(reports.report_parts(message, "message/feedback-report"), None)
    if feedback is not None:
        return _feedback(feedback, candidates, message_ids, enclosed)

    status_parts = list(reports.report_parts(message, "message/delivery-status"))
    statuses = [status for part in status_parts for status in reports.recipient_statuses(part)]
    if statuses:
        blocks = [block for part in status_parts for block in reports.field_blocks(part)]
        # Non-standard per-message fields: Postfix names the envelope sender, Gmail the original.
        senders = [reports.typed_address(header_text(b, "X-Postfix-Sender")) for b in blocks]
        candidates += [sender for sender in senders if sender]
        message_ids += _message_ids(blocks, "X-Original-Message-ID")
        return _delivery_status(statuses, candidates, message_ids)

    if _is_auto_reply(message) and not _is_from_mail_system(message):
        return Classification(BounceKind.IGNORED, "auto-reply", _unique(candidates))

    temporary, permanent = _flufl_failures(message)
    if temporary or permanent:
        status, diagnostic = _status_in_text(message)
        kind = BounceKind.SOFT if temporary and not permanent else _kind(status, diagnostic)
        return Classification(
            kind,
            "bounce",
            _unique(candidates),
            _unique(sorted(permanent | temporary)),
            _unique(message_ids),
            status,
            diagnostic,
        )
    return Classification(
        BounceKind.IGNORED, "other", _unique(candidates), (), _unique(message_ids)
    )


def _feedback(
    part: Message, candidates: list[str], message_ids: list[str], enclosed: list[Message]
) -> Classification:
    fields = reports.field_blocks(part)
    report = fields[0] if fields else Message()
    feedback_type = header_text(report, "Feedback-Type").strip().lower()
    mail_from = reports.addresses_in(header_texts(report, "Original-Mail-From"))
    recipients = reports.addresses_in(
        header_texts(report, "Original-Rcpt-To") + header_texts(report, "Removal-Recipient")
    )
    for headers in enclosed:
        recipients += reports.addresses_in(header_texts(headers, "To"))
    agent = reports.one_line(header_text(report, "User-Agent"))
    kind = BounceKind.COMPLAINT if feedback_type == "abuse" else BounceKind.IGNORED
    return Classification(
        kind,
        "arf",
        _unique(mail_from + candidates),
        _unique(recipients),
        _unique(message_ids),
        None,
        reports.one_line(f"feedback-type {feedback_type or '(none)'} from {agent or '(unknown)'}"),
    )


def _delivery_status(
    statuses: list[reports.RecipientStatus], candidates: list[str], message_ids: list[str]
) -> Classification:
    failures = []
    for status in statuses:
        if status.action.startswith("delayed"):
            failures.append((BounceKind.SOFT, status))
        elif status.action.startswith(("failed", "error")):  # "error": seen from OpenSMTPD
            failures.append((_kind(status.status, status.diagnostic), status))
    if not failures:  # delivered, relayed or expanded: a success notice
        return Classification(
            BounceKind.IGNORED, "dsn", _unique(candidates), (), _unique(message_ids)
        )
    # The strongest verdict of any recipient decides (we send one recipient per message).
    kind, deciding = min(failures, key=lambda failure: _STRENGTH.index(failure[0]))
    recipients = [
        address
        for _, status in failures
        for address in (status.original_recipient, status.final_recipient)
        if address
    ]
    return Classification(
        kind,
        "dsn",
        _unique(candidates),
        _unique(recipients),
        _unique(message_ids),
        deciding.status,
        deciding.diagnostic,
    )


_STRENGTH = (BounceKind.HARD, BounceKind.SOFT, BounceKind.REFUSED)


def _kind(status: str | None, diagnostic: str | None) -> BounceKind:
    """Hard, soft or refused for a failure, from its status code and the server's words.

    Hard only for a code in ``HARD_BOUNCE_CODES`` (in the Status field or the reply: Exim
    says 5.0.0 and quotes the server's 5.1.1); mailbox full and 4.x.x are soft; any other
    5.x.x, or no code and no word of a temporary problem, is refused.
    """
    text = diagnostic or ""
    codes = {code for code in (status, reports.find_status(text)) if code}
    if codes.intersection(HARD_BOUNCE_CODES):
        return BounceKind.HARD
    if codes.intersection(("4.2.2", "5.2.2")) or _MAILBOX_FULL.search(text):
        return BounceKind.SOFT
    if codes:
        return (
            BounceKind.SOFT if all(code.startswith("4.") for code in codes) else BounceKind.REFUSED
        )
    return BounceKind.SOFT if _SOFT_TEXT.search(text) else BounceKind.REFUSED


def _flufl_failures(message: Message) -> tuple[set[str], set[str]]:
    try:
        temporary, permanent = all_failures(message)
    except Exception as exc:  # heuristic third-party detectors: a crash there is "not found"
        log.info("flufl.bounce failed on a message (%s); treating it as no bounce", exc)
        return set(), set()
    return _ascii_addresses(temporary), _ascii_addresses(permanent)


def _ascii_addresses(found: frozenset[bytes]) -> set[str]:
    addresses = {raw.decode("ascii", "replace").strip() for raw in found}
    return {address for address in addresses if reports.is_plain_address(address)}


def _status_in_text(message: Message) -> tuple[str | None, str | None]:
    """The first status code in the human-readable part of a non-standard bounce, with the
    line it is on as the diagnostic."""
    for part in message.walk():
        if part.get_content_type() != "text/plain":
            continue
        for line in reports.body_text(part).splitlines():
            status = reports.find_status(line)
            if status or _MAILBOX_FULL.search(line):
                return status, reports.one_line(line) or None
    return None, None


def _is_auto_reply(message: Message) -> bool:
    auto_submitted = header_text(message, "Auto-Submitted").strip().lower()
    if auto_submitted and not auto_submitted.startswith("no"):
        return True
    if any(message.get(name) is not None for name in _AUTO_REPLY_HEADERS):
        return True
    if header_text(message, "Precedence").strip().lower() == "auto_reply":
        return True
    return bool(_AUTO_REPLY_SUBJECT.search(header_text(message, "Subject")))


def _is_from_mail_system(message: Message) -> bool:
    """A bounce (mailer-daemon, postmaster, null sender) rather than a person's auto-reply."""
    if message.get("X-Failed-Recipients") is not None:
        return True
    if header_text(message, "Return-Path").strip() == "<>":
        return True
    senders = reports.addresses_in(header_texts(message, "From") + header_texts(message, "Sender"))
    return any(sender.rpartition("@")[0].lower() in _BOUNCE_SENDERS for sender in senders)


def _envelope_addresses(message: Message) -> list[str]:
    return reports.addresses_in(
        [v for name in _ENVELOPE_HEADERS for v in header_texts(message, name)]
    )


def _return_paths(enclosed: list[Message]) -> list[str]:
    return reports.addresses_in([v for h in enclosed for v in header_texts(h, "Return-Path")])


def _message_ids(blocks: list[Message], name: str = "Message-ID") -> list[str]:
    return [found for headers in blocks for found in reports.message_ids(headers, name)]


def _unique(values: list[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(values))
