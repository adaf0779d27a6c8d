"""`judge calibrate`: per-rule thresholds and the relevance threshold from labelled data.

What is tuned, and how:

* Per rule, the "met" threshold of the first pass, `a2_scale`. An alternative is met when
  d = M(x,c) - M(None,c) > a2_scale * (1 - M(None,c)), that is when its evidence
  e = d / (1 - M(None,c)) exceeds a2_scale; a rule needs every precondition (AND) to have
  some alternative (OR) met, so its evidence is z = min over preconditions of the max over
  alternatives of e, and it is violated at this stage iff z > a2_scale. The engine asks
  every alternative in one first pass, so one cheap pass over the calibration split (no
  central-region step, no cascade, every rule judged) gives z for every image and rule,
  and each candidate threshold is scored without asking the model again. The threshold
  chosen maximises the rule's F1 (a hit needs this rule), or is the lowest whose
  false-positive rate stays within the target.
* The relevance threshold t: the highest value that keeps `relevance_recall` (default
  95%; the paper kept 96.6%) of the truly violated (image, rule) pairs.

Both are written into the lock's `calibration`, with the data set's hash and the
objective. The replay scores the first pass alone (the cascade later settles what the
first pass leaves open), so the honest measure is the before/after: the full method with
the old lock and with the new one, on a held-out split.
"""

from __future__ import annotations

import hashlib
import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from judge.constitution.schema import Calibration, Lock
from judge.engine.judge import Judge
from judge.engine.procedure import JudgeOptions
from judge.engine.verdict import RuleVerdict, Verdict
from judge.errors import DatasetError
from judge.evaluate.ablations import FULL, JudgeMethod
from judge.evaluate.datasets import Example, LabelledSet
from judge.evaluate.metrics import Counts, image_counts, rule_counts
from judge.evaluate.report import EvalProgress
from judge.evaluate.runs import EvalStore, Method, run_key, run_log, run_method, to_scored
from judge.models.base import Backend
from judge.models.options import ModelOptions
from judge.store import Store
from judge.thresholds import ThresholdOverrides, Thresholds

# The first-pass evidence e lies in [-p/(1-p), 1]; a2_scale must be >= 0.
_LOW, _HIGH = 0.0, 1.0


@dataclass
class CalibrationSpec:
    dataset: LabelledSet
    lock: Lock
    objective: str = "f1"  # "f1" | "fpr"
    target_fpr: float = 0.05
    relevance_recall: float = 0.95
    split: str | None = None
    holdout: str | None = None
    # The model, back end, server, key, relevance scorer and locator, as for `judge`.
    model_options: ModelOptions = field(default_factory=ModelOptions)
    concurrency: int = 8
    progress: bool = True


@dataclass
class RuleChoice:
    rule_id: str
    threshold: float | None  # the chosen a2_scale; None: kept the default
    default: float
    positives: int
    negatives: int
    before: Counts | None = None  # first-pass decisions at the default, calibration split
    after: Counts | None = None  # ... at the chosen threshold
    note: str = ""


@dataclass
class CalibrationResult:
    lock: Lock
    rules: list[RuleChoice]
    relevance: float | None
    relevance_note: str
    calibration_split: str
    holdout_split: str | None
    sizes: dict[str, int]
    before: dict[str, Any] = field(default_factory=dict)  # held-out metrics, old lock
    after: dict[str, Any] = field(default_factory=dict)  # held-out metrics, new lock


# ---- evidence and thresholds (pure) --------------------------------------------------------


def alternative_evidence(d: float | None, prior: float | None) -> float | None:
    if d is None or prior is None:
        return None
    room = 1.0 - prior
    if room <= 1e-9:
        return math.inf if d > 0 else -math.inf
    return d / room


def rule_evidence(rule: RuleVerdict) -> float | None:
    """z: the rule's first-pass evidence (min over the AND of the max over each OR)."""
    if rule.outcome == "irrelevant" or not rule.preconditions:
        return None
    per_pre = []
    for pre in rule.preconditions:
        values = [
            e for a in pre.alternatives if (e := alternative_evidence(a.d, a.prior)) is not None
        ]
        if not values:
            return None
        per_pre.append(max(values))
    return min(per_pre)


def _counts(positives: Sequence[float], negatives: Sequence[float], threshold: float) -> Counts:
    tp = sum(z > threshold for z in positives)
    fp = sum(z > threshold for z in negatives)
    return Counts(tp=tp, fp=fp, tn=len(negatives) - fp, fn=len(positives) - tp)


def candidates(values: Sequence[float]) -> list[float]:
    """Thresholds that separate the observed evidence values, within [0, 1]."""
    finite = sorted({v for v in values if math.isfinite(v)})
    cuts = {_LOW, _HIGH}
    cuts.update((a + b) / 2.0 for a, b in itertools.pairwise(finite))
    return sorted(c for c in cuts if _LOW <= c <= _HIGH)


def choose_threshold(
    positives: Sequence[float],
    negatives: Sequence[float],
    *,
    objective: str,
    target_fpr: float = 0.05,
) -> float:
    """The a2_scale for one rule: best F1 (ties: the highest threshold, fewer false
    alarms), or the lowest threshold whose false-positive rate is within the target."""
    options = candidates([*positives, *negatives])
    if objective == "fpr":
        for threshold in options:  # ascending: the first that holds the rate keeps recall
            rate = _counts(positives, negatives, threshold).fpr
            if rate is None or rate <= target_fpr:
                return threshold
        return _HIGH
    best, best_f1 = _HIGH, -1.0
    for threshold in options:
        f1 = _counts(positives, negatives, threshold).f1 or 0.0
        if f1 >= best_f1:
            best, best_f1 = threshold, f1
    return best


def relevance_threshold(true_pairs: Sequence[float], keep: float) -> float | None:
    """The highest t with at least `keep` of the truly violated pairs scoring above t."""
    scores = sorted(s for s in true_pairs if math.isfinite(s))
    if not scores:
        return None
    must_keep = math.ceil(keep * len(scores))
    drop = len(scores) - must_keep
    return max(-1.0, min(1.0, scores[drop] - 1e-6))


# ---- the run -------------------------------------------------------------------------------


def _halves(data: LabelledSet) -> tuple[list[Example], list[Example]]:
    first: list[Example] = []
    second: list[Example] = []
    for example in data:
        digest = hashlib.sha256(example.id.encode()).digest()
        (first if digest[0] % 2 == 0 else second).append(example)
    return first, second


def split_sets(spec: CalibrationSpec) -> tuple[str, list[Example], str | None, list[Example]]:
    data = spec.dataset
    if not data.splits:
        if spec.split or spec.holdout:
            raise DatasetError(f"{data.source.name}: the set has no splits to choose from")
        a, b = _halves(data)
        return "half-a", a, "half-b", b
    name = spec.split or ("train" if "train" in data.splits else None)
    if name is None:
        raise DatasetError(f"{data.source.name}: pass --split (splits: {', '.join(data.splits)})")
    calibration = list(data.select(split=name))
    held = spec.holdout or ("test" if "test" in data.splits and name != "test" else None)
    return name, calibration, held, list(data.select(split=held)) if held else []


async def _judged(
    method: Method,
    examples: list[Example],
    evals: EvalStore,
    spec: CalibrationSpec,
    backend: Backend,
    lock: Lock,
    split: str,
    progress: EvalProgress,
) -> dict[str, Verdict]:
    log = run_log(
        method=method,
        model=backend.model_id,
        backend=backend.kind,
        server=spec.model_options.server,
        lock_hash=lock.lock_hash(),
        dataset={"name": spec.dataset.name, "sha256": spec.dataset.sha256, "split": split},
        options={"relevance": spec.model_options.relevance,
                 "locator": spec.model_options.locator, "purpose": "calibrate"},
    )
    key = run_key(log)
    evals.open_run(key, log)
    by_id = {e.id: e for e in examples}
    task = progress.start(f"{method.name} · {split}", len(examples))
    await run_method(
        method,
        examples,
        evals,
        key,
        concurrency=spec.concurrency,
        stats=backend.stats.snapshot,
        on_result=lambda ex, j: progress.advance(
            task, to_scored(ex, _row(ex.id, j.verdict, j.score))
        ),
    )
    return {r.example_id: r.verdict for r in evals.results(key) if r.example_id in by_id}


def _row(example_id: str, verdict: Verdict, score: float | None) -> Any:
    from judge.evaluate.runs import StoredResult

    return StoredResult(example_id, verdict, score, 0.0, None, "")


def _metrics(
    examples: list[Example], verdicts: dict[str, Verdict], rule_ids: list[str]
) -> dict[str, Any]:
    from judge.evaluate.runs import StoredResult

    scored = [
        to_scored(e, StoredResult(e.id, verdicts[e.id], None, 0.0, None, ""))
        for e in examples
        if e.id in verdicts
    ]
    return {
        "image": image_counts(scored).as_dict(),
        "per_rule": {r: c.as_dict() for r, c in rule_counts(scored, rule_ids).items()},
    }


async def run_calibration(spec: CalibrationSpec, store: Store) -> CalibrationResult:
    """Calibrate on one split, write nothing, and measure before/after on the held-out one."""
    cal_name, cal_set, held_name, held_set = split_sets(spec)
    if not cal_set:
        raise DatasetError(f"{spec.dataset.source.name}: the calibration split is empty")
    base = spec.lock.model_copy(update={"calibration": None})
    evals = EvalStore(store)
    rules = base.enabled_rules()
    rule_ids = [r.id for r in rules]
    # The pass that gathers evidence: every rule judged (relevance threshold at its
    # floor, scores still recorded), first pass only.
    probe = Judge(
        base,
        **replace(spec.model_options, locator="off").judge_kwargs(),
        thresholds=ThresholdOverrides.model_validate({"relevance": -1.0, "relevance_vlm": 0.0}),
        options=JudgeOptions(center=False, cascade=False),
        store=store,
    )
    judges = [probe]
    try:
        backend = probe.backend
        with EvalProgress(enabled=spec.progress) as progress:
            probe_method = JudgeMethod("calibration-pass", probe)
            probe_method.kind = "calibration"
            verdicts = await _judged(
                probe_method, cal_set, evals, spec, backend, base, cal_name, progress
            )
            choices = _choose(spec, cal_set, verdicts, base)
            relevance, note = _relevance(spec, cal_set, verdicts)
            calibration = Calibration(
                dataset_sha256=spec.dataset.sha256,
                objective=spec.objective if spec.objective == "f1" else f"fpr<={spec.target_fpr:g}",
                relevance=relevance,
                rules={
                    c.rule_id: ThresholdOverrides.model_validate(
                        {"a2_scale": round(c.threshold, 6)}
                    )
                    for c in choices
                    if c.threshold is not None
                },
            )
            new_lock = base.model_copy(update={"calibration": calibration})
            result = CalibrationResult(
                lock=new_lock,
                rules=choices,
                relevance=relevance,
                relevance_note=note,
                calibration_split=cal_name,
                holdout_split=held_name,
                sizes={"calibration": len(cal_set), "holdout": len(held_set)},
            )
            if held_set:
                for label, lock in (("before", base), ("after", new_lock)):
                    judge = Judge(
                        lock, **spec.model_options.judge_kwargs(backend=backend), store=store
                    )
                    judges.append(judge)
                    method = JudgeMethod(FULL, judge)
                    held = await _judged(
                        method, held_set, evals, spec, backend, lock, held_name or "", progress
                    )
                    setattr(result, label, _metrics(held_set, held, rule_ids))
        return result
    finally:
        for judge in reversed(judges):
            await judge.aclose()


def _choose(
    spec: CalibrationSpec, examples: list[Example], verdicts: dict[str, Verdict], lock: Lock
) -> list[RuleChoice]:
    defaults = Thresholds.model_validate({}).merged(lock.defaults.thresholds)
    out = []
    for rule in lock.enabled_rules():
        default = defaults.merged(rule.thresholds).a2_scale
        positives: list[float] = []
        negatives: list[float] = []
        for example in examples:
            verdict = verdicts.get(example.id)
            if verdict is None or (example.unsafe and not example.rules):
                continue  # not judged, or its true rules are unknown
            found = next((r for r in verdict.rules if r.rule_id == rule.id), None)
            z = rule_evidence(found) if found is not None else None
            if z is None:
                continue
            (positives if rule.id in example.rules else negatives).append(z)
        choice = RuleChoice(rule.id, None, default, len(positives), len(negatives))
        if not positives or not negatives:
            choice.note = "kept the default: needs violating and non-violating examples"
        else:
            choice.threshold = choose_threshold(
                positives, negatives, objective=spec.objective, target_fpr=spec.target_fpr
            )
            choice.before = _counts(positives, negatives, default)
            choice.after = _counts(positives, negatives, choice.threshold)
        out.append(choice)
    return out


def _relevance(
    spec: CalibrationSpec, examples: list[Example], verdicts: dict[str, Verdict]
) -> tuple[float | None, str]:
    scorer = spec.model_options.relevance
    if scorer in ("off", "vlm"):
        return None, f"relevance scan is {scorer}: threshold not calibrated"
    true_pairs: list[float] = []
    every: list[float] = []
    for example in examples:
        verdict = verdicts.get(example.id)
        if verdict is None:
            continue
        for rule in verdict.rules:
            if rule.relevance is None:
                continue
            every.append(rule.relevance)
            if rule.rule_id in example.rules:
                true_pairs.append(rule.relevance)
    threshold = relevance_threshold(true_pairs, spec.relevance_recall)
    if threshold is None:
        return None, "no relevance scores for truly violated rules: threshold not calibrated"
    filtered = sum(s <= threshold for s in every) / len(every) if every else 0.0
    kept = sum(s > threshold for s in true_pairs) / len(true_pairs)
    return threshold, (
        f"t = {threshold:.4f}: keeps {100 * kept:.1f}% of {len(true_pairs)} truly violated "
        f"rules, filters {100 * filtered:.1f}% of {len(every)} (image, rule) pairs"
    )


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.1f}"


def format_summary(result: CalibrationResult) -> str:
    lines = [
        f"calibrated on split {result.calibration_split} ({result.sizes['calibration']} images)",
        "rule                     a2_scale  default  pos/neg  first-pass F1 before -> after",
    ]
    for c in result.rules:
        chosen = "–" if c.threshold is None else f"{c.threshold:.3f}"
        f1 = (
            f"{_pct(c.before.f1)} -> {_pct(c.after.f1)}"
            if c.before is not None and c.after is not None
            else c.note
        )
        lines.append(
            f"{c.rule_id:<24} {chosen:>8} {c.default:>8.3f} {c.positives:>4}/{c.negatives:<4} {f1}"
        )
    lines.append(f"relevance: {result.relevance_note}")
    if result.holdout_split and result.before:
        b, a = result.before["image"], result.after["image"]
        lines.append(
            f"held-out split {result.holdout_split} ({result.sizes['holdout']} images), full "
            f"method: R/Acc/F1 before {_pct(b['recall'])}/{_pct(b['accuracy'])}/{_pct(b['f1'])}"
            f" -> after {_pct(a['recall'])}/{_pct(a['accuracy'])}/{_pct(a['f1'])}"
        )
    else:
        lines.append("no held-out split: before/after not measured")
    return "\n".join(lines)
