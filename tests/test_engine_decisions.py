"""Decision tables of the procedure (stages 3-5) over a scripted back end.

Worked numbers used throughout, with the paper's defaults (a1 = -0.3 p, a2 = 0.8 (1 - p),
beta = 0.6):
    prior p = 0.5 -> a1 = -0.15, a2 = 0.40: M = 0.34 not met (d = -0.16), M = 0.36 and
                     M = 0.89 uncertain, M = 0.91 met (d = 0.41)
    prior p = 0.2 -> a1 = -0.06, a2 = 0.64: M = 0.13 not met, M = 0.85 met, M = 0.83 uncertain
    masked: M = 0.70 and M(x minus box) = 0.05 -> drop 0.65 > 0.6 met; 0.15 -> 0.55 not.
The scripted back end raises on any unscripted call, so each table also proves which
calls the procedure did *not* make.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Mapping, Sequence
from typing import Any

import pytest
from PIL import Image

from judge.constitution.schema import Calibration, CompiledRule, Lock, PreconditionSpec
from judge.engine.cascade import parse_rating
from judge.engine.priors import PriorCache
from judge.engine.procedure import ImageResult, JudgeOptions, Setup, judge_image, rule_thresholds
from judge.engine.verdict import Box, RuleVerdict, image_outcome
from judge.models.base import Generation, YesNoResult
from judge.models.scripted import ScriptedBackend, UnscriptedCall
from judge.store import Store
from judge.thresholds import ThresholdOverrides, Thresholds

IMG = "img"
YES = '{"rating": "Yes", "rationale": "it is there"}'
NO = '{"rating": "No", "rationale": "nothing like it"}'


def rule(rule_id: str, *pres: Any, text: str | None = None, **extra: Any) -> CompiledRule:
    return CompiledRule(
        id=rule_id,
        source_text=f"source: {text or rule_id}",
        text=text or rule_id,
        text_sha256="0" * 64,
        preconditions=[PreconditionSpec.model_validate(p) for p in pres],
        **extra,
    )


def make_lock(*rules: CompiledRule, calibration: Calibration | None = None) -> Lock:
    return Lock(
        name="t",
        source="t.yaml",
        source_sha256="0" * 64,
        compiler_model="none",
        compiled_at="2026-01-01T00:00:00Z",
        calibration=calibration,
        rules=list(rules),
    )


class FakeLocator:
    def __init__(self, boxes: Mapping[str, Box | None]) -> None:
        self.boxes = dict(boxes)
        self.calls: list[list[str]] = []

    def locate(self, image: Image.Image, words: Sequence[str]) -> dict[str, Box | None]:
        self.calls.append(list(words))
        return {w: self.boxes.get(w) for w in words}


class FakeScorer:
    def __init__(self, scores: Mapping[str, float]) -> None:
        self.scores = dict(scores)
        self.calls = 0

    def score(self, image: Image.Image, texts: Sequence[str]) -> list[float]:
        self.calls += 1
        return [self.scores[t] for t in texts]


def _fill(image: Image.Image, box: Box) -> Image.Image:
    out = image.copy()
    out.paste((128, 128, 128), (int(box.x0), int(box.y0), int(box.x1), int(box.y1)))
    return out


def _crop(image: Image.Image, box: Box) -> Image.Image:
    return image.crop((int(box.x0), int(box.y0), int(box.x1), int(box.y1)))


def run(
    backend: ScriptedBackend,
    lock: Lock,
    *,
    options: JudgeOptions | None = None,
    relevance: Any = None,
    locator: Any = None,
    thresholds: Thresholds | None = None,
    store: Store | None = None,
    priors: PriorCache | None = None,
    key: str = IMG,
) -> ImageResult:
    setup = Setup(
        backend=backend,
        rules=lock.enabled_rules(),
        thresholds=rule_thresholds(lock, thresholds or Thresholds()),
        options=options or JudgeOptions(),
        priors=priors or PriorCache(backend, store),
        relevance=relevance,
        locator=locator,
        fill=_fill,
        crop=_crop,
    )
    image = Image.new("RGB", (100, 80), (200, 40, 40))
    return asyncio.run(judge_image(setup, image, key))


def only(result: ImageResult, rule_id: str | None = None) -> RuleVerdict:
    rules = [r for r in result.rules if rule_id is None or r.rule_id == rule_id]
    assert len(rules) == 1
    return rules[0]


def answers(prior: float = 0.5, **ms: float | None) -> dict[tuple[str, str | None], Any]:
    """Scripted answers: statement name -> M on the image, all with the same prior."""
    out: dict[tuple[str, str | None], Any] = {}
    for name, m in ms.items():
        out[(name, IMG)] = m
        out[(name, None)] = prior
    return out


# ---- thresholds: the worked numbers ------------------------------------------------


def test_worked_thresholds() -> None:
    th = Thresholds()
    assert th.a1(0.5) == pytest.approx(-0.15)
    assert th.a2(0.5) == pytest.approx(0.40)
    assert th.a1(0.2) == pytest.approx(-0.06)
    assert th.a2(0.2) == pytest.approx(0.64)
    assert th.beta == 0.6 and th.relevance == 0.22 and th.box_confidence == 0.05


@pytest.mark.parametrize(
    ("prior", "m", "outcome", "d"),
    [
        (0.5, 0.34, "not_met", -0.16),
        (0.5, 0.36, "undecided", -0.14),  # uncertain; cascade off -> undecided
        (0.5, 0.89, "undecided", 0.39),
        (0.5, 0.91, "met", 0.41),
        (0.2, 0.13, "not_met", -0.07),
        (0.2, 0.83, "undecided", 0.63),
        (0.2, 0.85, "met", 0.65),
    ],
)
def test_first_pass_bands(prior: float, m: float, outcome: str, d: float) -> None:
    backend = ScriptedBackend(answers(prior, c=m))
    result = run(backend, make_lock(rule("r", "c")), options=JudgeOptions(cascade=False))
    pre = only(result).preconditions[0]
    alt = pre.alternatives[0]
    assert pre.outcome == outcome
    assert alt.d == pytest.approx(d)
    assert alt.prior == prior and alt.m == m
    assert alt.a1 == pytest.approx(-0.3 * prior) and alt.a2 == pytest.approx(0.8 * (1 - prior))
    assert alt.stage == ("no_cascade" if outcome == "undecided" else "prior")
    expected = {"met": "violated", "not_met": "not_violated", "undecided": "undecided"}[outcome]
    assert only(result).outcome == expected


# ---- OR and AND ---------------------------------------------------------------------


def test_or_any_alternative_met() -> None:
    backend = ScriptedBackend(answers(a=0.34, b=0.91))
    result = run(backend, make_lock(rule("r", ["a", "b"])))
    pre = only(result).preconditions[0]
    assert pre.outcome == "met"
    assert [a.outcome for a in pre.alternatives] == ["not_met", "met"]
    assert only(result).outcome == "violated"


def test_or_all_alternatives_not_met() -> None:
    backend = ScriptedBackend(answers(a=0.34, b=0.1))
    result = run(backend, make_lock(rule("r", ["a", "b"])))
    assert only(result).preconditions[0].outcome == "not_met"
    assert only(result).outcome == "not_violated"


def test_or_not_met_and_failed_is_undecided() -> None:
    backend = ScriptedBackend(answers(a=0.34, b=None))
    result = run(backend, make_lock(rule("r", ["a", "b"])))
    verdict = only(result)
    assert verdict.preconditions[0].outcome == "undecided"
    failed = verdict.preconditions[0].alternatives[1]
    assert failed.outcome == "undecided" and failed.stage == "error" and failed.m is None
    assert "answer missing" in (failed.error or "")
    assert verdict.outcome == "undecided" and "'b'" in (verdict.reason or "")
    assert image_outcome(result.rules)[0] == "undecided"


def test_or_met_alternative_skips_expensive_stages_of_others() -> None:
    # 'b' is uncertain, but 'a' is met: no cascade for 'b' (unscripted would raise).
    backend = ScriptedBackend(answers(a=0.91, b=0.6))
    verdict = only(run(backend, make_lock(rule("r", ["a", "b"]))))
    assert verdict.outcome == "violated"
    assert verdict.preconditions[0].alternatives[1].outcome == "skipped"
    assert not backend.calls_of("generate")


def test_and_all_met_is_violated() -> None:
    backend = ScriptedBackend(answers(a=0.91, b=0.95, c=0.99))
    verdict = only(run(backend, make_lock(rule("r", "a", "b", "c"))))
    assert verdict.outcome == "violated"
    assert [p.outcome for p in verdict.preconditions] == ["met", "met", "met"]
    assert verdict.decisive_precondition == 2


def test_and_stops_at_first_not_met_without_expensive_stages() -> None:
    # a uncertain, b not met, c uncertain: the rule is settled by b, so neither a nor c
    # is cascaded (an unscripted cascade would raise) and c is reported skipped.
    backend = ScriptedBackend(answers(a=0.6, b=0.2, c=0.6))
    verdict = only(run(backend, make_lock(rule("r", "a", "b", "c"))))
    assert verdict.outcome == "not_violated"
    assert verdict.decisive_precondition == 1
    assert [p.outcome for p in verdict.preconditions] == ["skipped", "not_met", "skipped"]
    assert not backend.calls_of("generate")


def test_and_chain_cascades_in_order_and_stops() -> None:
    # a and b both uncertain: a goes to the cascade first; its "No" settles the rule,
    # so b's cascade is never asked for.
    backend = ScriptedBackend(answers(a=0.6, b=0.6), cascades={("a", IMG): ["thinking", NO]})
    verdict = only(run(backend, make_lock(rule("r", "a", "b"))))
    assert verdict.outcome == "not_violated" and verdict.decisive_precondition == 0
    first = verdict.preconditions[0].alternatives[0]
    assert first.stage == "cascade" and first.rationale == "nothing like it"
    assert verdict.preconditions[1].outcome == "skipped"
    assert [c.statement for c in backend.calls_of("generate")] == ["a", "a"]


def test_and_chain_met_then_next() -> None:
    backend = ScriptedBackend(
        answers(a=0.6, b=0.6),
        cascades={("a", IMG): ["thinking", YES], ("b", IMG): ["thinking", YES]},
    )
    verdict = only(run(backend, make_lock(rule("r", "a", "b"))))
    assert verdict.outcome == "violated"
    assert [p.alternatives[0].stage for p in verdict.preconditions] == ["cascade", "cascade"]


def test_undecided_then_not_met_later_is_not_violated() -> None:
    # An undecided precondition does not stop the chain: a later one may still be not met.
    backend = ScriptedBackend(answers(a=None, b=0.6), cascades={("b", IMG): ["thinking", NO]})
    verdict = only(run(backend, make_lock(rule("r", "a", "b"))))
    assert verdict.outcome == "not_violated" and verdict.decisive_precondition == 1


def test_not_violated_with_an_undecided_precondition_says_so() -> None:
    # Precondition 1 undecided (its answer is missing), precondition 2 not met: the rule is
    # rightly not violated, but the verdict must say that precondition 1 was never settled.
    backend = ScriptedBackend(answers(a=None, b=0.2))
    result = run(backend, make_lock(rule("r", "a", "b")))
    verdict = only(result)
    assert verdict.outcome == "not_violated" and verdict.decisive_precondition == 1
    assert verdict.undecided_preconditions == [0]
    assert [p.outcome for p in verdict.preconditions] == ["undecided", "not_met"]
    reason = verdict.reason or ""
    assert reason.startswith("not violated: precondition 2 not met; undecided: precondition 1")
    assert "answer missing" in reason
    from judge.engine.verdict import partly_undecided

    assert image_outcome(result.rules)[0] == "safe"
    assert partly_undecided(result.rules) == ["r"]


def test_undecided_precondition_after_the_deciding_one_is_shown() -> None:
    # The other order: 1 not met, 2 undecided. Not "not needed": its answer failed.
    backend = ScriptedBackend(answers(a=0.2, b=None))
    verdict = only(run(backend, make_lock(rule("r", "a", "b"))))
    assert verdict.outcome == "not_violated" and verdict.decisive_precondition == 0
    assert [p.outcome for p in verdict.preconditions] == ["not_met", "undecided"]
    assert verdict.undecided_preconditions == [1]
    assert "precondition 2: 'b'" in (verdict.reason or "")


def test_plainly_not_violated_has_no_undecided_note() -> None:
    verdict = only(run(ScriptedBackend(answers(a=0.2, b=0.2)), make_lock(rule("r", "a", "b"))))
    assert verdict.outcome == "not_violated"
    assert verdict.undecided_preconditions == [] and verdict.reason is None


# ---- batching -------------------------------------------------------------------------


def test_first_pass_is_one_batch_with_duplicates_once() -> None:
    backend = ScriptedBackend(answers(a=0.91, b=0.34, c=0.91))
    lock = make_lock(rule("r1", "a", ["b", "c"]), rule("r2", ["a", "c"]), rule("r3", "b"))
    result = run(backend, lock)
    image_calls = [c for c in backend.calls_of("yes_no") if c.image_key == IMG]
    assert sorted(c.statement for c in image_calls) == ["a", "b", "c"]
    assert len({c.batch for c in image_calls}) == 1
    assert result.calls["first_pass"] == 3 and result.calls["prior"] == 3
    assert [r.outcome for r in result.rules] == ["violated", "violated", "not_violated"]


def test_prior_computed_once_and_stored(tmp_path: Any) -> None:
    store = Store(tmp_path / "s.sqlite3")
    backend = ScriptedBackend(answers(0.2, a=0.85))
    backend.script({("a", "img2"): 0.13})
    lock = make_lock(rule("r", "a"))
    cache = PriorCache(backend, store)
    run(backend, lock, priors=cache)
    second = run(backend, lock, priors=cache, key="img2")
    assert second.calls["prior"] == 0
    assert [c.image_key for c in backend.calls_of("yes_no")].count(None) == 1
    # A new process (new cache, same store) asks no prior either.
    fresh = ScriptedBackend({("a", IMG): 0.85})
    third = run(fresh, lock, store=store)
    assert third.calls["prior"] == 0 and only(third).outcome == "violated"
    assert only(third).preconditions[0].alternatives[0].prior == 0.2


def test_failed_prior_is_undecided_and_not_cached(tmp_path: Any) -> None:
    store = Store(tmp_path / "s.sqlite3")
    backend = ScriptedBackend({("a", IMG): 0.99, ("a", None): YesNoResult.failed("boom")})
    verdict = only(run(backend, make_lock(rule("r", "a")), store=store))
    alt = verdict.preconditions[0].alternatives[0]
    assert verdict.outcome == "undecided" and alt.stage == "error" and "boom" in (alt.error or "")
    assert store.get_priors("scripted-model", PriorCache(backend, None).version, ["a"]) == {}


def test_priors_shared_between_images_in_flight() -> None:
    backend = ScriptedBackend(answers(a=0.91))
    backend.script({("a", f"img{i}"): 0.91 for i in range(5)})
    lock = make_lock(rule("r", "a"))

    async def many() -> list[ImageResult]:
        cache = PriorCache(backend, None)
        setup = Setup(
            backend=backend,
            rules=lock.rules,
            thresholds=rule_thresholds(lock, Thresholds()),
            options=JudgeOptions(),
            priors=cache,
        )
        image = Image.new("RGB", (10, 10))
        return list(await asyncio.gather(*(judge_image(setup, image, f"img{i}") for i in range(5))))

    results = asyncio.run(many())
    assert sum(r.calls["prior"] for r in results) == 1
    assert all(only(r).outcome == "violated" for r in results)


# ---- central region -------------------------------------------------------------------

BIG = Box(x0=10, y0=10, x1=60, y1=60, confidence=0.5, label="knife")  # 2500 / 8000 px
SMALL = Box(x0=10, y0=10, x1=18, y1=17, confidence=0.5, label="knife")  # 56 < 80 px = 1%


def test_center_masked_drop_above_beta_is_met() -> None:
    backend = ScriptedBackend(answers(c=0.7))
    backend.script({("c", f"{IMG}#mask:knife"): 0.05})
    locator = FakeLocator({"knife": BIG})
    verdict = only(
        run(backend, make_lock(rule("r", {"any_of": ["c"], "objects": ["knife"]})), locator=locator)
    )
    alt = verdict.preconditions[0].alternatives[0]
    assert verdict.outcome == "violated"
    assert (alt.stage, alt.masked_m, alt.beta) == ("center", 0.05, 0.6)
    assert alt.box == BIG and not alt.cropped
    assert locator.calls == [["knife"]]


def test_center_drop_below_beta_goes_to_cascade() -> None:
    backend = ScriptedBackend(answers(c=0.7), cascades={("c", IMG): ["hmm", NO]})
    backend.script({("c", f"{IMG}#mask:knife"): 0.15})
    lock = make_lock(rule("r", {"any_of": ["c"], "objects": ["knife"]}))
    verdict = only(run(backend, lock, locator=FakeLocator({"knife": BIG})))
    alt = verdict.preconditions[0].alternatives[0]
    assert verdict.outcome == "not_violated"
    assert alt.stage == "cascade" and alt.masked_m == 0.15


def test_unconfident_box_is_ignored() -> None:
    weak = BIG.model_copy(update={"confidence": 0.05})  # not > 0.05
    backend = ScriptedBackend(answers(c=0.7), cascades={("c", IMG): ["hmm", YES]})
    lock = make_lock(rule("r", {"any_of": ["c"], "objects": ["knife"]}))
    verdict = only(run(backend, lock, locator=FakeLocator({"knife": weak})))
    alt = verdict.preconditions[0].alternatives[0]
    assert alt.stage == "cascade" and alt.box is None and alt.masked_m is None


def test_most_confident_box_wins_and_locator_runs_once_for_all_words() -> None:
    other = Box(x0=0, y0=0, x1=50, y1=40, confidence=0.9, label="blade")
    locator = FakeLocator({"knife": BIG, "blade": other, "blood": None})
    backend = ScriptedBackend(answers(c=0.7, e=0.91))
    backend.script({("c", f"{IMG}#mask:blade"): 0.0})
    lock = make_lock(
        rule("r1", {"any_of": ["c"], "objects": ["knife", "blade"]}),
        rule("r2", {"any_of": ["e"], "objects": ["blood"]}),
    )
    result = run(backend, lock, locator=locator)
    assert locator.calls == [["knife", "blade", "blood"]]
    assert only(result, "r1").preconditions[0].alternatives[0].box == other
    assert result.calls["locator"] == 1


def test_small_box_crop_replaces_image_for_all_queries() -> None:
    crop_key = f"{IMG}#crop:knife"
    backend = ScriptedBackend(
        {("c", crop_key): 0.7, ("c", None): 0.5, ("c", f"{crop_key}#mask:knife"): 0.2},
        cascades={("c", crop_key): ["looking at the crop", YES]},
    )
    lock = make_lock(rule("r", {"any_of": ["c"], "objects": ["knife"]}))
    verdict = only(run(backend, lock, locator=FakeLocator({"knife": SMALL})))
    alt = verdict.preconditions[0].alternatives[0]
    assert alt.cropped and alt.stage == "cascade" and verdict.outcome == "violated"
    # The full image was never asked about this precondition.
    assert all(k != IMG for _, k in backend.asked())


def test_center_off_skips_locator_and_masking() -> None:
    locator = FakeLocator({"knife": BIG})
    backend = ScriptedBackend(answers(c=0.7), cascades={("c", IMG): ["hmm", YES]})
    lock = make_lock(rule("r", {"any_of": ["c"], "objects": ["knife"]}))
    verdict = only(run(backend, lock, locator=locator, options=JudgeOptions(center=False)))
    assert locator.calls == [] and verdict.preconditions[0].alternatives[0].stage == "cascade"


def test_masked_answer_missing_is_undecided() -> None:
    backend = ScriptedBackend(answers(c=0.7))
    backend.script({("c", f"{IMG}#mask:knife"): None})
    lock = make_lock(rule("r", {"any_of": ["c"], "objects": ["knife"]}))
    verdict = only(run(backend, lock, locator=FakeLocator({"knife": BIG})))
    assert verdict.outcome == "undecided"
    assert "masked answer missing" in (verdict.preconditions[0].alternatives[0].error or "")


# ---- cascade --------------------------------------------------------------------------


def test_cascade_unparseable_retries_once_then_undecided_never_not_met() -> None:
    backend = ScriptedBackend(
        answers(c=0.6), cascades={("c", IMG): ["thinking", "I cannot say", "still unsure"]}
    )
    result = run(backend, make_lock(rule("r", "c")))
    verdict = only(result)
    alt = verdict.preconditions[0].alternatives[0]
    assert verdict.outcome == "undecided" and alt.outcome == "undecided"
    assert alt.stage == "cascade" and "unparseable" in (alt.error or "")
    assert [c.turn for c in backend.calls_of("generate")] == [1, 2, 3]
    assert image_outcome(result.rules)[0] == "undecided"


def test_cascade_retry_succeeds() -> None:
    backend = ScriptedBackend(answers(c=0.6), cascades={("c", IMG): ["thinking", "uh", YES]})
    assert only(run(backend, make_lock(rule("r", "c")))).outcome == "violated"


def test_cascade_generation_error_retried_then_undecided() -> None:
    failed = Generation(text="", error="HTTP 500")
    backend = ScriptedBackend(answers(c=0.6), cascades={("c", IMG): [failed, failed]})
    verdict = only(run(backend, make_lock(rule("r", "c"))))
    assert verdict.outcome == "undecided"
    assert "HTTP 500" in (verdict.preconditions[0].alternatives[0].error or "")


def test_cascade_sends_image_between_instructions_and_question() -> None:
    seen: list[Any] = []

    class Recording(ScriptedBackend):
        async def generate(self, chats: Any, max_tokens: int, json_schema: Any = None) -> Any:
            seen.append((chats, json_schema))
            return await super().generate(chats, max_tokens, json_schema)

    backend = Recording(answers(c=0.6), cascades={("c", IMG): ["thinking", YES]})
    run(backend, make_lock(rule("r", "c")))
    first_chat, schema = seen[0][0][0], seen[0][1]
    parts = first_chat[0].parts
    assert isinstance(parts[0], str) and isinstance(parts[1], Image.Image)
    assert "Statement: c" in parts[2] and schema is None
    summary_chat, schema2 = seen[1][0][0], seen[1][1]
    assert [m.role for m in summary_chat] == ["user", "assistant", "user"]
    assert schema2 is not None and schema2["properties"]["rating"]["enum"] == ["Yes", "No"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('{"rating": "Yes", "rationale": "a red circle"}', (True, "a red circle")),
        ('```json\n{"rating": "no", "rationale": "none"}\n```', (False, "none")),
        ('Sure! {"Rating": "YES", "Rationale": "x"} hope this helps', (True, "x")),
        ("{'rating': 'No', 'rationale': 'nothing'}", (False, "nothing")),
        ('{"rating": "Yes", "rationale": "unterminated', (True, "")),
        ("**Yes.**", (True, "")),
        ("Yes. There is a red circle.", None),  # more than a bare Yes: no rating
        ("I am not sure.", None),
        ('{"rating": "maybe"}', None),
        ("", None),
    ],
)
def test_parse_rating_tolerant(text: str, expected: tuple[bool, str] | None) -> None:
    assert parse_rating(text) == expected


# ---- image level ------------------------------------------------------------------------


def test_image_outcome_table() -> None:
    def rv(outcome: str) -> RuleVerdict:
        return RuleVerdict(rule_id=outcome, outcome=outcome)  # type: ignore[arg-type]

    assert image_outcome([rv("not_violated"), rv("irrelevant")])[0] == "safe"
    # No rule decided nothing: never "safe" (issue 24).
    assert image_outcome([])[0] == "undecided"
    assert image_outcome([rv("not_violated"), rv("undecided")])[0] == "undecided"
    assert image_outcome([rv("violated"), rv("undecided")]) == (
        "unsafe",
        ["violated"],
        ["undecided"],
    )


def test_missing_first_pass_never_safe() -> None:
    backend = ScriptedBackend(answers(a=None))
    result = run(backend, make_lock(rule("r", "a")))
    assert image_outcome(result.rules)[0] == "undecided"


# ---- switches ---------------------------------------------------------------------------


def test_relevance_clip_filters_rules_and_records_scores() -> None:
    scorer = FakeScorer({"rule one": 0.30, "rule two": 0.10})
    backend = ScriptedBackend(answers(a=0.91))  # b is never asked: its rule is irrelevant
    lock = make_lock(rule("r1", "a", text="rule one"), rule("r2", "b", text="rule two"))
    result = run(backend, lock, relevance=scorer)
    r1, r2 = result.rules
    assert (r1.outcome, r1.relevance, r1.relevance_threshold) == ("violated", 0.30, 0.22)
    assert (r2.outcome, r2.relevance) == ("irrelevant", 0.10)
    assert result.calls["relevance_encoder"] == 1
    # Off: both rules are judged, so more model calls.
    backend_off = ScriptedBackend(answers(a=0.91, b=0.1))
    off = run(backend_off, lock, relevance=scorer, options=JudgeOptions(relevance=False))
    assert [r.outcome for r in off.rules] == ["violated", "not_violated"]
    assert off.calls["first_pass"] > result.calls["first_pass"]
    assert off.rules[0].relevance is None


def test_relevance_vlm_one_query_per_rule_and_failures_keep_the_rule() -> None:
    # Each rule is asked about by its topic; a lock without topics (r2) falls back to the
    # central object words, never to the rule's text.
    lock = make_lock(
        rule("r1", "a", text="Images must not show red.", topic="red things"),
        rule("r2", {"any_of": ["b"], "objects": ["blue shape"]}, text="Images must not ..."),
        rule("r3", "c", text="Images must not show green.", topic="green things"),
    )
    backend = ScriptedBackend(answers(a=0.91, c=0.2))
    backend.script(
        {
            ("topic: red things", IMG): 0.8,
            ("topic: blue shape", IMG): 0.3,
            ("topic: green things", IMG): None,  # failed: judged anyway
        }
    )
    result = run(backend, lock, relevance="vlm")
    assert [r.outcome for r in result.rules] == ["violated", "irrelevant", "not_violated"]
    assert result.calls["relevance"] == 3
    assert result.rules[0].relevance_threshold == 0.5
    asked = [c.statement for c in backend.calls_of("yes_no") if c.statement.startswith("topic")]
    assert asked == ["topic: red things", "topic: blue shape", "topic: green things"]


class OddScorer:
    """A relevance scorer that has no usable score for some texts: None or NaN."""

    def score(self, image: Image.Image, texts: Sequence[str]) -> list[float | None]:
        table = {"nan rule": float("nan"), "none rule": None, "low rule": 0.01}
        return [table[t] for t in texts]


def test_relevance_nan_or_missing_score_keeps_the_rule() -> None:
    lock = make_lock(
        rule("nan", "a", text="nan rule"),
        rule("none", "b", text="none rule"),
        rule("low", "c", text="low rule"),
    )
    backend = ScriptedBackend(answers(a=0.91, b=0.91))  # c is never asked: irrelevant
    result = run(backend, lock, relevance=OddScorer())
    outcomes = {r.rule_id: (r.outcome, r.relevance) for r in result.rules}
    assert outcomes == {
        "nan": ("violated", None),
        "none": ("violated", None),
        "low": ("irrelevant", 0.01),
    }
    assert image_outcome(result.rules)[0] == "unsafe"


def test_relevance_vlm_nan_answer_keeps_the_rule() -> None:
    lock = make_lock(rule("r", "a", text="x", topic="red things"))
    backend = ScriptedBackend(answers(a=0.91))
    # Infinite probabilities make M NaN (inf / inf), which no threshold comparison passes.
    odd = YesNoResult(float("inf"), float("inf"))
    assert odd.m is not None and math.isnan(odd.m)
    backend.script({("topic: red things", IMG): odd})
    verdict = only(run(backend, lock, relevance="vlm"))
    assert verdict.outcome == "violated" and verdict.relevance is None


def test_relevance_threshold_sources_per_rule() -> None:
    from judge.engine.procedure import threshold_sources

    lock = make_lock(
        rule("plain", "a"),
        rule("own", "a", thresholds=ThresholdOverrides(relevance=0.3)),
        rule("cal", "a"),
        calibration=Calibration(
            dataset_sha256="0" * 64,
            objective="f1",
            rules={"cal": ThresholdOverrides(relevance=0.1)},
        ),
    )
    assert threshold_sources(lock, "relevance", "the run's") == {
        "plain": "the run's",
        "own": "the rule's thresholds",
        "cal": "the lock's calibration",
    }
    assert lock.calibration is not None
    calibration = lock.calibration.model_copy(update={"relevance": 0.2})
    lock = lock.model_copy(update={"calibration": calibration})
    assert threshold_sources(lock, "relevance", "the run's")["plain"] == "the lock's calibration"
    # The served-model scorer's threshold is not calibrated as a whole.
    assert threshold_sources(lock, "relevance_vlm", "the run's")["plain"] == "the run's"


def test_relevance_threshold_per_rule_override() -> None:
    scorer = FakeScorer({"x": 0.25})
    lock = make_lock(rule("r", "a", text="x", thresholds=ThresholdOverrides(relevance=0.3)))
    verdict = only(run(ScriptedBackend(), lock, relevance=scorer))
    assert verdict.outcome == "irrelevant" and verdict.relevance_threshold == 0.3


def test_debias_off_uses_flat_half_and_no_prior_calls() -> None:
    # With the real prior 0.9, M = 0.91 is uncertain; against a flat 0.5 it is met.
    backend = ScriptedBackend({("a", IMG): 0.91})
    result = run(backend, make_lock(rule("r", "a")), options=JudgeOptions(debias=False))
    assert only(result).outcome == "violated" and result.calls["prior"] == 0
    assert only(result).preconditions[0].alternatives[0].prior == 0.5


def test_preconditions_off_asks_rule_text_only() -> None:
    backend = ScriptedBackend(answers(**{"a red circle is visible": 0.91}))
    lock = make_lock(rule("r", "a", "b", text="a red circle is visible"))
    verdict = only(run(backend, lock, options=JudgeOptions(preconditions=False)))
    assert verdict.outcome == "violated" and len(verdict.preconditions) == 1
    assert verdict.preconditions[0].alternatives[0].statement == "a red circle is visible"


def test_objectified_off_uses_source_text() -> None:
    scorer = FakeScorer({"source: objective": 0.5})
    backend = ScriptedBackend(answers(**{"source: objective": 0.2}))
    lock = make_lock(rule("r", "a", text="objective"))
    options = JudgeOptions(objectified=False, preconditions=False)
    verdict = only(run(backend, lock, relevance=scorer, options=options))
    assert verdict.outcome == "not_violated"


def test_cascade_off_leaves_uncertain_undecided() -> None:
    backend = ScriptedBackend(answers(a=0.6))
    verdict = only(run(backend, make_lock(rule("r", "a")), options=JudgeOptions(cascade=False)))
    alt = verdict.preconditions[0].alternatives[0]
    assert verdict.outcome == "undecided" and alt.stage == "no_cascade"
    assert not backend.calls_of("generate")


def test_first_violation_skips_remaining_rules() -> None:
    backend = ScriptedBackend(answers(a=0.91, b=0.6))  # b would need a cascade
    lock = make_lock(rule("r1", "a"), rule("r2", "b"))
    result = run(backend, lock, options=JudgeOptions(first_violation=True))
    assert [r.outcome for r in result.rules] == ["violated", "skipped"]
    assert not backend.calls_of("generate")
    assert image_outcome(result.rules)[0] == "unsafe"
    # Without it, r2 goes on to the cascade (unscripted here: raises).
    with pytest.raises(UnscriptedCall):
        run(ScriptedBackend(answers(a=0.91, b=0.6)), lock)


def test_thresholds_run_rule_and_calibration() -> None:
    # M = 0.85, prior 0.5: d = 0.35 < a2 = 0.40 -> uncertain by default.
    backend = ScriptedBackend(answers(a=0.85), cascades={})
    lock = make_lock(rule("r", "a"))
    run_level = Thresholds(a2_scale=0.6)  # a2 = 0.30 -> met
    assert only(run(backend, lock, thresholds=run_level)).outcome == "violated"
    per_rule = make_lock(rule("r", "a", thresholds=ThresholdOverrides(a2_scale=0.5)))
    verdict = only(run(ScriptedBackend(answers(a=0.85)), per_rule))
    assert verdict.outcome == "violated"
    assert verdict.preconditions[0].alternatives[0].a2 == pytest.approx(0.25)
    calibrated = make_lock(
        rule("r", "a", thresholds=ThresholdOverrides(a2_scale=0.5)),
        calibration=Calibration(
            dataset_sha256="0", objective="f1", rules={"r": ThresholdOverrides(a1_scale=2.0)}
        ),
    )
    # Calibration: a1 = -1.0 -> M = 0.85 still met via a2 from the rule override.
    th = rule_thresholds(calibrated, Thresholds())["r"]
    assert (th.a1_scale, th.a2_scale) == (2.0, 0.5)


def test_disabled_rules_are_not_judged() -> None:
    lock = make_lock(rule("r1", "a"), rule("r2", "b", enabled=False))
    result = run(ScriptedBackend(answers(a=0.1)), lock)
    assert [r.rule_id for r in result.rules] == ["r1"]
