"""Settings: one validated object, loaded from a TOML file and NEWSLETTER_* env vars.

Precedence: environment (``NEWSLETTER_<SECTION>__<KEY>``) over the file over defaults.
Relative paths in a file are relative to the file's folder; defaults are relative to the
current directory. Pass the resulting ``Settings`` object down; nothing reads it globally.
"""

from __future__ import annotations

import ipaddress
import os
import re
import tomllib
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal, get_args
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    BaseModel,
    ConfigDict,
    EmailStr,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
)
from pydantic_settings import (
    BaseSettings,
    InitSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
)

from newsletter.errors import ConfigError

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


_NO_FILE: Mapping[str, Any] = MappingProxyType({})
_file_data: ContextVar[Mapping[str, Any]] = ContextVar("newsletter_config_file", default=_NO_FILE)


class Settings(BaseSettings):
    """The whole configuration, validated. Build it with :func:`load_settings`."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        extra="forbid",
        frozen=True,
    )

    smtp: SmtpSettings = SmtpSettings()
    newsletter: NewsletterSettings = NewsletterSettings()
    sources: SourcesSettings = SourcesSettings()
    store: StoreSettings = StoreSettings()
    digest: DigestSettings = DigestSettings()
    web: WebSettings = WebSettings()
    schedule: ScheduleSettings = ScheduleSettings()
    workers: WorkersSettings = WorkersSettings()
    dkim: DkimSettings = DkimSettings()
    bounces: BouncesSettings = BouncesSettings()
    logging: LoggingSettings = LoggingSettings()
    config_path: Path | None = None

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        file_settings = InitSettingsSource(settings_cls, init_kwargs=dict(_file_data.get()))
        return (init_settings, env_settings, file_settings)

    @property
    def var_dir(self) -> Path:
        """Where runtime state (database, capture inbox, previews) lives by default."""
        base = self.config_path.parent if self.config_path else Path.cwd()
        return base / DEFAULT_VAR_DIR


@contextmanager
def _file_values(data: Mapping[str, Any]) -> Iterator[None]:
    token = _file_data.set(data)
    try:
        yield
    finally:
        _file_data.reset(token)


def load_settings(path: Path | str | None = None, **overrides: Any) -> Settings:
    """Load settings from ``path`` (or ``$NEWSLETTER_CONFIG``), env vars and ``overrides``."""
    if path is None and os.environ.get(CONFIG_ENV_VAR):
        path = os.environ[CONFIG_ENV_VAR]
    config_path = Path(path).resolve() if path else None
    data = _read_toml(config_path) if config_path else {}
    source = str(config_path) if config_path else "the built-in defaults"
    try:
        with _file_values(data):
            settings = Settings(**overrides, config_path=config_path)
    except ValidationError as exc:
        raise ConfigError(_describe_validation_error(exc, source)) from None
    except SettingsError as exc:  # an environment variable that is not valid JSON
        raise ConfigError(_describe_unparsable_environment(exc)) from None
    return _resolve_paths(settings) if config_path else settings


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except FileNotFoundError:
        raise ConfigError(
            f"{path}: config file not found (check --config or ${CONFIG_ENV_VAR})"
        ) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config file: {exc.strerror}") from None


def _env_name(loc: tuple[int | str, ...]) -> str:
    return ENV_PREFIX + "__".join(str(p) for p in loc if not isinstance(p, int)).upper()


def _variable_behind(loc: tuple[int | str, ...]) -> str | None:
    """The environment variable a value at ``loc`` came from, if one is set (env wins)."""
    set_names = {name.upper(): name for name in os.environ}
    for end in range(len(loc), 0, -1):  # smtp.port, then smtp (a whole section as JSON)
        if isinstance(loc[end - 1], int):
            continue
        name = set_names.get(_env_name(loc[:end]))
        if name is not None:
            return name
    return None


# Keys whose values an error never repeats: secrets, and a mailbox URL that may hold one.
_NEVER_REPEATED = ("password", "secret", "mailbox")


def _describe_validation_error(exc: ValidationError, source: str) -> str:
    """One line naming the first bad key, where its value came from, and what is wrong."""
    error = exc.errors()[0]
    key = ".".join(str(part) for part in error["loc"])
    variable = _variable_behind(error["loc"])
    message = error["msg"]
    if error["type"] == "extra_forbidden":
        message = "unknown key (check the spelling against config.example.toml)"
    elif error["type"] == "missing":
        message = "required key is missing"
    else:
        message = message.removeprefix("Value error, ")
        if (
            "input" in error
            and not isinstance(error["input"], dict | list)
            and not any(word in key for word in _NEVER_REPEATED)
        ):
            message += f" (got {error['input']!r})"
    extra = f" (+{len(exc.errors()) - 1} more)" if len(exc.errors()) > 1 else ""
    if variable is not None:
        return f"environment variable {variable}: {key}: {message} [fix or unset it]{extra}"
    hint = f"set it in the file or with {_env_name(error['loc'])}"
    return f"{source}: {key}: {message} [{hint}]{extra}"


def _describe_unparsable_environment(exc: SettingsError) -> str:
    """pydantic-settings names only the field; name the variables that can have set it."""
    field_name = str(exc).partition('field "')[2].partition('"')[0]
    prefix = _env_name((field_name,)) if field_name else ENV_PREFIX
    names = sorted(n for n in os.environ if n.upper().startswith(prefix))
    which = ", ".join(names) or f"a {prefix}* variable"
    return (
        f"environment variable {which}: not a valid value for [{field_name}] (lists and "
        f"tables are JSON, e.g. {ENV_PREFIX}WEB__PREVIOUS_SECRETS='[\"an-old-secret...\"]')"
    )


def _resolve_paths(settings: Settings) -> Settings:
    assert settings.config_path is not None
    base = settings.config_path.parent

    def absolute(p: Path) -> Path:
        return p if p.is_absolute() else base / p

    sources = settings.sources.model_copy(
        update={"articles_dir": absolute(settings.sources.articles_dir)}
    )
    digest = settings.digest
    if digest.templates_dir is not None:
        digest = digest.model_copy(update={"templates_dir": absolute(digest.templates_dir)})
    dkim = settings.dkim
    if dkim.private_key_file is not None:
        dkim = dkim.model_copy(update={"private_key_file": absolute(dkim.private_key_file)})
    bounces = settings.bounces
    mailbox = bounces.mailbox or ""
    folder = mailbox[8:] if mailbox[:8].lower() == "maildir:" else ""
    if folder and not folder.startswith(("/", "~")):
        bounces = bounces.model_copy(update={"mailbox": f"maildir:{absolute(Path(folder))}"})
    store = settings.store
    prefix = "sqlite:///"
    if (
        store.url.startswith(prefix)
        and not store.url.startswith(prefix + "/")
        and ":memory:" not in store.url
    ):
        store = store.model_copy(update={"url": prefix + str(base / store.url[len(prefix) :])})
    return settings.model_copy(
        update={
            "sources": sources,
            "digest": digest,
            "dkim": dkim,
            "bounces": bounces,
            "store": store,
        }
    )
