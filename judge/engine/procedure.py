"""The decision procedure of CLUE, stages 3 to 5, for one image (docs/method.md).

Per image:
1. Relevance: a rule is judged only if its relevance score exceeds its threshold
   (CLIP/SigLIP cosine, or the served model's own Yes/No answer), unless the scan is off.
2. Locate: one locator pass with the central-object words of every relevant precondition
   and alternative. Each alternative takes the most confident box of its own words (the
   precondition's words unless it names its own); a box smaller than `crop_area` of the
   image: its crop replaces the image for that alternative's queries. An alternative
   without a box of its own is asked on the whole image, whatever its siblings found.
3. First pass: every alternative of every precondition of every relevant rule, asked in
   one Yes/No batch (identical questions once), with the priors M(None, c) alongside.
   d = M - prior: d < a1 not met, d > a2 met, otherwise uncertain.
4. Rounds: each undecided rule takes the first still-uncertain precondition of its AND
   chain through the next stage: the central-region check for its alternatives with a box
   (remove the box, by default with the mean colour, re-ask; M(x) - M(x minus box) > beta
   means met), then the cascade for what is still uncertain. A chain
   stops at its first precondition that is definitively not met, so the expensive stages
   run only for preconditions that can still change the rule's outcome.
5. OR: an alternative met makes its precondition met; all not met make it not met.
   AND: the rule is violated iff every precondition is met.

Failures never turn into "not met": a missing answer, a failed prior or an unparseable
cascade leaves the alternative undecided, and an undecided precondition (with none
definitively not met) leaves the rule undecided, the image too unless a rule is violated.
A precondition not met still decides its rule "not violated" when another stayed
undecided; the rule's verdict then lists those (`undecided_preconditions`) and its reason
says so, and the image's verdict names the rule in `partly_undecided`.
Relevance: a missing or non-finite score (None, NaN) keeps the rule; it is never skipped.
"""

from __future__ import annotations

import asyncio
import math
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Protocol

from PIL import Image

from judge import queries
from judge.constitution.schema import CompiledRule, Lock, PreconditionSpec
from judge.engine.cascade import CascadeItem, CascadeResult, run_cascade
from judge.engine.priors import Prior, PriorCache
from judge.engine.verdict import AlternativeEvidence, PreconditionEvidence, RuleVerdict
from judge.models.base import Backend, YesNoQuery, YesNoResult
from judge.thresholds import Thresholds
from judge.video.options import VideoOptions
from judge.vision.box import Box

if TYPE_CHECKING:
    from judge.vision.masking import FillMethod

@dataclass(frozen=True)
class JudgeOptions:
    """Stage switches; also the ablations of `judge eval`."""

    relevance: bool = True  # stage 3 relevance scan
    center: bool = True  # stage 4b central-region check (and small-box crops)
    cascade: bool = True  # stage 5 reasoning
    debias: bool = True  # False: M(None,c) taken as a flat 0.5 instead of the model's prior
    preconditions: bool = True  # False: the rule's text as its only precondition
    objectified: bool = True  # False: the author's source text instead of the objectified text
    first_violation: bool = False  # stop judging an image at its first violated rule
    # Clips (video, animated images): judge every frame instead of sampling them; a PIL
    # animation given directly: every frame (default: its first frame).
    all_frames: bool = False
    # How stage 4b removes the central region: "mean" colour (default), "blur" or "black".
    fill: FillMethod = "mean"
    # How clips are sampled and what a clip may be (judge.video.options).
    video: VideoOptions = field(default_factory=VideoOptions)

    def __post_init__(self) -> None:
        from judge.errors import InputError
        from judge.vision.masking import FILL_METHODS

        if self.fill not in FILL_METHODS:
            raise InputError(f"unknown fill {self.fill!r}; choose one of {', '.join(FILL_METHODS)}")

    def fill_used(self, locator: Locator | None) -> FillMethod | None:
        """The fill a run with `locator` uses; None when no region is ever removed."""
        return self.fill if self.center and locator is not None else None


class RelevanceScorer(Protocol):
    def score(self, image: Image.Image, texts: Sequence[str]) -> list[float]: ...


class Locator(Protocol):
    def locate(self, image: Image.Image, words: Sequence[str]) -> Mapping[str, Box | None]: ...


Relevance = RelevanceScorer | Literal["vlm"] | None


def make_fill(method: FillMethod) -> Callable[[Image.Image, Box], Image.Image]:
    """The region-removal function of `method` (judge.vision.masking.fill_box)."""
    from judge.vision.masking import fill_box

    def fill(image: Image.Image, box: Box) -> Image.Image:
        return fill_box(image, box, method)

    return fill


def _default_fill(image: Image.Image, box: Box) -> Image.Image:
    # Stands for "the fill the options name": Setup swaps it for that fill.
    return make_fill("mean")(image, box)


def _default_crop(image: Image.Image, box: Box) -> Image.Image:
    from judge.vision.masking import crop_box

    return crop_box(image, box)


def _locked(lock: threading.Lock, fn: Callable[..., Any], *args: Any) -> Any:
    with lock:
        return fn(*args)


def rule_thresholds(lock: Lock, run: Thresholds) -> dict[str, Thresholds]:
    """Per rule: the run's thresholds, then the rule's own overrides, then calibration."""
    calibration = lock.calibration
    base = run
    if calibration is not None and calibration.relevance is not None:
        base = base.model_copy(update={"relevance": calibration.relevance})
    out: dict[str, Thresholds] = {}
    for rule in lock.rules:
        merged = base.merged(rule.thresholds)
        if calibration is not None:
            merged = merged.merged(calibration.rules.get(rule.id))
        out[rule.id] = merged
    return out


def threshold_sources(lock: Lock, name: str, run_source: str) -> dict[str, str]:
    """Per rule: where its relevance threshold `name` ("relevance" or "relevance_vlm")
    came from, in the order `rule_thresholds` applies them; `run_source` says where the
    run's own value came from."""
    calibration = lock.calibration
    base = run_source
    if name == "relevance" and calibration is not None and calibration.relevance is not None:
        base = "the lock's calibration"
    out: dict[str, str] = {}
    for rule in lock.rules:
        source = base
        if rule.thresholds is not None and getattr(rule.thresholds, name) is not None:
            source = "the rule's thresholds"
        calibrated = calibration.rules.get(rule.id) if calibration is not None else None
        if calibrated is not None and getattr(calibrated, name) is not None:
            source = "the lock's calibration"
        out[rule.id] = source
    return out


@dataclass
class Setup:
    """What the procedure needs for a run; shared by every image."""

    backend: Backend
    rules: list[CompiledRule]
    thresholds: dict[str, Thresholds]
    options: JudgeOptions
    priors: PriorCache
    relevance: Relevance = None
    locator: Locator | None = None
    # Per rule: where its relevance threshold came from (`threshold_sources`).
    relevance_sources: dict[str, str] = field(default_factory=dict)
    fill: Callable[[Image.Image, Box], Image.Image] = _default_fill
    crop: Callable[[Image.Image, Box], Image.Image] = _default_crop
    # One vision-encoder forward pass at a time: on a few CPU cores, parallel passes only
    # thrash, and images in flight still overlap their model calls.
    encoder_lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        # The default fill follows the options; a fill passed in (tests) is used as given.
        if self.fill is _default_fill:
            self.fill = make_fill(self.options.fill)


@dataclass
class SharedRelevance:
    """Relevance scores shared by several images: the frames of one scene of a clip.
    The first frame to be judged scores the rules; the others take its scores (the lock
    makes frames judged at once wait for it instead of scoring again)."""

    scores: dict[str, float | None] = field(default_factory=dict)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


@dataclass
class ImageResult:
    rules: list[RuleVerdict]
    calls: Counter[str]
    timings: dict[str, float]


# ---- working state ------------------------------------------------------------------


@dataclass
class _View:
    """The image a precondition is asked about: the whole image, or a small box's crop."""

    image: Image.Image
    key: str
    box: Box | None = None  # a confident box of the precondition's central objects
    cropped: bool = False
    _masked: tuple[Image.Image, str] | None = None


@dataclass(eq=False)
class _Alt:
    statement: str
    state: str = "uncertain"  # uncertain | met | not_met | undecided | skipped
    stage: str = "prior"
    m: float | None = None
    prior: float | None = None
    d: float | None = None
    masked_m: float | None = None
    rationale: str | None = None
    error: str | None = None
    centered: bool = False
    # The image this alternative is asked about: the whole image, or the crop of a small
    # box of its own object words (set by `locate`).
    view: _View | None = None


@dataclass(eq=False)
class _Pre:
    index: int
    spec: PreconditionSpec
    alts: list[_Alt]

    def state(self) -> str:
        states = [a.state for a in self.alts]
        if "met" in states:
            return "met"
        if all(s == "not_met" for s in states):
            return "not_met"
        if "uncertain" in states:
            return "uncertain"
        return "undecided"


@dataclass(eq=False)
class _Rule:
    rule: CompiledRule
    th: Thresholds
    pres: list[_Pre]
    relevance: float | None = None
    outcome: str | None = None  # violated | not_violated | undecided | skipped
    decisive: int | None = None
    reason: str | None = None


def _undecided_why(rule: _Rule) -> str:
    """Each undecided alternative of `rule`'s undecided preconditions, and why."""
    return "; ".join(
        f"precondition {p.index + 1}: {a.statement!r}: {a.error or 'uncertain'}"
        for p in rule.pres
        if p.state() == "undecided"
        for a in p.alts
        if a.state == "undecided"
    )


def _finite(score: float | None) -> float | None:
    """`score` as a verdict records it: None for a missing or non-finite one."""
    return score if score is not None and math.isfinite(score) else None


def _kept(score: float | None, threshold: float) -> bool:
    """Whether a rule with relevance `score` is judged: a missing or non-finite score
    (None, NaN, inf) keeps it, since skipping it could only hide a violation."""
    return score is None or not math.isfinite(score) or score > threshold


class _Run:
    """The procedure for one image."""

    def __init__(
        self, setup: Setup, image: Image.Image, key: str, shared: SharedRelevance | None = None
    ) -> None:
        self.s = setup
        self.image = image
        self.key = key
        self.shared = shared
        self.calls: Counter[str] = Counter()
        self.timings: dict[str, float] = {}
        # Raw model answers of this image, shared by every rule that asks the same thing.
        self.first: dict[tuple[str, str], YesNoResult] = {}
        self.masked: dict[tuple[str, str], YesNoResult] = {}
        self.cascaded: dict[tuple[str, str], CascadeResult] = {}
        self._owner: dict[int, _Rule] = {}

    # -- helpers

    def _rule_text(self, rule: CompiledRule) -> str:
        return rule.text if self.s.options.objectified else rule.source_text

    def _timed(self, name: str, started: float) -> None:
        self.timings[name] = self.timings.get(name, 0.0) + time.perf_counter() - started

    # -- stage 3: relevance

    async def relevance(self) -> list[_Rule]:
        rules = [r for r in self.s.rules if r.enabled]
        scores: list[float | None] = [None] * len(rules)
        scorer = self.s.relevance if self.s.options.relevance else None
        if scorer is not None and self.shared is not None:
            # A clip's scene: scored once, on its first frame to ask (judge.engine.clip).
            async with self.shared.lock:
                missing = [r for r in rules if r.id not in self.shared.scores]
                if missing:
                    found = await self._scores(scorer, missing)
                    self.shared.scores.update(zip([r.id for r in missing], found, strict=True))
                scores = [self.shared.scores[r.id] for r in rules]
        elif scorer is not None:
            scores = await self._scores(scorer, rules)
        out: list[_Rule] = []
        for i, rule in enumerate(rules):
            th = self.s.thresholds[rule.id]
            state = _Rule(rule, th, self._chain(rule), relevance=scores[i])
            threshold = th.relevance_vlm if scorer == "vlm" else th.relevance
            if scorer is not None and not _kept(scores[i], threshold):
                state.outcome = "irrelevant"
            out.append(state)
        return out

    async def _scores(
        self, scorer: RelevanceScorer | Literal["vlm"], rules: list[CompiledRule]
    ) -> list[float | None]:
        """The relevance score of each rule on this image; None where there is no usable
        score (missing, NaN, inf), which keeps the rule (`_kept`)."""
        started = time.perf_counter()
        if scorer == "vlm":
            # The served model is asked about each rule's topic, not its text.
            asked = [queries.relevance_query(rule, self.image, self.key) for rule in rules]
            self.calls["relevance"] += len(asked)
            results = await self.s.backend.yes_no(asked)
            scores = [_finite(result.m) for result in results]
        else:
            self.calls["relevance_encoder"] += 1
            texts = [self._rule_text(r) for r in rules]
            # A scorer may still hand back None or NaN for a text it could not score.
            values: Sequence[float | None] = await asyncio.to_thread(
                _locked, self.s.encoder_lock, scorer.score, self.image, texts
            )
            scores = [None if value is None else _finite(float(value)) for value in values]
        self._timed("relevance", started)
        return scores

    def _chain(self, rule: CompiledRule) -> list[_Pre]:
        if self.s.options.preconditions:
            specs = rule.preconditions
        else:
            words = (o for p in rule.preconditions for o in p.all_objects())
            objects = list(dict.fromkeys(words))[:8]
            specs = [PreconditionSpec(any_of=[self._rule_text(rule)], objects=objects)]
        return [
            _Pre(i, spec, [_Alt(s) for s in dict.fromkeys(spec.any_of)])
            for i, spec in enumerate(specs)
        ]

    # -- stage 4b, part 1: locate once, crop small boxes

    async def locate(self, rules: list[_Rule]) -> None:
        pres = [p for r in rules for p in r.pres]
        boxes: Mapping[str, Box | None] = {}
        words = list(
            dict.fromkeys(w for p in pres for a in p.alts for w in p.spec.objects_of(a.statement))
        )
        if self.s.options.center and self.s.locator is not None and words:
            started = time.perf_counter()
            self.calls["locator"] += 1
            boxes = await asyncio.to_thread(
                _locked, self.s.encoder_lock, self.s.locator.locate, self.image, words
            )
            self._timed("locate", started)
        area = float(self.image.width * self.image.height)
        whole = _View(self.image, self.key)
        views: dict[tuple[str, bool], _View] = {}  # shared by every alternative with that box
        for pre in pres:
            th = self._th_of(pre)
            for alt in pre.alts:
                # Only the alternative's own words: a sibling's box (a small "throat") says
                # nothing about where this alternative's content (a torn torso) would be.
                found = [boxes.get(w) for w in pre.spec.objects_of(alt.statement)]
                confident = [
                    b for b in found if b is not None and b.confidence > th.box_confidence
                ]
                if not confident:
                    alt.view = whole
                    continue
                # With several boxes, the most confident one (docs/deviations.md, row 8).
                box = max(confident, key=lambda b: b.confidence)
                cropped = box.area() < th.crop_area * area
                if (box.label, cropped) not in views:
                    if cropped:
                        crop = await asyncio.to_thread(self.s.crop, self.image, box)
                        view = _View(crop, f"{self.key}#crop:{box.label}", box, cropped=True)
                    else:
                        view = _View(self.image, self.key, box)
                    views[(box.label, cropped)] = view
                alt.view = views[(box.label, cropped)]

    # -- stage 4a: the first pass, with the priors

    async def first_pass(self, rules: list[_Rule]) -> None:
        wanted: dict[tuple[str, str], tuple[str, _View]] = {}
        for rule in rules:
            for pre in rule.pres:
                for alt in pre.alts:
                    assert alt.view is not None
                    wanted.setdefault((alt.statement, alt.view.key), (alt.statement, alt.view))
        keys = list(wanted)
        batch = [queries.visibility_query(s, v.image, v.key) for s, v in wanted.values()]
        statements = list(dict.fromkeys(s for s, _ in keys))
        started = time.perf_counter()
        self.calls["first_pass"] += len(batch)
        if self.s.options.debias:
            answers, (priors, asked) = await asyncio.gather(
                self.s.backend.yes_no(batch), self.s.priors.get(statements)
            )
            self.calls["prior"] += asked
        else:
            answers = await self.s.backend.yes_no(batch)
            priors = {s: Prior(0.5) for s in statements}
        self._timed("first_pass", started)
        self.first.update(zip(keys, answers, strict=True))
        for rule in rules:
            for pre in rule.pres:
                for alt in pre.alts:
                    assert alt.view is not None
                    self._classify(
                        alt,
                        self.first[(alt.statement, alt.view.key)],
                        priors[alt.statement],
                        rule.th,
                    )

    def _classify(self, alt: _Alt, result: YesNoResult, prior: Prior, th: Thresholds) -> None:
        alt.m, alt.prior = result.m, prior.m
        if result.m is None:
            why = result.error or "neither Yes nor No among the returned probabilities"
            alt.state, alt.stage, alt.error = "undecided", "error", f"answer missing: {why}"
            return
        if prior.m is None:
            alt.state, alt.stage, alt.error = "undecided", "error", prior.error
            return
        alt.d = result.m - prior.m
        if alt.d < th.a1(prior.m):
            alt.state = "not_met"
        elif alt.d > th.a2(prior.m):
            alt.state = "met"

    # -- the rounds: AND chains, stage by stage

    def _settle(self, rule: _Rule) -> _Pre | None:
        """Decide `rule` if its chain allows; else return the precondition to work on."""
        states = [p.state() for p in rule.pres]
        if "not_met" in states:
            rule.outcome, rule.decisive = "not_violated", states.index("not_met")
            if "undecided" in states:
                # Logically right (an AND with a false link is false), but not a full check:
                # the reason says so wherever the verdict is shown.
                rule.reason = (
                    f"not violated: precondition {rule.decisive + 1} not met; "
                    f"undecided: {_undecided_why(rule)}"
                )
            return None
        if all(s == "met" for s in states):
            rule.outcome, rule.decisive = "violated", len(states) - 1
            return None
        if "uncertain" in states:
            return rule.pres[states.index("uncertain")]
        first = states.index("undecided")
        rule.outcome, rule.decisive = "undecided", first
        rule.reason = _undecided_why(rule)
        return None

    async def rounds(self, rules: list[_Rule]) -> None:
        while True:
            work = [
                (r, p) for r in rules if r.outcome is None and (p := self._settle(r)) is not None
            ]
            if self.s.options.first_violation and any(r.outcome == "violated" for r in rules):
                for r in rules:
                    if r.outcome is None:
                        r.outcome, r.reason = "skipped", "not judged: an earlier rule is violated"
                return
            if not work:
                return
            pres = list({id(p): p for _, p in work}.values())
            center = [p for p in pres if self._wants_center(p)]
            cascade = [p for p in pres if not any(p is c for c in center)]
            await asyncio.gather(self.center(center), self.cascade(cascade))

    def _wants_center(self, pre: _Pre) -> bool:
        return self.s.options.center and bool(self._to_center(pre))

    @staticmethod
    def _to_center(pre: _Pre) -> list[_Alt]:
        """The alternatives of `pre` the central-region check still has to re-ask: those
        uncertain with a box of their own."""
        return [
            a
            for a in pre.alts
            if a.state == "uncertain"
            and not a.centered
            and a.view is not None
            and a.view.box is not None
        ]

    # -- stage 4b, part 2: the masked re-query

    def _masked_view(self, view: _View) -> tuple[Image.Image, str]:
        assert view.box is not None
        if view._masked is None:
            # Mask in the full image, then crop the same box: a crop's masked twin keeps
            # whatever margin the crop has, and only the object itself disappears.
            filled = self.s.fill(self.image, view.box)
            image = self.s.crop(filled, view.box) if view.cropped else filled
            view._masked = (image, f"{view.key}#mask:{view.box.label}")
        return view._masked

    async def center(self, pres: list[_Pre]) -> None:
        if not pres:
            return
        started = time.perf_counter()
        work = [(pre, alt) for pre in pres for alt in self._to_center(pre)]
        wanted: dict[tuple[str, str], YesNoQuery] = {}
        for _, alt in work:
            assert alt.view is not None
            image, key = await asyncio.to_thread(self._masked_view, alt.view)
            if (alt.statement, key) not in self.masked:
                query = queries.visibility_query(alt.statement, image, key)
                wanted.setdefault((alt.statement, key), query)
        if wanted:
            self.calls["masked"] += len(wanted)
            answers = await self.s.backend.yes_no(list(wanted.values()))
            self.masked.update(zip(wanted, answers, strict=True))
        for pre, alt in work:
            assert alt.view is not None
            th = self._th_of(pre)
            _, key = self._masked_view(alt.view)
            alt.centered = True
            result = self.masked[(alt.statement, key)]
            alt.masked_m = result.m
            if result.m is None:
                why = result.error or "neither Yes nor No among the returned probabilities"
                alt.state, alt.stage = "undecided", "error"
                alt.error = f"masked answer missing: {why}"
            elif alt.m is not None and alt.m - result.m > th.beta:
                alt.state, alt.stage = "met", "center"
        self._timed("center", started)

    # -- stage 5: the cascade

    async def cascade(self, pres: list[_Pre]) -> None:
        pending = [(p, a) for p in pres for a in p.alts if a.state == "uncertain"]
        if not pending:
            return
        if not self.s.options.cascade:
            for _, alt in pending:
                alt.state, alt.stage = "undecided", "no_cascade"
                alt.error = alt.error or "uncertain, and the cascade is off"
            return
        started = time.perf_counter()
        wanted: dict[tuple[str, str], CascadeItem] = {}
        for _, alt in pending:
            assert alt.view is not None
            key = (alt.statement, alt.view.key)
            if key not in self.cascaded:
                wanted.setdefault(key, CascadeItem(alt.statement, alt.view.image, alt.view.key))
        if wanted:
            results = await run_cascade(self.s.backend, list(wanted.values()))
            self.calls["cascade"] += len(results)
            self.calls["generate"] += sum(r.generations for r in results)
            self.cascaded.update(zip(wanted, results, strict=True))
        for _, alt in pending:
            assert alt.view is not None
            result = self.cascaded[(alt.statement, alt.view.key)]
            alt.stage, alt.rationale = "cascade", result.rationale
            if result.rating is None:
                alt.state, alt.error = "undecided", result.error or "no rating"
            else:
                alt.state = "met" if result.rating else "not_met"
        self._timed("cascade", started)

    def _th_of(self, pre: _Pre) -> Thresholds:
        return self._owner[id(pre)].th

    # -- the whole image

    async def run(self) -> list[RuleVerdict]:
        started = time.perf_counter()
        rules = await self.relevance()
        live = [r for r in rules if r.outcome is None]
        self._owner.update({id(p): r for r in rules for p in r.pres})
        if live:
            await self.locate(live)
            await self.first_pass(live)
            await self.rounds(live)
        self._timed("total", started)
        return [self._verdict(r) for r in rules]

    def _verdict(self, rule: _Rule) -> RuleVerdict:
        threshold = None
        if self.s.options.relevance and self.s.relevance is not None:
            threshold = rule.th.relevance_vlm if self.s.relevance == "vlm" else rule.th.relevance
        source = self.s.relevance_sources.get(rule.rule.id) if threshold is not None else None
        if rule.outcome == "irrelevant":
            return RuleVerdict(
                rule_id=rule.rule.id,
                outcome="irrelevant",
                relevance=rule.relevance,
                relevance_threshold=threshold,
                relevance_threshold_source=source,
            )
        evidence = []
        undecided = []
        for pre in rule.pres:
            state = pre.state()
            if rule.outcome != "skipped" and state == "undecided":
                # Shown as undecided even past the link that decided the rule: an answer
                # that failed is never hidden as "not needed".
                undecided.append(pre.index)
            elif rule.outcome == "skipped" or state == "uncertain" or (
                rule.decisive is not None
                and pre.index > rule.decisive
                and rule.outcome == "not_violated"
            ):
                state = "skipped"
            evidence.append(
                PreconditionEvidence(
                    index=pre.index,
                    outcome=state,  # type: ignore[arg-type]
                    alternatives=[self._alt_evidence(a, pre, rule.th, state) for a in pre.alts],
                )
            )
        return RuleVerdict(
            rule_id=rule.rule.id,
            outcome=rule.outcome,  # type: ignore[arg-type]
            relevance=rule.relevance,
            relevance_threshold=threshold,
            relevance_threshold_source=source,
            decisive_precondition=rule.decisive,
            undecided_preconditions=undecided,
            preconditions=evidence,
            reason=rule.reason,
        )

    def _alt_evidence(
        self, alt: _Alt, pre: _Pre, th: Thresholds, pre_state: str
    ) -> AlternativeEvidence:
        state, stage = alt.state, alt.stage
        if state == "uncertain" or pre_state == "skipped":
            # Not needed: its precondition or rule was settled without it.
            state, stage = ("skipped", "skipped") if state == "uncertain" else (state, stage)
        assert alt.view is not None
        return AlternativeEvidence(
            statement=alt.statement,
            outcome=state,  # type: ignore[arg-type]
            stage=stage,  # type: ignore[arg-type]
            m=alt.m,
            prior=alt.prior,
            d=alt.d,
            a1=th.a1(alt.prior) if alt.prior is not None else None,
            a2=th.a2(alt.prior) if alt.prior is not None else None,
            beta=th.beta if alt.centered else None,
            masked_m=alt.masked_m,
            box=alt.view.box,
            cropped=alt.view.cropped,
            rationale=alt.rationale,
            error=alt.error,
        )


async def judge_image(
    setup: Setup, image: Image.Image, key: str, shared: SharedRelevance | None = None
) -> ImageResult:
    """Run the procedure on one (already resized) image; `key` names it to the back end.
    With `shared`, the relevance scores come from (or go to) the scores shared by the
    frames of one scene of a clip, so the scan runs once per scene."""
    run = _Run(setup, image, key, shared)
    rules = await run.run()
    return ImageResult(rules, run.calls, run.timings)
