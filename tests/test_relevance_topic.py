"""The VLM relevance question asks about a rule's short topic, and reads as a question.

Before topics, the question rendered a rule's text after "the image shows", which gave
"the image shows The image must not show a person's genitals ...". These tests render the
question for every rule of every shipped constitution and for locks without topics, and
check the measurement of a scan's recall and share filtered on a scripted set.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import re
from collections.abc import Sequence
from pathlib import Path

import pytest
from PIL import Image

from judge.bench.naive import NaiveJudge
from judge.constitution.lockfile import load_lock
from judge.constitution.schema import CompiledRule, PreconditionSpec
from judge.evaluate.datasets import Example
from judge.evaluate.relevance import (
    RelevancePair,
    format_relevance,
    relevance_quality,
    score_relevance,
)
from judge.models.scripted import ScriptedBackend
from judge.queries import relevance_query, relevance_question, rule_topic
from judge.resources import data_dir
from tests.test_engine_decisions import make_lock as lock_of

SHIPPED = ("clue", "moderation", "toy")


def compiled(
    rule_id: str, *pres: object, text: str = "The image must not show x.", **extra: object
) -> CompiledRule:
    return CompiledRule(
        id=rule_id,
        source_text=text,
        text=text,
        text_sha256="0" * 64,
        preconditions=[PreconditionSpec.model_validate(p) for p in pres],
        **extra,  # type: ignore[arg-type]
    )


def reads_well(question: str, rule: CompiledRule) -> None:
    """The question names a short topic, not the rule's sentence."""
    topic_line = question.splitlines()[-1]
    assert topic_line.startswith("Topic: "), question
    topic = topic_line.removeprefix("Topic: ")
    assert topic and len(topic) <= 80, topic
    assert topic != rule.text and topic != rule.source_text
    assert not re.search(r"\b(must|should|images?)\b", topic, re.IGNORECASE), topic
    assert not re.search(r"the image shows the image", question, re.IGNORECASE), question
    assert not topic.endswith("."), topic
    assert "{" not in question and "}" not in question


# ---- the topic of a rule ------------------------------------------------------------------


def test_a_rule_with_a_topic_is_asked_about_it() -> None:
    rule = compiled(
        "nudity-genitals",
        {"any_of": ["a person's genitals are visible"], "objects": ["genitals"]},
        text="The image must not show a person's genitals, anus or pubic area.",
        topic="genitals, anus or pubic area",
    )
    question = relevance_question(rule_topic(rule))
    assert question.endswith("Topic: genitals, anus or pubic area")
    assert question.startswith("Does the image show anything related to the following topic")
    reads_well(question, rule)


def test_a_rule_without_a_topic_falls_back_to_its_object_words_never_its_text() -> None:
    rule = compiled(
        "harm-fatal-injury",
        {
            "any_of": ["a person is visible", "an animal is visible"],
            "objects": ["person", "animal"],
        },
        {"any_of": ["the body has open wounds"], "objects": ["wound", "person"]},
        {"any_of": ["the throat is cut open"], "objects": ["throat"]},
        text="The image must not show a person or an animal with bloody injuries.",
    )
    assert rule_topic(rule) == "person, animal, wound or throat"  # each word once, in order
    reads_well(relevance_question(rule_topic(rule)), rule)


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ({"category": "violence"}, "violence"),  # no object words: the category
        ({}, "harm fatal injury"),  # nothing else: the id as words
    ],
)
def test_topic_fallbacks_without_object_words(extra: dict[str, str], expected: str) -> None:
    rule = compiled("harm.fatal-injury", "a person is visible", **extra)
    assert rule_topic(rule) == expected


def test_object_word_fallback_stays_a_phrase() -> None:
    words = [f"thing{i}" for i in range(12)]
    rule = compiled(
        "r", {"any_of": ["a"], "objects": words[:8]}, {"any_of": ["b"], "objects": words[8:]}
    )
    assert rule_topic(rule) == "thing0, thing1, thing2, thing3, thing4 or thing5"


@pytest.mark.parametrize("name", SHIPPED)
def test_every_shipped_rule_renders_a_question_that_reads_well(name: str) -> None:
    # The lock as shipped: its freshness is the business of `judge compile --check`.
    for rule in load_lock(data_dir("constitutions") / f"{name}.lock.yaml").rules:
        reads_well(relevance_question(rule_topic(rule)), rule)


# ---- every place that asks the question ---------------------------------------------------


def test_vlm_relevance_scorer_asks_each_rule_by_topic() -> None:
    rules = [
        compiled("a", {"any_of": ["x"], "objects": ["syringe"]}, topic="a syringe or needle"),
        compiled("b", {"any_of": ["y"], "objects": ["flames", "burns"]}),
    ]
    backend = ScriptedBackend(
        {("topic: a syringe or needle", "k"): 0.9, ("topic: flames or burns", "k"): 0.2}
    )
    image = Image.new("RGB", (32, 32), "white")
    asked = [relevance_query(rule, image, "k") for rule in rules]
    scores = [result.m for result in asyncio.run(backend.yes_no(asked))]
    assert scores == [pytest.approx(0.9), pytest.approx(0.2)]


def test_naive_algorithm_asks_the_same_topic_question() -> None:
    lock = lock_of(compiled("a", "x", topic="red things"))
    backend = ScriptedBackend({("topic: red things", "*"): 0.1})
    naive = NaiveJudge(lock, backend, relevance="vlm")
    image = Image.new("RGB", (32, 32), "white")
    rules, calls = asyncio.run(naive.judge_pixels(image, "k"))
    assert [r.outcome for r in rules] == ["irrelevant"] and calls["relevance"] == 1
    assert backend.asked() == [("topic: red things", "k")]


# ---- measuring a scan ---------------------------------------------------------------------


def test_relevance_quality_counts_recall_and_share_filtered() -> None:
    pairs = [
        RelevancePair("i1", "a", True, 0.9, 0.5),  # violated, kept
        RelevancePair("i1", "b", False, 0.1, 0.5),  # filtered
        RelevancePair("i2", "a", True, 0.2, 0.5),  # violated, filtered: a miss
        RelevancePair("i2", "b", False, None, 0.5),  # no answer: kept
    ]
    quality = relevance_quality(pairs, "vlm")
    assert (quality.pairs, quality.violated, quality.kept_violated) == (4, 2, 1)
    assert quality.recall == 0.5 and quality.filtered_share == 0.5 and quality.unanswered == 1
    table = format_relevance([quality])
    assert "vlm" in table and "50.0%" in table
    empty = relevance_quality([])
    assert empty.recall is None and empty.filtered_share is None


class FakeClip:
    def __init__(self, by_colour: dict[str, dict[str, float]]) -> None:
        self.by_colour = by_colour

    def score(self, image: Image.Image, texts: Sequence[str]) -> list[float]:
        colour = "red" if image.getpixel((0, 0)) == (255, 0, 0) else "white"
        return [self.by_colour[colour][t] for t in texts]


def _example(folder: Path, name: str, colour: str, rules: tuple[str, ...]) -> tuple[Example, str]:
    buffer = io.BytesIO()
    Image.new("RGB", (32, 32), colour).save(buffer, format="PNG")
    path = folder / f"{name}.png"
    path.write_bytes(buffer.getvalue())
    label = "unsafe" if rules else "safe"
    key = hashlib.sha256(buffer.getvalue()).hexdigest()[:16]
    return Example(id=name, label=label, rules=rules, path=path), key


def test_score_relevance_clip_and_vlm_on_the_same_pairs(tmp_path: Path) -> None:
    lock = lock_of(
        compiled(
            "red",
            {"any_of": ["a red shape"], "objects": ["red shape"]},
            text="no red",
            topic="red shapes",
        ),
        compiled(
            "blue",
            {"any_of": ["a blue shape"], "objects": ["blue shape"]},
            text="no blue",
            topic="blue shapes",
        ),
    )
    red, red_key = _example(tmp_path, "red", "red", ("red",))
    white, white_key = _example(tmp_path, "white", "white", ())
    unknown = Example(id="unknown", label="unsafe", rules=(), path=tmp_path / "missing.png")
    examples = [red, white, unknown]  # `unknown` has no per-rule truth: left out

    clip = FakeClip(
        {
            "red": {"no red": 0.30, "no blue": 0.10},
            "white": {"no red": 0.25, "no blue": 0.05},
        }
    )
    pairs = asyncio.run(score_relevance(lock, examples, clip))
    quality = relevance_quality(pairs, "clip")
    assert (quality.pairs, quality.violated, quality.kept_violated, quality.filtered) == (
        4,
        1,
        1,
        2,
    )
    assert {p.threshold for p in pairs} == {0.22}

    backend = ScriptedBackend(
        {
            ("topic: red shapes", red_key): 0.9,
            ("topic: blue shapes", red_key): 0.1,
            ("topic: red shapes", white_key): 0.2,
            ("topic: blue shapes", white_key): None,  # no answer: kept
        }
    )
    pairs = asyncio.run(score_relevance(lock, examples, "vlm", backend=backend))
    quality = relevance_quality(pairs, "vlm")
    assert (quality.recall, quality.filtered_share, quality.unanswered) == (1.0, 0.5, 1)
    assert {p.threshold for p in pairs} == {0.5}
    assert backend.batches == 2  # one request per image, every rule in it
    with pytest.raises(ValueError, match="back end"):
        asyncio.run(score_relevance(lock, examples, "vlm"))
