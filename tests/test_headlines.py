"""Headlines and summaries derived from a lead: golden leads, the seed, and properties."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from newsletter.sources.folder import read_article_file
from newsletter.sources.headlines import (
    TITLE_HARD_MAX_CHARS,
    continuation,
    split_headline,
    split_sentences,
    summarize,
)

SEEDS = Path(__file__).parent.parent / "seeds"

# Lead sentences in the style of wire and local news, with the headline a reader should see.
GOLDEN_HEADLINES = [
    (  # cut before `, with`: never "with 5…"
        "The first snow of the season is expected to reach the lowlands on Thursday night, "
        "with 5 to 10 cm forecast for the river valley and up to 30 cm on the hills, the "
        "national weather service said on Wednesday.",
        "The first snow of the season is expected to reach the lowlands on Thursday night",
    ),
    (
        "Shares in Halvorsen Foods jumped 18% on Tuesday after the company raised its "
        "full-year profit forecast for the second time in three months.",
        "Shares in Halvorsen Foods jumped 18% on Tuesday",
    ),
    (
        "The city council approved a €42 million plan to rebuild the Eastgate bridge, which "
        "has been closed to heavy traffic since a crack was found in one of its piers in March.",
        "The city council approved a €42 million plan to rebuild the Eastgate bridge",
    ),
    (
        "Police closed the A7 motorway in both directions for six hours on Sunday following a "
        "collision between a lorry and two cars near the Wendorf junction.",
        "Police closed the A7 motorway in both directions for six hours on Sunday",
    ),
    (
        "Thousands of people marched through the centre of Lisbon on Saturday amid growing "
        "anger over rents, which have doubled in the city over the past five years.",
        "Thousands of people marched through the centre of Lisbon on Saturday",
    ),
    (  # a semicolon
        "Norvik Shipping posted a first-quarter loss on Thursday; the company blamed weak "
        "freight rates and the cost of rerouting ships around the Cape of Good Hope.",
        "Norvik Shipping posted a first-quarter loss on Thursday",
    ),
    (  # a dash is kept when the attribution after it is the better cut
        "Rail fares will rise by 4.9% in January — the smallest increase in five years, the "
        "transport ministry said on Monday.",
        "Rail fares will rise by 4.9% in January — the smallest increase in five years",
    ),
    (  # never inside `12.5%`, `9.1%`
        "Prices of heating oil rose by 12.5% in the year to October, with diesel up 9.1% and "
        "petrol up 6.4%, the statistics office said.",
        "Prices of heating oil rose by 12.5% in the year to October",
    ),
    (  # the quotation stays whole; a clean cut may run up to 100 characters
        '"We will not close a single school," Education Minister Anna Berg told parliament on '
        "Wednesday, as teachers staged a one-day strike over pay.",
        '"We will not close a single school," Education Minister Anna Berg told parliament on '
        "Wednesday",
    ),
    (  # never between two names joined by `and`
        "Mayor Lena Hartmann and Police Chief Omar Said unveiled a plan for safer school routes "
        "on Monday after three children were hurt at crossings this autumn.",
        "Mayor Lena Hartmann and Police Chief Omar Said unveiled a plan for safer school routes "
        "on Monday",
    ),
    (
        "Brenmoor opens its first new tram line in three decades.",
        "Brenmoor opens its first new tram line in three decades",
    ),
    (  # the period of `U.S.` stays
        "Wheat exports rose 4% last year, mostly to the U.S. The harvest will be smaller.",
        "Wheat exports rose 4% last year, mostly to the U.S.",
    ),
    (
        "Is the four-day week here to stay? A trial at 60 firms suggests it might be.",
        "Is the four-day week here to stay?",
    ),
    (  # no clean cut: an ellipsis, not after `to the`
        "The regional council voted on Wednesday evening to extend the night bus network to the "
        "three outer villages of Amsel, Birkwald and Corvey in the east of the county.",
        "The regional council voted on Wednesday evening to extend the night bus network…",
    ),
    (  # no clean cut: an ellipsis, never after a bare number (`from 95`)
        "The tunnel under the Skarv fjord is expected to cut the drive from Lund to Vika from 95 "
        "to 25 minutes when it opens in 2031.",
        "The tunnel under the Skarv fjord is expected to cut the drive from Lund to Vika…",
    ),
    (  # a participle clause
        "Brenmoor's first new tram line in three decades opened to passengers on Monday, linking "
        "the northern housing estates with the central station in 14 minutes.",
        "Brenmoor's first new tram line in three decades opened to passengers on Monday",
    ),
    (
        "Rents in the old town rose by a third in two years, squeezing out students and young "
        "families, according to a report published on Tuesday by the tenants' union.",
        "Rents in the old town rose by a third in two years",
    ),
    (  # a list of countries is not cut, `as well as` is a boundary
        "The festival will feature bands from Ghana, Chile and Norway, as well as a children's "
        "programme and a night market on the harbour.",
        "The festival will feature bands from Ghana, Chile and Norway",
    ),
    (  # the brackets of `(ECB)` are closed before the cut
        "The European Central Bank (ECB) left interest rates unchanged on Thursday and "
        "signalled that it could cut them in December if inflation keeps falling.",
        "The European Central Bank (ECB) left interest rates unchanged on Thursday",
    ),
    (  # the semicolon inside the quotation is not a boundary
        '"Prices went up; wages did not," said Marta Kowal, who runs a bakery on Halden Square '
        "and has seen her costs double since 2024.",
        '"Prices went up; wages did not," said Marta Kowal',
    ),
    (  # abbreviations and decimals do not end the sentence
        "Mr. Jonas Albrecht of the U.S. Geological Survey said the tremor measured 3.5 on "
        "Tuesday. No damage was reported.",
        "Mr. Jonas Albrecht of the U.S. Geological Survey said the tremor measured 3.5 on Tuesday",
    ),
    (
        "Ukraine's president called on Friday for faster action in boosting air defences and in "
        "repairing damage to power grids following massive Russian air attacks.",
        "Ukraine's president called on Friday for faster action in boosting air defences",
    ),
    (  # a colon
        "Three things to know about the new parking rules: they start in May, cost more at "
        "night and cover the whole old town.",
        "Three things to know about the new parking rules",
    ),
    (  # an attribution with `have found`
        "A small near-Earth asteroid spins once every 3.5 hours, astronomers at the Kestrel "
        "Ridge Observatory have found.",
        "A small near-Earth asteroid spins once every 3.5 hours",
    ),
    (  # an appositive
        "Volunteers planted 1,200 trees along the Lackawanna River on Saturday, the largest "
        "single planting in the county's history.",
        "Volunteers planted 1,200 trees along the Lackawanna River on Saturday",
    ),
    (  # `such as` is no clause
        "Supermarkets in the region have cut the price of staples such as bread, milk and eggs "
        "by up to 15% after a year of falling wholesale costs.",
        "Supermarkets in the region have cut the price of staples such as bread, milk and eggs "
        "by up to 15%",
    ),
]
# Words a headline never ends with: they promise more of the phrase.
DANGLING = {"and", "or", "of", "the", "a", "an", "to", "in", "on", "with", "for", "from", "by"}


@pytest.mark.parametrize(("lead", "headline"), GOLDEN_HEADLINES)
def test_golden_headline(lead: str, headline: str) -> None:
    assert split_headline(lead)[0] == headline


def test_there_are_twenty_golden_leads_and_they_read_as_headlines() -> None:
    assert len(GOLDEN_HEADLINES) >= 20
    for _, headline in GOLDEN_HEADLINES:
        assert len(headline) <= TITLE_HARD_MAX_CHARS
        words = headline.rstrip("…").split()
        assert words[-1].lower() not in DANGLING, headline
        assert not words[-1].isdigit(), headline


def test_the_seed_gets_a_headline_and_the_body_does_not_repeat_it() -> None:
    article = read_article_file(SEEDS / "000_b6c0e47541ad49e3.txt")

    assert article.title == (
        "President Volodymyr Zelenskiy called on Friday for faster action in boosting "
        "Ukrainian air defences"
    )
    assert article.paragraphs[0] == (
        "…and in repairing damage to electricity grids and heating systems following massive "
        "Russian air attacks."
    )
    assert article.summary == article.paragraphs[0]


@pytest.mark.parametrize(
    ("lead", "opening"),
    [
        # the whole first sentence is the headline: the body goes on with the next one
        ("Snow is expected on Thursday. Roads will be icy.", "Roads will be icy."),
        ("Snow is expected on Thursday.", ""),
        # a clause of its own after a semicolon or colon: capitalized
        (
            "Norvik Shipping posted a first-quarter loss on Thursday; the company blamed weak "
            "freight rates and the cost of rerouting ships. Shares fell.",
            "The company blamed weak freight rates and the cost of rerouting ships. Shares fell.",
        ),
        # the rest of the sentence: marked as a continuation
        (
            "The first snow of the season is expected to reach the lowlands on Thursday night, "
            "with 5 to 10 cm forecast for the river valley and up to 30 cm on the hills.",
            "…with 5 to 10 cm forecast for the river valley and up to 30 cm on the hills.",
        ),
        # an ellipsis headline: the body keeps the whole lead
        (
            "The regional council voted on Wednesday evening to extend the night bus network "
            "to the three outer villages of Amsel, Birkwald and Corvey in the east.",
            "The regional council voted on Wednesday evening to extend the night bus network "
            "to the three outer villages of Amsel, Birkwald and Corvey in the east.",
        ),
    ],
)
def test_the_body_opens_with_what_the_headline_left_out(lead: str, opening: str) -> None:
    assert split_headline(lead)[1] == opening


@pytest.mark.parametrize(
    ("text", "title", "rest"),
    [
        ("Ferries run again. Tickets are cheap.", "Ferries run again", "Tickets are cheap."),
        ("Ferries run again, the operator said.", "Ferries run again", "…the operator said."),
        ("Ferries run again; tickets are cheap.", "Ferries run again", "Tickets are cheap."),
        ("Ferries run again.", "Ferries run again", ""),
        ("Ferryman runs.", "Ferry", "Ferryman runs."),  # not the same words
        ("Trams run again.", "Ferries run again", "Trams run again."),
    ],
)
def test_continuation_drops_a_title_the_text_starts_with(text: str, title: str, rest: str):
    assert continuation(text, title) == rest


def test_summary_keeps_whole_sentences_that_fit() -> None:
    first = "A" * 200 + "."
    second = "B" * 150 + "."
    assert summarize(f"{first} {second}") == first
    assert summarize("One. Two. Three.") == "One. Two. Three."
    assert summarize("") == ""


def test_a_long_first_sentence_is_summarized_at_a_clause_boundary() -> None:
    lead = (
        "The regional council voted on Wednesday evening to extend the night bus network to the "
        "three outer villages of Amsel, Birkwald and Corvey, after a two-year trial showed that "
        "the late services were used by far more shift workers, students and hospital staff "
        "than the planners had originally predicted when the scheme was first proposed in 2024."
    )
    assert summarize(lead) == (
        "The regional council voted on Wednesday evening to extend the night bus network to the "
        "three outer villages of Amsel, Birkwald and Corvey…"
    )


@pytest.mark.parametrize(
    ("text", "sentences"),
    [
        ("Mr. Roe met Dr. J. K. Ode. They talked.", ["Mr. Roe met Dr. J. K. Ode.", "They talked."]),
        ("Prices rose 3.5%. 2026 will be calmer.", ["Prices rose 3.5%.", "2026 will be calmer."]),
        ("The U.S. Army came. It left.", ["The U.S. Army came.", "It left."]),
        ("Flights to the U.S. The airline agreed.", ["Flights to the U.S.", "The airline agreed."]),
        ("Open at 9 a.m. on Monday. Free.", ["Open at 9 a.m. on Monday.", "Free."]),
        ("Tram No. 9 runs from Nov. 21 on. Good.", ["Tram No. 9 runs from Nov. 21 on.", "Good."]),
        ('"Is it over?" she asked. Yes!', ['"Is it over?" she asked.', "Yes!"]),
        ("He said: “It works.” Then he left.", ["He said: “It works.”", "Then he left."]),
        ('"We work," she said. "Hard." Done.', ['"We work," she said.', '"Hard."', "Done."]),
        ("Acme Inc. The firm grew.", ["Acme Inc.", "The firm grew."]),
        ("Shares of Acme Inc. rose.", ["Shares of Acme Inc. rose."]),
        ("No final stop", ["No final stop"]),
    ],
)
def test_split_sentences(text: str, sentences: list[str]) -> None:
    assert split_sentences(text) == sentences


@settings(max_examples=200, deadline=None)
@given(st.text(min_size=1, max_size=400))
@example("?\r0")  # a question mark alone is no headline, and no lost text either
def test_any_lead_gives_a_short_headline_and_loses_no_text(lead: str) -> None:
    lead = " ".join(lead.split())
    headline, opening = split_headline(lead)

    assert len(headline) <= TITLE_HARD_MAX_CHARS
    if any(c.isalnum() for c in lead):
        assert headline.strip(" .…")
    # What the headline does not show is still in the body; only a leading "sentence" with
    # no letter or digit in it (`…`, `--`, `?`) may be passed over.
    shown = headline.removesuffix("…")
    skipped = lead[: lead.find(shown)] if shown else ""
    assert lead.startswith(skipped + shown)
    assert not any(c.isalnum() for c in skipped)
    assert opening.lstrip("…").lower() in lead.lower() or not opening


@settings(max_examples=100, deadline=None)
@given(st.text(max_size=600))
def test_any_summary_fits(text: str) -> None:
    summary = summarize(" ".join(text.split()))
    assert len(summary) <= 300
