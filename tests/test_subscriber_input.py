"""What comes in from outside, through every door (add, import, subscribe): addresses
(IDN domains, non-ASCII local parts) in one normalized form, names and attributes cleaned of
control and invisible characters and capped, and a terminal that never runs what was stored.
"""

from __future__ import annotations

import unicodedata
import warnings
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from newsletter import app
from newsletter.app.confirmations import confirmation_report, deliver_confirmations
from newsletter.config import load_settings
from newsletter.errors import SubscriberError
from newsletter.models import Subscriber, SubscriberState
from newsletter.personalization import MAX_ATTR_CHARS, MAX_NAME_CHARS
from newsletter.store import subscribers as rows
from newsletter.subscribers import add_subscriber, import_csv
from newsletter.subscribers.addresses import clean_attr, clean_name, normalize_address, printable
from newsletter.web import create_app
from tests.conftest import Run

with warnings.catch_warnings():  # starlette prefers httpx2; httpx is what is installed
    warnings.simplefilter("ignore", UserWarning)
    from starlette.testclient import TestClient

# Characters that must never reach a header or a terminal from a name.
HOSTILE = "\x1b[31m\x00\x07\x7f\x85\x9b\u202e\u202a\u2066\u2069\u200e\u200f\u061c\ufeff\u200b"
INVISIBLE_CATEGORIES = {"Cc", "Cf", "Cs"}
JOINERS = {"\u200c", "\u200d"}  # kept: Persian, Indic scripts and emoji sequences need them


@pytest.fixture
def ctx(make_context: Callable[..., app.Context]) -> app.Context:
    return make_context()


# --- addresses -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "spellings",
    [
        ["x@bücher.de", "X@BÜCHER.DE", "x@xn--bcher-kva.de", "x@Xn--Bcher-Kva.De"],
        ["ünïcode@bücher.de", "ÜNÏCODE@bücher.de", "u\u0308nïcode@bücher.de"],  # NFD too
        ["user@例え.jp", "USER@xn--r8jz45g.jp"],
        ["θωμάς@παράδειγμα.ελ", "ΘΩΜΆΣ@ΠΑΡΆΔΕΙΓΜΑ.ΕΛ"],
    ],
)
def test_every_spelling_of_an_address_is_one_stored_form(spellings):
    forms = {normalize_address(s) for s in spellings}
    assert len(forms) == 1
    [form] = forms
    domain = form.partition("@")[2]
    assert form == form.lower() and unicodedata.is_normalized("NFC", form)
    assert not domain.startswith("xn--")  # domains are stored as U-labels


def test_idn_and_non_ascii_addresses_are_unique_whatever_the_spelling(ctx, clock):
    added = add_subscriber(ctx.store, "Zoë@BÜCHER.de", "Zoë", now=clock())
    assert added.email == "zoë@bücher.de"
    with pytest.raises(SubscriberError, match="already on the list"):
        add_subscriber(ctx.store, "ZOË@xn--bcher-kva.de", now=clock())


@settings(max_examples=200, deadline=None)
@given(
    st.one_of(
        st.text(max_size=80),
        st.builds(
            lambda local, domain: f"{local}@{domain}",
            st.text(min_size=1, max_size=30),
            st.text(min_size=1, max_size=30),
        ),
        st.emails(),
    )
)
def test_normalizing_any_text_is_an_address_or_one_line_error(raw: str):
    try:
        form = normalize_address(raw)
    except SubscriberError as exc:
        assert "\n" not in str(exc) and "\r" not in str(exc)
        assert str(exc).isprintable()
        return
    assert normalize_address(form) == form  # idempotent: one stored form
    assert normalize_address(form.upper()) == form or form.upper().lower() != form
    assert form == form.strip() and "@" in form
    assert all(unicodedata.category(c) not in INVISIBLE_CATEGORIES for c in form)
    assert len(form.encode()) <= 254


@pytest.mark.parametrize(
    "raw",
    [
        "a\u037eb@example.org",  # GREEK QUESTION MARK: ';' after NFC
        "ada@exa\u037emple.org",
        "x@" + "ü" * 60 + ".de",  # 60 characters, but over 63 octets as an A-label
        "ada\u202e@example.org",
    ],
)
def test_what_only_looks_valid_is_refused(raw):
    with pytest.raises(SubscriberError, match="is not a valid email address"):
        normalize_address(raw)


def test_a_huge_input_is_refused_without_echoing_it():
    with pytest.raises(SubscriberError) as caught:
        normalize_address("a" * 100_000 + "@example.org")
    assert len(str(caught.value)) < 200


# --- names and attributes --------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=400))
def test_cleaned_names_are_one_visible_line_capped_and_stable(raw: str):
    name = clean_name(raw)
    assert len(name) <= MAX_NAME_CHARS
    assert name == name.strip() and "  " not in name
    assert all(c == " " or not c.isspace() for c in name)  # no tabs, newlines, separators
    assert all(unicodedata.category(c) not in INVISIBLE_CATEGORIES or c in JOINERS for c in name)
    assert clean_name(name) == name
    assert unicodedata.is_normalized("NFC", name)


@settings(max_examples=100, deadline=None)
@given(st.text(max_size=800))
def test_cleaned_attributes_are_capped_too(raw: str):
    value = clean_attr(raw)
    assert len(value) <= MAX_ATTR_CHARS
    assert all(unicodedata.category(c) not in INVISIBLE_CATEGORIES or c in JOINERS for c in value)


def test_what_is_removed_and_what_is_kept():
    assert clean_name(f"  Ada{HOSTILE}\tLovelace\r\n ") == "Ada[31m Lovelace"
    assert clean_name("Mehr\u200cdad") == "Mehr\u200cdad"  # ZWNJ is part of the spelling
    assert clean_name("👩\u200d💻 Zoë") == "👩\u200d💻 Zoë"
    assert clean_name("Zoe\u0308") == "Zoë"  # NFC
    assert clean_name("x" * 500) == "x" * MAX_NAME_CHARS


def stored(ctx: app.Context, email: str) -> Subscriber:
    with ctx.store.atomic() as conn:
        found = rows.get_by_email(conn, email)
    assert found is not None
    return found


def test_every_door_cleans_names_and_attributes(make_context, smtp_server, tmp_path, clock):
    """The operator's doors clean what they are given; the public ones refuse hidden text."""
    ctx = make_context(smtp={"port": smtp_server.port})
    hostile = f"Eve{HOSTILE} Evil" + "!" * 300
    add_subscriber(ctx.store, "add@example.org", hostile, now=clock())
    source = tmp_path / "in.csv"
    source.write_text(
        f'email,name,city\nimport@example.org,"{hostile}","Paris{HOSTILE}{"x" * 400}"\n',
        encoding="utf-8",
    )
    import_csv(ctx.store, source, now=clock())
    client = TestClient(create_app(ctx))
    form = client.post(
        "/subscribe",
        data={"email": "form@example.org", "name": hostile},
        headers={"Origin": ctx.settings.web.base_url},
    )
    api = client.post("/api/subscribe", json={"email": "api@example.org", "name": hostile})
    assert (form.status_code, api.status_code) == (422, 422)
    assert "control or invisible characters" in api.json()["error"]

    for email in ("add@example.org", "import@example.org"):
        name = stored(ctx, email).name
        assert name.startswith("Eve[31m Evil!") and len(name) == MAX_NAME_CHARS, email
    city = stored(ctx, "import@example.org").attrs["city"]
    assert city.startswith("Paris[31m x")  # NEL is whitespace and len(city) == MAX_ATTR_CHARS
    with ctx.store.atomic() as conn:
        assert rows.get_by_email(conn, "form@example.org") is None
        assert rows.get_by_email(conn, "api@example.org") is None


def test_every_door_stores_the_normalized_address(make_context, tmp_path, clock):
    ctx = make_context()
    add_subscriber(ctx.store, "Add@BÜCHER.de", now=clock())
    source = tmp_path / "in.csv"
    source.write_text("email\nImport@XN--BCHER-KVA.DE\nÜnï@Bücher.de\n", encoding="utf-8")

    report = import_csv(ctx.store, source, now=clock())

    assert report.imported == 2
    with ctx.store.atomic() as conn:
        assert set(rows.states_of(conn, ["add@bücher.de", "import@bücher.de", "ünï@bücher.de"]))


def test_the_public_forms_never_fail_with_500_on_international_addresses(
    make_context, smtp_server, clock
):
    """Whether the confirmation can be sent is the delivery stage's business (SMTPUTF8, IDN):
    the visitor gets the same answer, and the address is stored in its normalized form."""
    ctx = make_context(smtp={"port": smtp_server.port})
    client = TestClient(create_app(ctx))
    codes = [
        client.post("/api/subscribe", json={"email": email}).status_code
        for email in ("X@BÜCHER.de", "Ünï@bücher.de")
    ]
    run = deliver_confirmations(ctx)

    assert codes == [202, 202] and run is not None
    # The IDN domain goes out in its A-label form; the non-ASCII local part needs SMTPUTF8,
    # which this server does not offer: that delivery fails, with the reason.
    assert smtp_server.handler.recipients() == ["x@xn--bcher-kva.de"]
    assert confirmation_report(ctx, [r.digest_id for r in run.reports]).failed == [
        (
            "ünï@bücher.de",
            "the server does not offer SMTPUTF8, which the address 'ünï@bücher.de' needs "
            "(its local part is not ASCII)",
        )
    ]
    with ctx.store.atomic() as conn:
        assert set(rows.states_of(conn, ["x@bücher.de", "ünï@bücher.de"]).values()) == {"pending"}


# --- the operator's terminal -------------------------------------------------------------


@settings(max_examples=100, deadline=None)
@given(st.text(max_size=100))
def test_printable_shows_every_character_without_running_any(raw: str):
    assert printable(raw).isprintable()
    if raw.isprintable():
        assert printable(raw) == raw


def test_list_never_prints_raw_control_characters(run: Run, env: Path):
    """Names stored by an older release, before cleaning on the way in, are escaped."""
    run("subscribers", "add", "ada@example.org", "--name", "Ada")
    ctx = app.Context.open(load_settings())
    with ctx.store.atomic() as conn:
        rows.insert_many(
            conn,
            [("eve@example.org", "Eve\x1b]0;owned\x07\u202eevil\tname", {})],
            state=SubscriberState.ACTIVE,
            now=ctx.clock(),
        )
    ctx.close()

    code, out, _ = run("subscribers", "list")

    assert code == 0
    assert out.splitlines()[1] == "eve@example.org\tactive\tEve\\x1b]0;owned\\x07\\u202eevil\\tname"
    assert all(line.count("\t") == 2 for line in out.splitlines())
