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


def test_a_bad_environment_value_is_blamed_on_the_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    path = write(tmp_path, "[smtp]\nconnections = 4\n")
    monkeypatch.setenv("NEWSLETTER_SMTP__CONNECTIONS", "many")
    for config in (None, path):  # with or without a file, the variable is the culprit
        with pytest.raises(ConfigError) as caught:
            load_settings(config)
        message = str(caught.value)
        assert message.startswith(
            "environment variable NEWSLETTER_SMTP__CONNECTIONS: smtp.connections: "
        )
        assert "(got 'many')" in message
        assert "built-in defaults" not in message and str(path) not in message


def test_a_bad_section_variable_is_blamed_on_it(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("NEWSLETTER_SMTP", '{"port": "abc"}')
    with pytest.raises(ConfigError, match=r"^environment variable NEWSLETTER_SMTP: smtp\.port: "):
        load_settings()


def test_an_unparsable_json_variable_is_one_line(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("NEWSLETTER_SOURCES__FEEDS", "not json")
    with pytest.raises(ConfigError) as caught:
        load_settings()
    message = str(caught.value)
    assert message.startswith("environment variable NEWSLETTER_SOURCES__FEEDS: not a valid value")
    assert "\n" not in message


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[smtp]\ntimeout = inf\n", "smtp.timeout: Input should be a finite number"),
        ("[smtp]\ntimeout = nan\n", "smtp.timeout: Input should be a finite number"),
        ("[smtp]\nmax_per_second = inf\n", "smtp.max_per_second: Input should be a finite"),
        ("[sources]\nfetch_timeout = -inf\n", "sources.fetch_timeout: Input should be a finite"),
        ("[smtp]\nport = true\n", "smtp.port: must be a number, not true or false"),
        ("[web]\nport = false\n", "web.port: must be a number, not true or false"),
        ("[smtp]\ntimeout = true\n", "smtp.timeout: must be a number, not true or false"),
        ("[schedule]\ngrace_minutes = 0\n", "schedule.grace_minutes: Input should be greater"),
        ("[web]\nprevious_secrets = ['short']\n", "web.previous_secrets: must be at least 16"),
    ],
)
def test_numbers_are_finite_not_booleans_and_in_range(tmp_path: Path, text: str, expected: str):
    with pytest.raises(ConfigError) as caught:
        load_settings(write(tmp_path, text))
    assert expected in str(caught.value)
    assert "short" not in str(caught.value)  # a secret is never echoed


def test_an_infinite_timeout_from_the_environment_is_refused(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("NEWSLETTER_SMTP__TIMEOUT", "inf")
    with pytest.raises(ConfigError, match=r"NEWSLETTER_SMTP__TIMEOUT: smtp\.timeout: .*finite"):
        load_settings()


def test_previous_secrets_from_the_file_or_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    path = write(tmp_path, "[web]\nprevious_secrets = ['an-older-secret-from-2025']\n")
    assert [s.get_secret_value() for s in load_settings(path).web.previous_secrets] == [
        "an-older-secret-from-2025"
    ]
    monkeypatch.setenv(
        "NEWSLETTER_WEB__PREVIOUS_SECRETS", '["one-older-secret-xx", "two-x-x-x-x-x-x-x"]'
    )
    assert len(load_settings(path).web.previous_secrets) == 2
    assert "one-older" not in repr(load_settings(path))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[smtp]\nprot = 25\n", "smtp.prot: unknown key (did you mean port? "),
        ("[smtpp]\nhost = 'x'\n", "smtpp: unknown key (did you mean smtp? "),
        (
            "[[sources.feeds]]\nurl = 'https://example.org/f'\nnmae = 'x'\n",
            "sources.feeds.0.nmae: unknown key (did you mean name? ",
        ),
        # nothing close: no guess, only where the keys are listed
        ("[sources]\nseeds_dir = 'x'\n", "sources.seeds_dir: unknown key (the keys are listed"),
    ],
)
def test_an_unknown_key_names_the_closest_known_one(tmp_path: Path, text: str, expected: str):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load_settings(path)
    assert str(caught.value).startswith(f"{path}: {expected}")
    assert str(caught.value).endswith("[fix or remove it]")


def test_secrets_never_appear_in_error_messages(tmp_path: Path):
    # Values no temporary path can hold by chance: the message names the file.
    path = write(tmp_path, "[web]\nsecret = 73516284\n[smtp]\npassword = 8041926375\n")
    with pytest.raises(ConfigError) as caught:
        load_settings(path)
    message = str(caught.value).replace(str(path), "")
    assert "73516284" not in message and "8041926375" not in message


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
    ("base_url", "secret", "refused", "warned"),
    [
        ("https://news.example.org", None, True, False),
        ("http://news.example.org", None, True, True),
        ("http://127.0.0.1:8000", None, False, False),
        ("http://localhost:8000/news", None, False, False),
        ("http://[::1]:8000", None, False, False),
        ("https://news.example.org", "a-long-random-secret-0123", False, False),
        ("http://news.example.org", "a-long-random-secret-0123", False, True),
        ("http://10.0.0.5:8000", "a-long-random-secret-0123", False, True),
    ],
)
def test_link_settings_problems(base_url: str, secret: str | None, refused: bool, warned: bool):
    web = {"base_url": base_url} | ({"secret": secret} if secret else {})
    settings = load_settings(None, web=web).web
    assert (settings.forgeable_links_problem() is not None) is refused
    assert (settings.plain_http_warning() is not None) is warned


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
