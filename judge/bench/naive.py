"""A plain implementation of CLUE, straight from the method as docs/method.md states it.

It is the benchmark's reference point: the same decisions as the engine (the same
prompts, thresholds, relevance scan, locator, masking, crops and cascade), but done the
obvious way:

* one request at a time, awaited before the next is sent;
* the language prior M(None, c) asked again for every alternative of every image;
* no de-duplication: a statement two rules share is asked twice;
* each rule's AND chain walked in order, each precondition's OR alternatives one by one.

The verdicts must match the engine's rule for rule; only the cost differs. Pieces that
are pure functions of their inputs (image loading and resizing, fill and crop, the cascade
for a single statement, the image outcome) are shared with the engine, so a difference in
verdicts points at the procedure, not at a reimplemented helper.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

from judge import queries
from judge.constitution.schema import CompiledRule, Lock, PreconditionSpec
from judge.engine.cascade import CascadeItem, run_cascade
from judge.engine.procedure import JudgeOptions, Locator, Relevance, make_fill, rule_thresholds
from judge.engine.verdict import (
    PreconditionEvidence,
    RuleVerdict,
    Verdict,
    make_verdict,
    model_failure,
    unreadable,
)
from judge.errors import BackendError, ImageError, InputError
from judge.models.base import Backend, YesNoResult
from judge.thresholds import Thresholds
from judge.vision.box import Box

ImageSource = str | Path | bytes | Image.Image


def _crop(image: Image.Image, box: Box) -> Image.Image:
    from judge.vision.masking import crop_box

    return crop_box(image, box)


@dataclass
class _View:
    image: Image.Image
    key: str
    box: Box | None = None
    cropped: bool = False


@dataclass
class _Image:
    """One image being judged: its pixels, key and the calls spent on it."""

    pixels: Image.Image
    key: str
    calls: Counter[str] = field(default_factory=Counter)


class NaiveJudge:
    """CLUE as the paper describes it, one request at a time.

    Args:
        lock: the compiled constitution.
        backend: the model (used as is: no wrapper, no cache).
        thresholds: the run's thresholds (rule overrides and calibration are applied on top,
            as the engine does).
        options: stage switches; `first_violation` and `all_frames` are not supported.
        relevance: a scorer with `score(image, texts)`, "vlm", or None (scan off).
        locator: a locator with `locate(image, words)`, or None.
        fill: how a box is removed; None: the fill `options.fill` names.
    """

    def __init__(
        self,
        lock: Lock,
        backend: Backend,
        *,
        thresholds: Thresholds | None = None,
        options: JudgeOptions | None = None,
        relevance: Relevance = None,
        locator: Locator | None = None,
        fill: Callable[[Image.Image, Box], Image.Image] | None = None,
        crop: Callable[[Image.Image, Box], Image.Image] = _crop,
    ) -> None:
        self.lock = lock
        self.backend = backend
        self.options = options or JudgeOptions()
        if self.options.first_violation or self.options.all_frames:
            raise InputError("the naive judge supports neither first_violation nor all_frames")
        self.thresholds = rule_thresholds(lock, thresholds or Thresholds.model_validate({}))
        self.rules = lock.enabled_rules()
        self.relevance = relevance if self.options.relevance else None
        self.locator = locator if self.options.center else None
        self.fill, self.crop = fill or make_fill(self.options.fill), crop

    @classmethod
    def like(cls, engine: Any, backend: Backend) -> NaiveJudge:
        """A naive judge with the same lock, thresholds, options, relevance scorer and
        locator as an engine `Judge`, asking `backend`."""
        setup = engine.setup  # the engine's resolved parts, so both judge alike
        judge = cls(
            engine.lock,
            backend,
            thresholds=engine.thresholds,
            options=setup.options,
            relevance=setup.relevance,
            locator=setup.locator,
            fill=setup.fill,
            crop=setup.crop,
        )
        judge.thresholds = dict(setup.thresholds)
        judge.rules = list(setup.rules)
        return judge

    # ---- one image ---------------------------------------------------------------------

    async def ajudge(self, image: ImageSource | tuple[str, ImageSource]) -> Verdict:
        """The verdict for one image; an unreadable image gives outcome "error"."""
        from judge.images import fit_pixels, load_image

        started = time.perf_counter()
        image_id, source = image if isinstance(image, tuple) else (None, image)
        try:
            loaded = load_image(str(source) if isinstance(source, Path) else source,
                                image_id=image_id)
        except ImageError as error:
            return unreadable(image_id, source, error)
        pixels = fit_pixels(loaded.image, self.backend.max_image_pixels)
        rules, calls = await self.judge_pixels(pixels, loaded.sha256[:16])
        return make_verdict(
            loaded,
            rules,
            backend=self.backend,
            lock=self.lock,
            calls=calls,
            timings={"total": time.perf_counter() - started},
            size=pixels.size,
        )

    async def judge_pixels(
        self, pixels: Image.Image, key: str
    ) -> tuple[list[RuleVerdict], Counter[str]]:
        """Rule verdicts for an image already resized, and the calls spent by kind;
        `key` names the image to the back end, as the engine's `judge_image` does."""
        work = _Image(pixels, key)
        try:
            rules = await self._rules(work)
        except BackendError as error:
            rules = model_failure(self.rules, error)
        return rules, work.calls

    async def _rules(self, work: _Image) -> list[RuleVerdict]:
        relevant = await self._relevance(work)
        views = await self._locate(work, [r for r in self.rules if relevant[r.id][0]])
        out: list[RuleVerdict] = []
        for rule in self.rules:
            judged, score = relevant[rule.id]
            threshold = self._relevance_threshold(rule)
            if not judged:
                out.append(
                    RuleVerdict(
                        rule_id=rule.id,
                        outcome="irrelevant",
                        relevance=score,
                        relevance_threshold=threshold,
                    )
                )
                continue
            out.append(await self._rule(work, rule, views, score, threshold))
        return out

    def _relevance_threshold(self, rule: CompiledRule) -> float | None:
        if self.relevance is None:
            return None
        th = self.thresholds[rule.id]
        return th.relevance_vlm if self.relevance == "vlm" else th.relevance

    def _rule_text(self, rule: CompiledRule) -> str:
        return rule.text if self.options.objectified else rule.source_text

    def _chain(self, rule: CompiledRule) -> list[PreconditionSpec]:
        if self.options.preconditions:
            return list(rule.preconditions)
        objects = list(dict.fromkeys(o for p in rule.preconditions for o in p.all_objects()))[:8]
        return [PreconditionSpec(any_of=[self._rule_text(rule)], objects=objects)]

    # ---- stage 3: relevance ------------------------------------------------------------

    async def _relevance(self, work: _Image) -> dict[str, tuple[bool, float | None]]:
        out: dict[str, tuple[bool, float | None]] = {r.id: (True, None) for r in self.rules}
        if self.relevance is None:
            return out
        if self.relevance == "vlm":
            for rule in self.rules:
                query = queries.relevance_query(rule, work.pixels, work.key)
                work.calls["relevance"] += 1
                m = (await self.backend.yes_no([query]))[0].m
                # A failed answer keeps the rule, as in the engine.
                out[rule.id] = (m is None or m > self.thresholds[rule.id].relevance_vlm, m)
            return out
        scorer = self.relevance
        work.calls["relevance_encoder"] += 1
        texts = [self._rule_text(r) for r in self.rules]
        values = await asyncio.to_thread(scorer.score, work.pixels, texts)
        for rule, value in zip(self.rules, values, strict=True):
            out[rule.id] = (float(value) > self.thresholds[rule.id].relevance, float(value))
        return out

    # ---- stage 4b, part 1: one locator pass, then a view per precondition ----------------

    async def _locate(
        self, work: _Image, rules: Sequence[CompiledRule]
    ) -> dict[tuple[str, int, str], _View]:
        """The image each alternative is asked about, by (rule id, precondition index,
        statement): the box of the alternative's own object words, as in the engine."""
        chains = {r.id: self._chain(r) for r in rules}
        words = list(
            dict.fromkeys(
                w for c in chains.values() for p in c for s in p.any_of for w in p.objects_of(s)
            )
        )
        boxes: Mapping[str, Box | None] = {}
        if self.locator is not None and words:
            work.calls["locator"] += 1
            boxes = await asyncio.to_thread(self.locator.locate, work.pixels, words)
        area = float(work.pixels.width * work.pixels.height)
        views: dict[tuple[str, int, str], _View] = {}
        for rule in rules:
            th = self.thresholds[rule.id]
            for index, pre in enumerate(chains[rule.id]):
                for statement in pre.any_of:
                    where = (rule.id, index, statement)
                    found = [boxes.get(w) for w in pre.objects_of(statement)]
                    confident = [
                        b for b in found if b is not None and b.confidence > th.box_confidence
                    ]
                    if not confident:
                        views[where] = _View(work.pixels, work.key)
                        continue
                    box = max(confident, key=lambda b: b.confidence)
                    if box.area() < th.crop_area * area:
                        # No sharing between alternatives: each cuts its own crop.
                        crop = self.crop(work.pixels, box)
                        views[where] = _View(
                            crop, f"{work.key}#crop:{box.label}", box, cropped=True
                        )
                    else:
                        views[where] = _View(work.pixels, work.key, box)
        return views

    # ---- stages 4 and 5 for one rule -----------------------------------------------------

    async def _ask(
        self, work: _Image, kind: str, statement: str, view: _View | None
    ) -> YesNoResult:
        if view is None:
            query = queries.visibility_query(statement)
        else:
            query = queries.visibility_query(statement, view.image, view.key)
        work.calls[kind] += 1
        return (await self.backend.yes_no([query]))[0]

    async def _rule(
        self,
        work: _Image,
        rule: CompiledRule,
        views: dict[tuple[str, int, str], _View],
        score: float | None,
        threshold: float | None,
    ) -> RuleVerdict:
        th = self.thresholds[rule.id]
        chain = self._chain(rule)
        states: list[str] = []
        reasons: list[str] = []
        for index, pre in enumerate(chain):
            own = {s: views[(rule.id, index, s)] for s in pre.any_of}
            state, why = await self._precondition(work, pre, own, th)
            states.append(state)
            reasons += [f"precondition {index + 1}: {w}" for w in why]
            if state == "not_met":
                break  # the chain is an AND: the rule cannot be violated any more
        evidence = [
            PreconditionEvidence(index=i, outcome=s)  # type: ignore[arg-type]
            for i, s in enumerate(states)
        ]
        if "not_met" in states:
            outcome, decisive, reason = "not_violated", states.index("not_met"), None
        elif all(s == "met" for s in states):
            outcome, decisive, reason = "violated", len(states) - 1, None
        else:
            outcome, decisive = "undecided", states.index("undecided")
            reason = "; ".join(reasons) or "undecided"
        return RuleVerdict(
            rule_id=rule.id,
            outcome=outcome,  # type: ignore[arg-type]
            relevance=score,
            relevance_threshold=threshold,
            decisive_precondition=decisive,
            preconditions=evidence,
            reason=reason,
        )

    async def _precondition(
        self, work: _Image, pre: PreconditionSpec, views: dict[str, _View], th: Thresholds
    ) -> tuple[str, list[str]]:
        """(met | not_met | undecided, reasons for undecided alternatives); `views`: the
        image each alternative is asked about."""
        states: dict[str, str] = {}
        m_of: dict[str, float] = {}
        why: list[str] = []
        # Stage 4a: each alternative in turn, its prior asked afresh every time.
        for statement in dict.fromkeys(pre.any_of):
            result = await self._ask(work, "first_pass", statement, views[statement])
            if self.options.debias:
                prior_result = await self._ask(work, "prior", statement, None)
                prior, prior_error = prior_result.m, prior_result.error
            else:
                prior, prior_error = 0.5, None
            if result.m is None:
                states[statement] = "undecided"
                why.append(f"{statement!r}: answer missing: {result.error or 'no Yes/No'}")
            elif prior is None:
                states[statement] = "undecided"
                why.append(f"{statement!r}: prior unavailable: {prior_error or 'no Yes/No'}")
            else:
                m_of[statement] = result.m
                d = result.m - prior
                states[statement] = (
                    "not_met" if d < th.a1(prior) else "met" if d > th.a2(prior) else "uncertain"
                )
            if states[statement] == "met":
                return "met", []
        # Stage 4b: the central region, for what is still uncertain and has a box.
        for statement, state in list(states.items()):
            view = views[statement]
            if state == "uncertain" and view.box is not None:
                filled = self.fill(work.pixels, view.box)
                masked = _View(
                    self.crop(filled, view.box) if view.cropped else filled,
                    f"{view.key}#mask:{view.box.label}",
                )
                result = await self._ask(work, "masked", statement, masked)
                if result.m is None:
                    states[statement] = "undecided"
                    why.append(f"{statement!r}: masked answer missing: {result.error}")
                elif m_of[statement] - result.m > th.beta:
                    return "met", []
        # Stage 5: reason about what is left, one statement at a time.
        for statement, state in list(states.items()):
            if state != "uncertain":
                continue
            if not self.options.cascade:
                states[statement] = "undecided"
                why.append(f"{statement!r}: uncertain, and the cascade is off")
                continue
            item = CascadeItem(statement, views[statement].image, views[statement].key)
            result_c = (await run_cascade(self.backend, [item]))[0]
            work.calls["cascade"] += 1
            work.calls["generate"] += result_c.generations
            if result_c.rating is None:
                states[statement] = "undecided"
                why.append(f"{statement!r}: {result_c.error or 'no rating'}")
            elif result_c.rating:
                return "met", []
            else:
                states[statement] = "not_met"
        if all(s == "not_met" for s in states.values()):
            return "not_met", []
        return "undecided", why


def same_verdicts(a: Verdict, b: Verdict) -> list[str]:
    """Where two verdicts for one image disagree: the image outcome, then each rule's
    outcome. Evidence and the deciding precondition may differ (the engine may settle a
    chain by a later precondition that the naive walk never reached)."""
    problems: list[str] = []
    if a.outcome != b.outcome:
        problems.append(f"{a.image_id}: outcome {a.outcome} vs {b.outcome}")
    theirs = {r.rule_id: r.outcome for r in b.rules}
    for rule in a.rules:
        other = theirs.get(rule.rule_id)
        if other != rule.outcome:
            problems.append(f"{a.image_id}: rule {rule.rule_id} {rule.outcome} vs {other}")
    return problems
