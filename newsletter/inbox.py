"""A capture inbox: a real SMTP server on loopback (aiosmtpd) that stores what it receives.

Used by ``newsletter demo`` and ``newsletter inbox``, and by the tests. Each message is written
as ``NNNNNN.eml`` (exactly the bytes received, plus a ``Delivered-To`` header per recipient).
"""

from __future__ import annotations

import itertools
import socket
import threading
from pathlib import Path
from types import TracebackType

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP as SMTPServer
from aiosmtpd.smtp import Envelope, Session

from newsletter.errors import DeliveryError


def free_port(host: str = "127.0.0.1") -> int:
    """A port that was free a moment ago (aiosmtpd's Controller cannot take port 0)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


class _SaveToFolder:
    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._numbers = itertools.count(len(list(folder.glob("*.eml"))) + 1)
        self._lock = threading.Lock()
        self.received = 0

    async def handle_DATA(self, server: SMTPServer, session: Session, envelope: Envelope) -> str:
        content = envelope.original_content or b""
        for rcpt in envelope.rcpt_tos:
            with self._lock:
                number = next(self._numbers)
                self.received += 1
            data = f"Delivered-To: {rcpt}\r\n".encode() + content
            (self.folder / f"{number:06d}.eml").write_bytes(data)
        return "250 Message accepted for delivery"


class CaptureInbox:
    """``with CaptureInbox(folder) as inbox:`` runs the server; ``inbox.port`` is where."""

    def __init__(self, folder: Path, *, host: str = "127.0.0.1", port: int | None = None) -> None:
        self.folder = folder
        self.host = host
        self.port = port or free_port(host)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.handler = _SaveToFolder(folder)
        self._controller = Controller(self.handler, hostname=host, port=self.port, ready_timeout=10)

    def __enter__(self) -> CaptureInbox:
        try:
            self._controller.start()
        except (OSError, RuntimeError) as exc:
            raise DeliveryError(
                f"cannot start the capture inbox on {self.host}:{self.port}: {exc}"
            ) from None
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._controller.stop()

    def messages(self) -> list[Path]:
        return sorted(self.folder.glob("*.eml"))


__all__ = ["CaptureInbox", "free_port"]
