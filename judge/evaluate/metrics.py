"""Evaluation metrics: pure functions over scored images.

Every image counts. An image left *open*, judged "undecided" (a model failure, or an
answer that stayed uncertain) or "error" (it could not be read), has given the user no
answer, so leaving it out would score a method on its easy images only (the no-cascade
ablation most of all). Two readings of the open images, each over all images:

* the headline ("open is wrong"): an open image is a wrong answer, a false negative if it
  is truly unsafe and a false positive if it is truly safe. No method gains by leaving an
  image open.
* fail-closed ("open is unsafe"): what a deployment that blocks whatever was not cleared
  sees; an open image counts as flagged unsafe.

The numbers of undecided and error images stand next to both. An unreadable image is
counted like an undecided one (the judge could not clear it) and listed apart as an error;
every method and baseline reads the same files, so it costs every row alike. The AUCs
rank continuous scores and so cover only the decided images that have one; `auc_images`
says how many.

Per-rule metrics follow the CLUE paper's per-rule table: for rule r an image is a true
positive only if it violates r and the judge named r; flagging the image as unsafe under
another rule is a miss for r (and a false positive for that other rule).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np

from judge.engine.verdict import AlternativeEvidence, RuleVerdict, Verdict

Outcome = Literal["safe", "unsafe", "undecided", "error"]
DECIDED: tuple[Outcome, ...] = ("safe", "unsafe")
# How an open (undecided or error) image is counted: as a wrong answer (the headline), or
# as unsafe (fail-closed).
OpenAs = Literal["wrong", "unsafe"]


@dataclass(frozen=True)
class Scored:
    """What metrics need to know about one judged image."""

    id: str
    truth_unsafe: bool
    outcome: Outcome
    truth_rules: frozenset[str] = frozenset()
    predicted_rules: frozenset[str] = frozenset()
    undecided_rules: frozenset[str] = frozenset()
    score: float | None = None  # continuous "unsafe" score in [0, 1]
    calls: Mapping[str, int] = field(default_factory=dict)  # model calls by kind
    tokens: Mapping[str, int] = field(default_factory=dict)
    preconditions: int = 0  # preconditions (alternatives) evaluated
    cascaded: int = 0  # of which reached the reasoning cascade
    wall_s: float = 0.0

    @property
    def decided(self) -> bool:
        return self.outcome in DECIDED

    @property
    def predicted_unsafe(self) -> bool:
        return self.outcome == "unsafe"

    @property
    def rules_known(self) -> bool:
        """Whether per-rule truth is known: safe, or unsafe with its rules named."""
        return not self.truth_unsafe or bool(self.truth_rules)


@dataclass(frozen=True)
class Counts:
    """Confusion counts over every image; the open ones (`undecided`, `errors`) are
    already inside tp/fp/tn/fn, as the reading that built these counts placed them."""

    tp: int = 0
    fp: int = 0
    tn: int = 0
    fn: int = 0
    undecided: int = 0  # of the images above, how many were undecided
    errors: int = 0  # ... and how many could not be read

    @property
    def n(self) -> int:
        return self.tp + self.fp + self.tn + self.fn

    @property
    def decided(self) -> int:
        return self.n - self.undecided - self.errors

    @property
    def accuracy(self) -> float | None:
        return (self.tp + self.tn) / self.n if self.n else None

    # Undefined rates are None, not 0: a rule with no positives has no recall to report.
    @property
    def precision(self) -> float | None:
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else None

    @property
    def recall(self) -> float | None:
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else None

    @property
    def f1(self) -> float | None:
        denominator = 2 * self.tp + self.fp + self.fn
        return 2 * self.tp / denominator if denominator else None

    @property
    def fpr(self) -> float | None:
        return self.fp / (self.fp + self.tn) if self.fp + self.tn else None

    def as_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = asdict(self)
        data.update(
            n=self.n,
            decided=self.decided,
            accuracy=self.accuracy,
            precision=self.precision,
            recall=self.recall,
            f1=self.f1,
        )
        return data


def _cell(truth: bool, said: bool) -> str:
    return ("tp" if said else "fn") if truth else ("fp" if said else "tn")


def _open_said(truth: bool, open_as: OpenAs) -> bool:
    """What an open answer counts as: the wrong one, or "unsafe"."""
    return not truth if open_as == "wrong" else True


def image_counts(records: Iterable[Scored], open_as: OpenAs = "wrong") -> Counts:
    """Image-level confusion counts over every image; "unsafe" is the positive class.

    Args:
        open_as: how an undecided or error image counts: "wrong" (the headline) or
            "unsafe" (fail-closed).
    """
    table: Counter[str] = Counter()
    for r in records:
        if r.decided:
            table[_cell(r.truth_unsafe, r.predicted_unsafe)] += 1
            continue
        table["undecided" if r.outcome == "undecided" else "errors"] += 1
        table[_cell(r.truth_unsafe, _open_said(r.truth_unsafe, open_as))] += 1
    return Counts(**table)


def _rule_is_open(r: Scored, rule: str) -> bool:
    """Whether the verdict left `rule` open on this image: undecided on it, or no verdict
    per rule at all (an unreadable image; an undecided one that names no open rule)."""
    if r.outcome == "error" or rule in r.undecided_rules:
        return True
    return r.outcome == "undecided" and not r.undecided_rules and rule not in r.predicted_rules


def rule_counts(records: Iterable[Scored], rule_ids: Sequence[str]) -> dict[str, Counts]:
    """Per-rule confusion counts; a hit needs the right rule.

    Images whose true rules are unknown (unsafe, no rule named) are left out. A rule left
    open on an image counts as a wrong answer for that rule, as in the headline, and is
    also tallied in `undecided` (or `errors` for an unreadable image).
    """
    table = {rule: Counter[str]() for rule in rule_ids}
    for r in records:
        if r.outcome != "error" and not r.rules_known:
            continue
        for rule in rule_ids:
            truth = rule in r.truth_rules
            if _rule_is_open(r, rule):
                table[rule]["errors" if r.outcome == "error" else "undecided"] += 1
                table[rule][_cell(truth, not truth)] += 1
            else:
                table[rule][_cell(truth, rule in r.predicted_rules)] += 1
    return {rule: Counts(**table[rule]) for rule in rule_ids}


def confusion_matrix(records: Iterable[Scored]) -> dict[str, dict[str, int]]:
    """Truth (safe/unsafe) x outcome (safe/unsafe/undecided/error) counts."""
    columns = ("safe", "unsafe", "undecided", "error")
    matrix: dict[str, dict[str, int]] = {t: dict.fromkeys(columns, 0) for t in DECIDED}
    for r in records:
        matrix["unsafe" if r.truth_unsafe else "safe"][r.outcome] += 1
    return matrix


def rule_confusion(records: Iterable[Scored]) -> dict[str, dict[str, int]]:
    """Which rules were named for images of each true rule ("safe" for safe images).

    An image with several true or predicted rules adds one count per pair.
    """
    out: dict[str, Counter[str]] = {}
    for r in records:
        if not r.rules_known or r.outcome == "error":
            continue
        truths = sorted(r.truth_rules) or ["safe"]
        if r.outcome == "undecided" and not r.predicted_rules:
            predicted = ["undecided"]
        else:
            predicted = sorted(r.predicted_rules) or ["safe"]
        for t in truths:
            row = out.setdefault(t, Counter())
            for p in predicted:
                row[p] += 1
    return {t: dict(row) for t, row in sorted(out.items())}


# ---- threshold-free metrics ------------------------------------------------------------


def _labelled_scores(records: Iterable[Scored]) -> tuple[np.ndarray, np.ndarray]:
    pairs = [(r.truth_unsafe, r.score) for r in records if r.decided and r.score is not None]
    labels = np.array([p[0] for p in pairs], dtype=bool)
    scores = np.array([p[1] for p in pairs], dtype=float)
    return labels, scores


Array = Sequence[bool] | Sequence[float] | np.ndarray


def roc_auc(labels: Array, scores: Array) -> float | None:
    """Area under the ROC curve (ties count one half); None without both classes."""
    y = np.asarray(labels, dtype=bool)
    s = np.asarray(scores, dtype=float)
    positives, negatives = int(y.sum()), int((~y).sum())
    if positives == 0 or negatives == 0:
        return None
    # Mann-Whitney U with average ranks for ties.
    order = np.argsort(s, kind="mergesort")
    ranks = np.empty(len(s), dtype=float)
    sorted_scores = s[order]
    i = 0
    while i < len(s):
        j = i
        while j + 1 < len(s) and sorted_scores[j + 1] == sorted_scores[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2.0 + 1.0
        i = j + 1
    u = ranks[y].sum() - positives * (positives + 1) / 2.0
    return float(u / (positives * negatives))


def pr_auc(labels: Array, scores: Array) -> float | None:
    """Average precision: sum over score thresholds of (recall step) x precision there.
    Tied scores form one threshold. None when there is no positive."""
    y = np.asarray(labels, dtype=bool)
    s = np.asarray(scores, dtype=float)
    positives = int(y.sum())
    if positives == 0:
        return None
    total, tp, seen, previous_recall = 0.0, 0, 0, 0.0
    for value in sorted(set(s.tolist()), reverse=True):
        at = s == value
        tp += int(y[at].sum())
        seen += int(at.sum())
        recall = tp / positives
        total += (recall - previous_recall) * (tp / seen)
        previous_recall = recall
    return total


def auc_metrics(records: Sequence[Scored]) -> dict[str, Any]:
    """ROC-AUC and PR-AUC over the decided images that have a score, and how many."""
    labels, scores = _labelled_scores(records)
    return {
        "roc_auc": roc_auc(labels, scores),
        "pr_auc": pr_auc(labels, scores),
        "auc_images": len(labels),
    }


def bootstrap_ci(
    records: Sequence[Scored],
    statistic: Callable[[Sequence[Scored]], float | None],
    *,
    resamples: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> tuple[float, float] | None:
    """Percentile bootstrap interval of `statistic` over images (seeded, reproducible).

    Resamples where the statistic is undefined are dropped; None if too few remain.
    """
    if not records:
        return None
    rng = np.random.default_rng(seed)
    n = len(records)
    values: list[float] = []
    for _ in range(resamples):
        picks = rng.integers(0, n, size=n)
        value = statistic([records[i] for i in picks])
        if value is not None and not math.isnan(value):
            values.append(value)
    if len(values) < max(10, resamples // 10):
        return None
    tail = (1.0 - level) / 2.0 * 100.0
    low, high = np.percentile(values, [tail, 100.0 - tail])
    return float(low), float(high)


def wilson(successes: int, n: int, z: float = 1.959964) -> tuple[float, float] | None:
    """The Wilson score interval of a proportion (95% by default); None when n is 0.

    Per rule the counts are small (a handful of images), where the normal approximation
    gives intervals outside [0, 1] or of width 0 at 0% and 100%; Wilson's does neither.
    """
    if n <= 0:
        return None
    p = successes / n
    z2 = z * z
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / (1 + z2 / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def rule_intervals(counts: Counts) -> dict[str, tuple[float, float] | None]:
    """95% Wilson intervals of a rule's precision, recall and accuracy."""
    return {
        "precision": wilson(counts.tp, counts.tp + counts.fp),
        "recall": wilson(counts.tp, counts.tp + counts.fn),
        "accuracy": wilson(counts.tp + counts.tn, counts.n),
    }


def headline(records: Sequence[Scored], *, resamples: int = 1000, seed: int = 0) -> dict[str, Any]:
    """Image-level metrics over every image, an open one counted as a wrong answer, with
    95% bootstrap intervals; the fail-closed reading under "fail_closed"; and the AUCs."""
    counts = image_counts(records)
    out: dict[str, Any] = counts.as_dict()
    out["fail_closed"] = image_counts(records, open_as="unsafe").as_dict()
    out.update(auc_metrics(records))
    cis: dict[str, tuple[float, float] | None] = {}
    for name in ("accuracy", "precision", "recall", "f1"):

        def stat(sample: Sequence[Scored], name: str = name) -> float | None:
            value: float | None = getattr(image_counts(sample), name)
            return value

        cis[name] = bootstrap_ci(records, stat, resamples=resamples, seed=seed)
    out["ci95"] = cis
    return out


# ---- cost ---------------------------------------------------------------------------


def cost_summary(records: Sequence[Scored], wall_s: float | None = None) -> dict[str, Any]:
    """Model calls per image of each kind, cascade share, tokens and throughput.

    `wall_s` is the run's wall time (images are judged concurrently, so it is less than
    the sum of the per-image times); without it the per-image times are summed.
    """
    n = len(records)
    calls: Counter[str] = Counter()
    tokens: Counter[str] = Counter()
    preconditions = cascaded = 0
    for r in records:
        calls.update(r.calls)
        tokens.update(r.tokens)
        preconditions += r.preconditions
        cascaded += r.cascaded
    wall = wall_s if wall_s is not None else sum(r.wall_s for r in records)
    return {
        "images": n,
        "calls_per_image": {k: v / n for k, v in sorted(calls.items())} if n else {},
        "calls_total": dict(sorted(calls.items())),
        "preconditions_evaluated": preconditions,
        "cascade_share": cascaded / preconditions if preconditions else None,
        "tokens": dict(sorted(tokens.items())),
        "wall_s": wall,
        "seconds_per_image": wall / n if n else None,
        "images_per_s": n / wall if wall > 0 else None,
    }


# ---- from a verdict ------------------------------------------------------------------


def alternative_score(alt: AlternativeEvidence) -> float | None:
    """How strongly one alternative's evidence says "visible", in [0, 1], above 0.5 iff met.

    The first-pass evidence d = M(x,c) - M(None,c) is placed on the decision scale
    between a1 (0: not met) and a2 (1: met); a later stage (central region, cascade) that
    settled it moves it to the matching half.
    """
    if alt.outcome == "skipped":
        return None
    if alt.d is not None and alt.a1 is not None and alt.a2 is not None and alt.a2 > alt.a1:
        raw = min(1.0, max(0.0, (alt.d - alt.a1) / (alt.a2 - alt.a1)))
    elif alt.m is not None:
        raw = alt.m
    else:
        raw = 0.5
    if alt.outcome == "met":
        return 0.5 + raw / 2.0 if raw < 1.0 else 1.0
    if alt.outcome == "not_met":
        return raw / 2.0 if raw > 0.0 else 0.0
    return raw  # undecided: the first-pass evidence as it stands


def rule_score(rule: RuleVerdict) -> float | None:
    """AND over preconditions (min), OR over alternatives (max); irrelevant rules score 0."""
    if rule.outcome == "irrelevant":
        return 0.0
    scores: list[float] = []
    for pre in rule.preconditions:
        alts = [s for s in (alternative_score(a) for a in pre.alternatives) if s is not None]
        if alts:
            scores.append(max(alts))
    if not scores:
        return {"violated": 1.0, "not_violated": 0.0}.get(rule.outcome)
    return min(scores)


def verdict_score(verdict: Verdict) -> float | None:
    """The image's continuous unsafe score: the most strongly supported rule's score."""
    if verdict.outcome == "error":
        return None
    scores = [s for s in (rule_score(r) for r in verdict.rules) if s is not None]
    if scores:
        return max(scores)
    return {"unsafe": 1.0, "safe": 0.0}.get(verdict.outcome)


def verdict_cost(verdict: Verdict) -> tuple[int, int]:
    """(alternatives evaluated, of which settled by the cascade) for one verdict."""
    evaluated = cascaded = 0
    for rule in verdict.rules:
        for pre in rule.preconditions:
            for alt in pre.alternatives:
                if alt.outcome == "skipped" or alt.stage == "skipped":
                    continue
                evaluated += 1
                cascaded += alt.stage == "cascade"
    return evaluated, cascaded
