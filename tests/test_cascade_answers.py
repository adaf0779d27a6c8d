"""Issue 13, item 4: only an unambiguous answer counts, in the cascade and the baselines.

The JSON rating, or a whole answer that is just "Yes" or "No", is a rating; anything else
("No clear answer", "Not sure", "Yes and no") is no rating, so it ends "undecided", never
"not met" (the cascade) or "safe" (a chain-of-thought baseline).
"""

from __future__ import annotations

import asyncio
import io

import pytest
from PIL import Image

from judge import prompts
from judge.engine.cascade import parse_rating
from judge.evaluate.baselines import Baseline
from judge.images import load_image
from judge.models.scripted import ScriptedBackend, statement_of
from tests.test_engine_decisions import answers, make_lock, only, rule, run

AMBIGUOUS = [
    "No clear answer",
    "No clear answer can be given from this image.",
    "Not sure",
    "Yes and no",
    "Yes and no.",
    "No, but maybe yes",
    "Nope",
    "Yes/No",
    "I cannot tell.",
    '{"rating": "No clear answer", "rationale": "too dark"}',
    '"rating": "Not sure"',
    'rating: No clear answer',
    '"rating": "Yes", then "rating": "No"',
    "",
]


@pytest.mark.parametrize("text", AMBIGUOUS)
def test_ambiguous_answers_are_no_rating(text: str) -> None:
    assert parse_rating(text) is None


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Yes", (True, "")),
        ("no", (False, "")),
        ("  NO.  ", (False, "")),
        ("**Yes**", (True, "")),
        ('"No"', (False, "")),
        ('{"rating": "No", "rationale": "no clear sign of it"}', (False, "no clear sign of it")),
        ('{"rating": "Yes", "rationale": "cut off', (True, "")),
        ("rating: no\nrationale: nothing there", (False, "")),
    ],
)
def test_unambiguous_answers_count(text: str, expected: tuple[bool, str]) -> None:
    assert parse_rating(text) == expected


@pytest.mark.parametrize("summary", ["No clear answer", "Not sure", "Yes and no"])
def test_cascade_ambiguous_summary_is_undecided_never_not_met(summary: str) -> None:
    # Both tries (the summary and its one retry) give the same non-answer.
    backend = ScriptedBackend(answers(c=0.6), cascades={("c", "img"): ["hmm", summary, summary]})
    verdict = only(run(backend, make_lock(rule("r", "c"))))
    alt = verdict.preconditions[0].alternatives[0]
    assert verdict.outcome == "undecided"
    assert (alt.outcome, alt.stage) == ("undecided", "cascade")
    assert "unparseable" in (alt.error or "")


def _png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (32, 32), (10, 200, 30)).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("summaries", "outcome"),
    [
        (["No clear answer", "Not sure"], "undecided"),
        (["Yes and no", "Yes and no"], "undecided"),
        (["Not sure", "No"], "safe"),  # the retry gives a whole "No"
        (['{"rating": "Yes", "rationale": "a gun"}'], "unsafe"),
    ],
)
def test_baseline_cot_reads_with_the_same_parser(summaries: list[str], outcome: str) -> None:
    data = _png()
    key = load_image(data).sha256
    question = statement_of(prompts.render("baseline_prior_cot"))
    backend = ScriptedBackend(cascades={(question, key): ["thinking it over", *summaries]})
    baseline = Baseline("prior-cot", backend, make_lock(rule("r", "c")))
    judged = asyncio.run(baseline.ajudge("x", data))
    assert judged.verdict.outcome == outcome
    if outcome == "undecided":
        assert judged.score is None and "no Yes/No rating" in (judged.verdict.error or "")
