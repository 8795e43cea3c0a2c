"""Settings: file, environment, defaults, and one-line errors naming the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from newsletter.config import is_loopback_host, load_settings
from newsletter.errors import ConfigError

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for name in list(os.environ):
        if name.startswith("NEWSLETTER_"):
            monkeypatch.delenv(name)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_example_config_is_valid_and_matches_the_defaults():
    example = load_settings(REPO / "config.example.toml")
    defaults = load_settings()
    assert example.smtp == defaults.smtp
    assert example.digest == defaults.digest
    assert example.schedule == defaults.schedule
    assert example.sources.articles_dir == REPO / "seeds"


def test_file_values_and_relative_paths(tmp_path: Path):
    path = write(
        tmp_path,
        '[smtp]\nhost = "mail.example.org"\nport = 587\nsecurity = "starttls"\n'
        '[sources]\narticles_dir = "articles"\n[store]\nurl = "sqlite:///state/news.db"\n',
    )
    settings = load_settings(path)
    assert (settings.smtp.host, settings.smtp.port, settings.smtp.security) == (
        "mail.example.org",
        587,
        "starttls",
    )
    assert settings.sources.articles_dir == tmp_path / "articles"
    assert settings.store.url == f"sqlite:///{tmp_path / 'state/news.db'}"


def test_environment_wins_over_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    path = write(tmp_path, '[smtp]\nport = 2525\npassword = "from-file"\n')
    monkeypatch.setenv("NEWSLETTER_SMTP__PASSWORD", "from-env")
    monkeypatch.setenv("NEWSLETTER_CONFIG", str(path))
    settings = load_settings()
    assert settings.smtp.port == 2525
    assert settings.smtp.password is not None
    assert settings.smtp.password.get_secret_value() == "from-env"
    assert "from-env" not in repr(settings)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[smtp]\nport = 'abc'\n", "smtp.port: Input should be a valid integer"),
        ("[smtp]\nprot = 25\n", "smtp.prot: unknown key"),
        (
            "[smtp]\nsecurity = 'ssl'\n",
            "smtp.security: Input should be 'none', 'starttls' or 'tls'",
        ),
        ("[schedule]\ntimezone = 'Mars/Olympus'\n", "schedule.timezone: unknown time zone"),
        ("[web]\nbase_url = 'example.org'\n", "web.base_url: must start with http:// or https://"),
        ("[newsletter]\nfrom_address = 'not-an-address'\n", "newsletter.from_address:"),
        (
            "[digest]\nmax_articles = 0\n",
            "digest.max_articles: Input should be greater than or equal to 1",
        ),
    ],
)
def test_a_bad_value_is_one_line_naming_file_and_key(tmp_path: Path, text: str, expected: str):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load_settings(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: ")
    assert expected in message
    assert "\n" not in message
    assert caught.value.exit_code == 2


def test_a_bad_environment_value_names_the_variable(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("NEWSLETTER_SMTP__CONNECTIONS", "many")
    with pytest.raises(ConfigError, match=r"smtp\.connections: .*NEWSLETTER_SMTP__CONNECTIONS"):
        load_settings()


def test_secrets_never_appear_in_error_messages(tmp_path: Path):
    path = write(tmp_path, "[web]\nsecret = 12345\n[smtp]\npassword = 99\n")
    with pytest.raises(ConfigError) as caught:
        load_settings(path)
    assert "12345" not in str(caught.value) and "99" not in str(caught.value)


def test_missing_file_and_bad_toml(tmp_path: Path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_settings(tmp_path / "nope.toml")
    with pytest.raises(ConfigError, match=r"not valid TOML: .*line 1"):
        load_settings(write(tmp_path, "[smtp\nport = 1\n"))


def test_the_default_web_secret_is_recognized(tmp_path: Path):
    assert load_settings().web.uses_default_secret
    path = write(tmp_path, "[web]\nsecret = 'a-long-random-string-from-the-operator'\n")
    assert not load_settings(path).web.uses_default_secret


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.8.0.1", True),
        ("::1", True),
        ("localhost", True),
        ("0.0.0.0", False),
        ("10.0.0.1", False),
        ("smtp.example.org", False),
    ],
)
def test_loopback_hosts(host: str, loopback: bool):
    assert is_loopback_host(host) is loopback
