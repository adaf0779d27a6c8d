"""How well a relevance scan filters, over a labelled set: the paper's two numbers.

The paper reports, for CLIP at t = 0.22, that the scan kept 96.6% of the truly violated
rules while filtering 67% of the rules. Over the (image, rule) pairs of a labelled set:

* recall: the share of pairs whose rule the image truly violates that the scan keeps;
* filtered: the share of all pairs the scan skips.

A pair whose scorer gave no answer counts as kept, as in the engine (skipping it could
hide a violation). An unsafe image whose violated rules are unknown has no truth per rule
and is left out. The scorer is either a CLIP/SigLIP scorer (rule text against the image)
or "vlm" (the served model asked about each rule's topic), each against its own threshold
per rule, so the two can be compared on the same pairs:

    quality = measure_relevance(lock, examples, clip, name="clip")
    quality = measure_relevance(lock, examples, "vlm", backend=backend, name="vlm")
    print(format_relevance([clip_quality, vlm_quality]))
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from judge.constitution.schema import Lock
from judge.engine.procedure import RelevanceScorer, rule_thresholds
from judge.evaluate.datasets import Example
from judge.models.base import Backend
from judge.thresholds import Thresholds


@dataclass(frozen=True)
class RelevancePair:
    """One (image, rule) pair: the truth, the scan's score and the threshold it met."""

    example_id: str
    rule_id: str
    violated: bool
    score: float | None  # None: the scorer gave no answer (the rule is kept)
    threshold: float

    @property
    def kept(self) -> bool:
        return self.score is None or self.score > self.threshold


@dataclass(frozen=True)
class RelevanceQuality:
    """The scan's filtering over a set of pairs."""

    name: str
    pairs: int
    violated: int  # pairs whose rule the image truly violates
    kept_violated: int
    filtered: int  # pairs the scan skipped
    unanswered: int  # pairs kept because the scorer gave no answer

    @property
    def recall(self) -> float | None:
        """Share of the truly violated pairs kept; None without any."""
        return self.kept_violated / self.violated if self.violated else None

    @property
    def filtered_share(self) -> float | None:
        """Share of all pairs skipped; None without any pair."""
        return self.filtered / self.pairs if self.pairs else None

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "pairs": self.pairs,
            "violated": self.violated,
            "kept_violated": self.kept_violated,
            "filtered": self.filtered,
            "unanswered": self.unanswered,
            "recall": self.recall,
            "filtered_share": self.filtered_share,
        }


def relevance_quality(pairs: Iterable[RelevancePair], name: str = "") -> RelevanceQuality:
    """Count `pairs` into the scan's recall of violated rules and its share filtered."""
    items = list(pairs)
    violated = [p for p in items if p.violated]
    return RelevanceQuality(
        name=name,
        pairs=len(items),
        violated=len(violated),
        kept_violated=sum(p.kept for p in violated),
        filtered=sum(not p.kept for p in items),
        unanswered=sum(p.score is None for p in items),
    )


def _pixels(example: Example, budget: int | None) -> tuple[Any, str]:
    from judge.images import fit_pixels, load_image

    source = example.source()
    loaded = load_image(str(source) if isinstance(source, Path) else source)
    # The same pixels the engine's scan sees: resized once to the model's budget.
    return fit_pixels(loaded.image, budget), loaded.sha256[:16]


async def score_relevance(
    lock: Lock,
    examples: Sequence[Example],
    scorer: RelevanceScorer | Literal["vlm"],
    *,
    backend: Backend | None = None,
    thresholds: Thresholds | None = None,
) -> list[RelevancePair]:
    """Score every (example, enabled rule) pair with `scorer`, as the engine's scan does.

    Args:
        scorer: a CLIP/SigLIP scorer (scores the rule's objectified text) or "vlm" (asks
            `backend` about the rule's topic).
        backend: the judge model; needed for "vlm", and its pixel budget sizes the images.
        thresholds: the run's thresholds. Default: as `Judge` makes them, the paper's,
            then the relevance model's own threshold, then the lock's defaults; per rule,
            its overrides and calibration on top, as the engine merges them.
    """
    if scorer == "vlm" and backend is None:
        raise ValueError("VLM relevance needs the back end to ask")
    from judge.queries import relevance_query
    from judge.vision.relevance import ClipRelevance, model_threshold

    base = thresholds
    if base is None:
        base = Thresholds.model_validate({})
        if isinstance(scorer, ClipRelevance):
            own, _ = model_threshold(scorer)
            base = base.model_copy(update={"relevance": own})
        base = base.merged(lock.defaults.thresholds)
    per_rule = rule_thresholds(lock, base)
    rules = lock.enabled_rules()
    budget = backend.max_image_pixels if backend is not None else None
    out: list[RelevancePair] = []
    for example in examples:
        if example.unsafe and not example.rules:
            continue  # violated rules unknown: no truth per pair
        pixels, key = await asyncio.to_thread(_pixels, example, budget)
        scores: list[float | None]
        if scorer == "vlm":
            assert backend is not None
            asked = [relevance_query(rule, pixels, key) for rule in rules]
            scores = [result.m for result in await backend.yes_no(asked)]
        else:
            values = await asyncio.to_thread(scorer.score, pixels, [r.text for r in rules])
            scores = [float(v) for v in values]
        for rule, value in zip(rules, scores, strict=True):
            th = per_rule[rule.id]
            out.append(
                RelevancePair(
                    example_id=example.id,
                    rule_id=rule.id,
                    violated=rule.id in example.rules,
                    score=value,
                    threshold=th.relevance_vlm if scorer == "vlm" else th.relevance,
                )
            )
    return out


def measure_relevance(
    lock: Lock,
    examples: Sequence[Example],
    scorer: RelevanceScorer | Literal["vlm"],
    *,
    backend: Backend | None = None,
    thresholds: Thresholds | None = None,
    name: str = "",
) -> RelevanceQuality:
    """`score_relevance` then `relevance_quality`, for callers without an event loop."""
    pairs = asyncio.run(
        score_relevance(lock, examples, scorer, backend=backend, thresholds=thresholds)
    )
    return relevance_quality(pairs, name or ("vlm" if scorer == "vlm" else "clip"))


def format_relevance(qualities: Sequence[RelevanceQuality]) -> str:
    """A small table: one row per scorer, recall of violated rules and share filtered."""

    def pct(value: float | None) -> str:
        return "–" if value is None else f"{100 * value:.1f}%"

    lines = [f"{'scorer':<10} {'recall':>8} {'filtered':>9} {'pairs':>6} {'violated':>9}"]
    for q in qualities:
        lines.append(
            f"{q.name:<10} {pct(q.recall):>8} {pct(q.filtered_share):>9} "
            f"{q.pairs:>6} {q.violated:>9}"
        )
    return "\n".join(lines)
