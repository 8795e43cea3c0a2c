"""A real IMAP server for tests: Debian's dovecot, run by the test in a temporary directory.

One ``dovecot -F -c CONFIG`` process per server, listening on 127.0.0.1 only: IMAPS on
``imaps_port`` and plain IMAP (with STARTTLS unless ``tls=False``) on ``imap_port``, with a
self-signed certificate made by ``openssl`` for 127.0.0.1. Its users live in a passwd-file and
their mail in ``<home>/Maildir``; :meth:`DovecotServer.deliver` drops a message there the way
a delivery agent would. No system service, no state outside the temporary directory.

Running as root (as CI does), dovecot's login processes run as its ``dovenull`` user and the
mail user is ``nobody``, since dovecot refuses mail access as root; otherwise everything runs as
the current user. dovecot is the Debian package ``dovecot-imapd`` (``.ci/run`` installs it);
when it is missing the IMAP tests fail saying so, they are never skipped.
"""

from __future__ import annotations

import contextlib
import grp
import os
import pwd
import shutil
import socket
import ssl
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

import pytest

from newsletter.inbox import free_port

DOVECOT_CANDIDATES = ("/usr/sbin/dovecot", "/usr/local/sbin/dovecot")
STARTUP_TIMEOUT = 20.0  # seconds for dovecot to listen
STOP_TIMEOUT = 10.0
USERS = {"bounces": "imap-test-pass-0123", "bounces-utf8": "pässwörd-ünïcode-42"}


def find_dovecot() -> str:
    """The dovecot binary; fails the test (never skips) naming the package when missing."""
    found = shutil.which("dovecot") or next(
        (path for path in DOVECOT_CANDIDATES if os.access(path, os.X_OK)), None
    )
    if found is None:
        pytest.fail("IMAP tests need dovecot: apt-get install dovecot-imapd (.ci/run does this)")
    return found


class DovecotServer:
    """``with DovecotServer() as imap: imap.deliver(raw); ... imap.imaps_port``."""

    def __init__(self, *, tls: bool = True) -> None:
        self.tls = tls
        self.root = Path(tempfile.mkdtemp(prefix="newsletter-dovecot-"))
        # Traversable by dovecot's unprivileged processes (mkdtemp makes it 0700).
        self.root.chmod(0o755)
        self.imap_port = free_port()
        self.imaps_port = free_port()
        self.cert = self.root / "cert.pem"
        self._process: subprocess.Popen[bytes] | None = None
        self._count = 0
        if os.geteuid() == 0:
            nobody = pwd.getpwnam("nobody")
            self._mail_ids = (nobody.pw_uid, nobody.pw_gid)
        else:
            self._mail_ids = (os.getuid(), os.getgid())

    def home(self, user: str = "bounces") -> Path:
        """The home directory of a test user (its mail is in ``Maildir`` below it)."""
        return self.root / "home" / user

    def maildir(self, user: str = "bounces", folder: str = "INBOX") -> Path:
        """The Maildir of a user's folder on disk, as dovecot sees it (Maildir++ layout)."""
        base = self.home(user) / "Maildir"
        return base if folder == "INBOX" else base / f".{folder}"

    def new_folder(
        self, user: str = "bounces", *, name: str | None = None, rights: str | None = None
    ) -> str:
        """A fresh empty folder, so tests sharing one server do not see each other's mail.
        ``name`` is its name on disk (dovecot keeps non-ASCII names in modified UTF-7);
        ``rights`` limits what its owner may do (IMAP ACL letters, e.g. ``lrs``: no keywords)."""
        self._count += 1
        folder = name or f"test{self._count}"
        maildir = self.maildir(user, folder)
        self._make_maildir(maildir)
        if rights is not None:
            (maildir / "dovecot-acl").write_text(f"owner {rights}\n", encoding="utf-8")
            self._own(maildir / "dovecot-acl")
        return folder

    def password(self, user: str = "bounces") -> str:
        """The test password of ``user``."""
        return USERS[user]

    def ssl_context(self) -> ssl.SSLContext:
        """A client context that trusts this server's certificate (and checks the host)."""
        return ssl.create_default_context(cafile=str(self.cert))

    def deliver(self, raw: bytes, *, folder: str = "INBOX", user: str = "bounces") -> str:
        """Put a message into a folder's ``new/`` as a delivery agent does (write in tmp/,
        then rename); returns its Maildir unique name."""
        self._count += 1
        name = f"{int(time.time())}.M{self._count}P{os.getpid()}.newsletter-test"
        maildir = self.maildir(user, folder)
        tmp = maildir / "tmp" / name
        tmp.write_bytes(raw)
        self._own(tmp)
        tmp.rename(maildir / "new" / name)
        return name

    def start(self) -> DovecotServer:
        """Write the config, the certificate and the users, start dovecot and wait for it."""
        binary = find_dovecot()
        self._write_certificate()
        self._write_users()
        config = self.root / "dovecot.conf"
        config.write_text(self._config(), encoding="utf-8")
        log = (self.root / "stdout.log").open("wb")
        with log:
            self._process = subprocess.Popen(
                [binary, "-F", "-c", str(config)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + STARTUP_TIMEOUT
        # The master binds the ports before its services start (and may still fail): wait for
        # an IMAP greeting, then for the IMAPS port.
        checks = [(self.imap_port, _greets)] + ([(self.imaps_port, _listening)] if self.tls else [])
        for port, ready in checks:
            while self._process.poll() is not None or not ready(port):
                if self._process.poll() is not None or time.monotonic() > deadline:
                    logs = self.logs()
                    self.stop()
                    pytest.fail(f"dovecot did not start on 127.0.0.1:{port}:\n{logs}")
                time.sleep(0.02)
        return self

    def stop(self) -> None:
        """Stop dovecot (SIGTERM, then SIGKILL) and remove the temporary directory."""
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait(timeout=STOP_TIMEOUT)
        self._process = None
        shutil.rmtree(self.root, ignore_errors=True)

    def logs(self) -> str:
        """dovecot's own log and its startup output, for failure messages."""
        parts = []
        for name in ("stdout.log", "dovecot.log"):
            path = self.root / name
            if path.exists():
                parts.append(path.read_text(encoding="utf-8", errors="replace"))
        return "\n".join(parts)

    def __enter__(self) -> DovecotServer:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _write_certificate(self) -> None:
        key = self.root / "key.pem"
        subprocess.run(
            [
                "openssl", "req", "-x509", "-newkey", "ec",
                "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost",
                "-days", "2", "-keyout", str(key), "-out", str(self.cert),
            ],
            check=True,
            capture_output=True,
            timeout=30,
        )  # fmt: skip
        key.chmod(0o600)

    def _write_users(self) -> None:
        uid, gid = self._mail_ids
        lines = []
        for user, password in USERS.items():
            self._make_maildir(self.maildir(user))
            lines.append(f"{user}:{{PLAIN}}{password}:{uid}:{gid}::{self.home(user)}::")
        (self.root / "passwd").write_text("\n".join(lines) + "\n", encoding="utf-8")

    def _make_maildir(self, maildir: Path) -> None:
        for sub in ("new", "cur", "tmp"):
            (maildir / sub).mkdir(parents=True)
        for path in (maildir, *maildir.iterdir()):
            self._own(path)
        for parent in maildir.parents:  # home/ and the user's home, created just now
            if parent == self.root:
                break
            self._own(parent)

    def _own(self, path: Path) -> None:
        if os.geteuid() == 0:
            os.chown(path, *self._mail_ids)

    def _config(self) -> str:
        root = self.root
        if os.geteuid() == 0:
            users = ""  # dovecot's defaults: login as dovenull, internals as dovecot
        else:
            me = pwd.getpwuid(os.getuid()).pw_name
            group = grp.getgrgid(os.getgid()).gr_name
            users = (
                f"default_login_user = {me}\ndefault_internal_user = {me}\n"
                f"default_internal_group = {group}\n"
            )
        if self.tls:
            tls = f"ssl = yes\nssl_cert = <{self.cert}\nssl_key = <{root / 'key.pem'}\n"
        else:
            tls = "ssl = no\n"
        imaps = (
            f"  inet_listener imaps {{\n    address = 127.0.0.1\n    port = {self.imaps_port}\n"
            "    ssl = yes\n  }\n"
            if self.tls
            else ""
        )
        return f"""\
base_dir = {root / "run"}
state_dir = {root / "state"}
log_path = {root / "dovecot.log"}
instance_name = newsletter-test-{self.imap_port}
protocols = imap
listen = 127.0.0.1
{users}{tls}disable_plaintext_auth = {"yes" if self.tls else "no"}
auth_mechanisms = plain
auth_failure_delay = 0
first_valid_uid = {self._mail_ids[0]}
mail_location = maildir:~/Maildir
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {root / "passwd"}
}}
userdb {{
  driver = passwd-file
  args = username_format=%u {root / "passwd"}
}}
service imap-login {{
  chroot =
  inet_listener imap {{
    address = 127.0.0.1
    port = {self.imap_port}
  }}
{imaps}}}
mail_plugins = acl
plugin {{
  acl = vfile
}}
service anvil {{
  chroot =
  # No growing login delay after the tests' deliberate wrong passwords.
  unix_listener anvil-auth-penalty {{
    mode = 0
  }}
}}
"""


def _greets(port: int) -> bool:
    with (
        contextlib.suppress(OSError),
        socket.create_connection(("127.0.0.1", port), timeout=1) as s,
    ):
        return s.recv(64).startswith(b"* OK")
    return False


def _listening(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
        return True
    return False
