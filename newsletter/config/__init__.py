"""Settings: one validated object, loaded from a TOML file and NEWSLETTER_* env vars.

Precedence: environment (``NEWSLETTER_<SECTION>__<KEY>``) over the file over defaults.
Relative paths in a file are relative to the file's folder; defaults are relative to the
current directory. Pass the resulting ``Settings`` object down; nothing reads it globally.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from types import MappingProxyType
from typing import Any

from pydantic import ValidationError
from pydantic_settings import (
    BaseSettings,
    InitSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
)

from newsletter.config.messages import describe_unparsable_environment, describe_validation_error
from newsletter.config.sections import (
    CONFIG_ENV_VAR,
    DEFAULT_VAR_DIR,
    DEFAULT_WEB_SECRET,
    ENV_PREFIX,
    MAX_BOUNCE_LOCAL_CHARS,
    MIN_SECRET_CHARS,
    BouncesSettings,
    DigestSettings,
    DkimSettings,
    FeedSettings,
    LoggingSettings,
    NewsletterSettings,
    ScheduleSettings,
    SmtpSettings,
    SourcesSettings,
    StoreSettings,
    WebSettings,
    WorkersSettings,
    is_loopback_host,
)
from newsletter.errors import ConfigError

__all__ = [
    "CONFIG_ENV_VAR",
    "DEFAULT_VAR_DIR",
    "DEFAULT_WEB_SECRET",
    "ENV_PREFIX",
    "MAX_BOUNCE_LOCAL_CHARS",
    "MIN_SECRET_CHARS",
    "BouncesSettings",
    "DigestSettings",
    "DkimSettings",
    "FeedSettings",
    "LoggingSettings",
    "NewsletterSettings",
    "ScheduleSettings",
    "Settings",
    "SmtpSettings",
    "SourcesSettings",
    "StoreSettings",
    "WebSettings",
    "WorkersSettings",
    "is_loopback_host",
    "load_settings",
]

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
        raise ConfigError(describe_validation_error(exc, source, Settings)) from None
    except SettingsError as exc:  # an environment variable that is not valid JSON
        raise ConfigError(describe_unparsable_environment(exc)) from None
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
