"""The settings' sections: one validated model per TOML table, with their defaults."""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path
from typing import Any, Literal, get_args
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    BaseModel,
    ConfigDict,
    EmailStr,
    Field,
    SecretStr,
    ValidationInfo,
    field_validator,
)

ENV_PREFIX = "NEWSLETTER_"
CONFIG_ENV_VAR = "NEWSLETTER_CONFIG"
DEFAULT_VAR_DIR = Path("var")


class Section(BaseModel):
    # No inf/nan anywhere: a timeout of inf would only fail later, deep inside a send.
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    @field_validator("*", mode="before")
    @classmethod
    def _numbers_are_not_booleans(cls, value: Any, info: ValidationInfo) -> Any:
        """``port = true`` is a mistake, not port 1: numbers refuse TOML booleans."""
        if isinstance(value, bool) and info.field_name is not None:
            annotation = cls.model_fields[info.field_name].annotation
            if {int, float} & {annotation, *get_args(annotation)}:
                raise ValueError("must be a number, not true or false")
        return value


class SmtpSettings(Section):
    host: str = "127.0.0.1"
    port: int = Field(default=8025, ge=1, le=65535)
    security: Literal["none", "starttls", "tls"] = "none"
    username: str | None = None
    password: SecretStr | None = None
    timeout: float = Field(default=30.0, gt=0)
    connections: int = Field(default=2, ge=1, le=64)
    max_per_second: float | None = Field(default=None, gt=0)
    reconnect_after: int = Field(default=1000, ge=1)
    max_attempts: int = Field(default=5, ge=1)
    retry_base_seconds: float = Field(default=30.0, ge=0)
    retry_max_seconds: float = Field(default=3600.0, ge=0)
    pause_after_failures: int = Field(default=50, ge=1)
    claim_batch: int = Field(default=16, ge=1, le=1000)


class NewsletterSettings(Section):
    title: str = "The Daily Digest"
    from_name: str = "The Daily Digest"
    from_address: EmailStr = "digest@example.org"
    reply_to: EmailStr | None = None
    postal_address: str = "Newsletter Ltd, 1 Example Street, 12345 Exampletown"
    list_id: str | None = None
    unsubscribe_mailto: EmailStr | None = None
    language: str = "en"


class FeedSettings(Section):
    url: str
    name: str | None = None
    max_items: int | None = Field(default=None, ge=1)


class SourcesSettings(Section):
    articles_dir: Path = Path("seeds")
    feeds: tuple[FeedSettings, ...] = ()
    fetch_timeout: float = Field(default=20.0, gt=0)
    max_feed_bytes: int = Field(default=5_000_000, ge=1024)
    max_redirects: int = Field(default=5, ge=0)
    user_agent: str | None = None
    max_article_bytes: int = Field(default=1_000_000, ge=1024)  # larger article files: refused


class StoreSettings(Section):
    url: str = f"sqlite:///{DEFAULT_VAR_DIR / 'newsletter.db'}"


class DigestSettings(Section):
    max_articles: int = Field(default=10, ge=1)
    max_age_days: int = Field(default=7, ge=1)
    subject: str = "{{ title }}: {{ date.strftime('%d %B %Y') }}"
    templates_dir: Path | None = None
    max_html_bytes: int = Field(default=102_000, ge=10_000)
    sections_by_source: bool = False


DEFAULT_WEB_SECRET = "change-me-this-is-not-a-secret"


MIN_SECRET_CHARS = 16


def is_loopback_host(host: str) -> bool:
    """True for hosts on this machine only (127.0.0.0/8, ::1, localhost)."""
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class WebSettings(Section):
    base_url: str = "http://127.0.0.1:8000"
    secret: SecretStr = SecretStr(DEFAULT_WEB_SECRET)
    # Secrets used before ``secret``: links signed with them are still accepted (rotation).
    previous_secrets: tuple[SecretStr, ...] = ()
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    # Sent digests readable by anyone at /archive (and a "View in browser" link in each
    # digest); false: the archive is for logged-in operators only, and digests carry no link.
    public_archive: bool = True
    # Ignored since unsubscribe links stopped expiring; still accepted so old files load.
    token_max_age_days: int | None = Field(default=None, ge=1)
    # Reverse proxies (IPs or CIDR networks) whose X-Forwarded-For names the real client; the
    # header of anyone else is ignored, so it cannot dodge the per-client limits.
    trusted_proxies: tuple[str, ...] = ()

    @field_validator("trusted_proxies")
    @classmethod
    def _networks(cls, values: tuple[str, ...]) -> tuple[str, ...]:
        for value in values:
            try:
                ipaddress.ip_network(value.strip(), strict=False)
            except ValueError:
                raise ValueError(
                    f"{value!r} is not an IP address or network (e.g. 10.0.0.1, 10.0.0.0/8)"
                ) from None
        return tuple(value.strip() for value in values)

    @field_validator("secret")
    @classmethod
    def _long_enough(cls, value: SecretStr) -> SecretStr:
        if len(value.get_secret_value()) < MIN_SECRET_CHARS:
            raise ValueError(
                f"must be at least {MIN_SECRET_CHARS} characters (use a long random string)"
            )
        return value

    @field_validator("previous_secrets")
    @classmethod
    def _each_long_enough(cls, values: tuple[SecretStr, ...]) -> tuple[SecretStr, ...]:
        for value in values:
            cls._long_enough(value)
        return values

    @property
    def uses_default_secret(self) -> bool:
        """True while the link-signing secret is the public built-in one."""
        return self.secret.get_secret_value() == DEFAULT_WEB_SECRET

    @property
    def base_url_is_loopback(self) -> bool:
        """True when links point at this machine only (the demo, tests, local previews)."""
        return is_loopback_host(urlsplit(self.base_url).hostname or "")

    def forgeable_links_problem(self) -> str | None:
        """Why real links would be forgeable (the public default secret), or None."""
        if not self.uses_default_secret or self.base_url_is_loopback:
            return None
        return (
            f"[web] secret is the built-in default, so anyone could forge the unsubscribe and "
            f"confirm links to {self.base_url}; set [web] secret (or NEWSLETTER_WEB__SECRET) to "
            "a long random string, e.g. the output of: python3 -c "
            "'import secrets; print(secrets.token_urlsafe(32))'"
        )

    def plain_http_warning(self) -> str | None:
        """A warning when links to a public address are not https (one-click needs https)."""
        if self.base_url.startswith("https://") or self.base_url_is_loopback:
            return None
        return (
            f"[web] base_url {self.base_url} is not https: mail providers (Gmail, Yahoo) ignore "
            "one-click unsubscribe without https, and the links travel in clear text"
        )

    @field_validator("base_url")
    @classmethod
    def _no_trailing_slash(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return value.rstrip("/")


class ScheduleSettings(Section):
    cron: str = "0 7 * * *"
    timezone: str = "UTC"
    grace_minutes: int = Field(default=360, ge=1)
    # "self": `run` delivers each digest itself; "workers": it queues the digest and its
    # outbox, and `newsletter worker` processes deliver it
    deliver: Literal["self", "workers"] = "self"

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(
                f"unknown time zone {value!r} (use an IANA name such as Europe/Berlin)"
            ) from None
        return value


class WorkersSettings(Section):
    """Senders sharing a digest (``newsletter worker``, ``send-now``): leases and polling."""

    # A claimed delivery is another sender's to take over this long after its sender was
    # last heard of (a sender renews its claims every quarter of it)
    lease_seconds: float = Field(default=60.0, ge=1.0, le=3600.0)
    # How often an idle worker looks for queued work
    poll_seconds: float = Field(default=2.0, gt=0, le=300.0)
    # A worker resumes a paused digest after it has stayed paused this long
    resume_paused_after_seconds: float = Field(default=300.0, ge=0)


class DkimSettings(Section):
    selector: str | None = None
    domain: str | None = None
    private_key_file: Path | None = None


_MAILBOX_FORMS = (
    "maildir:/path/to/Maildir, imaps://user@host[:port]/FOLDER or imap://user@host/FOLDER"
)
# The longest bounce address local part that leaves room for a VERP token: "+", a digest id
# of up to 7 digits, "-", and 40 base32 characters (a public id of 17 characters and a MAC).
MAX_BOUNCE_LOCAL_CHARS = 15


class BouncesSettings(Section):
    """Bounces and complaints after delivery: the VERP envelope sender and its mailbox."""

    address: str | None = None  # bounces@example.org: MAIL FROM becomes bounces+TOKEN@...
    mailbox: str | None = None  # where bounces arrive; see _MAILBOX_FORMS
    password: SecretStr | None = None  # the IMAP password; from NEWSLETTER_BOUNCES__PASSWORD
    check_minutes: int = Field(default=30, ge=1, le=1440)
    soft_limit: int = Field(default=3, ge=1)  # soft bounces (of as many mailings) ...
    soft_days: int = Field(default=15, ge=1, le=365)  # ... within this many days: bounced

    @field_validator("address")
    @classmethod
    def _verp_ready(cls, value: str | None) -> str | None:
        if value is None:
            return None
        local, at, domain = value.strip().rpartition("@")
        if not at or not re.fullmatch(r"[A-Za-z0-9._-]+", local) or "." not in domain:
            raise ValueError(
                "must be a plain ASCII address like bounces@example.org (letters, digits, "
                "'.', '_' or '-' before the @; the VERP token goes after a '+')"
            )
        if not re.fullmatch(r"[A-Za-z0-9.-]+", domain):
            raise ValueError("the domain must be ASCII (write an international one as xn--...)")
        if len(local) > MAX_BOUNCE_LOCAL_CHARS:
            raise ValueError(
                f"the part before the @ must be at most {MAX_BOUNCE_LOCAL_CHARS} characters, "
                "so that the VERP token fits an address (e.g. bounces@example.org)"
            )
        return f"{local}@{domain.lower()}"

    @field_validator("mailbox")
    @classmethod
    def _known_kind(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        if not value.strip().lower().startswith(("maildir:", "imap://", "imaps://")):
            raise ValueError(f"expected {_MAILBOX_FORMS}")
        return value.strip()


class LoggingSettings(Section):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
