"""Reports of an evaluation: report.json (for machines), built here with the gallery of
examples and the live progress bar; report.md (`report_md`) and report.html
(`report_html`) show the same sections from it, the HTML with images.

Per rule, support is small (a handful of images), so every per-rule rate carries a 95%
Wilson interval; the rule confusion table says which rule was named for images of which
true rule. The gallery shows what a policy team acts on: the errors (worst kinds first)
and some true positives, each with the evidence of the rules that decided it only, and
the locator's boxes of that evidence.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from judge.engine.verdict import (
    AlternativeEvidence,
    Box,
    PreconditionEvidence,
    RuleVerdict,
    Verdict,
)
from judge.evaluate.datasets import Example
from judge.evaluate.metrics import (
    Counts,
    Scored,
    confusion_matrix,
    cost_summary,
    headline,
    image_counts,
    rule_confusion,
    rule_counts,
    rule_intervals,
)

GALLERY_SIZE = 24  # errors shown, at most
GALLERY_POSITIVES = 8  # true positives shown next to them, at most
_ORDER = {
    "false negative": 0,
    "wrong rule": 1,
    "false positive": 2,
    "undecided": 3,
    "error": 4,
    "true positive": 5,
}
EVIDENCE_LINES = 12


@dataclass
class MethodResult:
    """One method (or ablation, or baseline) on one model, with its scored images."""

    method: str
    kind: str  # method | ablation | baseline
    model: str
    records: list[Scored]
    verdicts: dict[str, Verdict] = field(default_factory=dict)
    rationales: dict[str, str | None] = field(default_factory=dict)
    wall_s: float | None = None
    log: dict[str, Any] = field(default_factory=dict)


# ---- report.json -------------------------------------------------------------------------


def summarise(
    result: MethodResult, rule_ids: Sequence[str], *, resamples: int, seed: int
) -> dict[str, Any]:
    records = result.records
    out: dict[str, Any] = {
        "method": result.method,
        "kind": result.kind,
        "model": result.model,
        "image": headline(records, resamples=resamples, seed=seed),
        "confusion": confusion_matrix(records),
        "cost": {**cost_summary(records, result.wall_s), **_backend_totals(result, records)},
        "scores": _score_lists(records),
        "run": result.log,
    }
    if result.kind != "baseline":  # baselines never name a rule
        out["per_rule"] = {
            r: {**c.as_dict(), "ci95": rule_intervals(c)}
            for r, c in rule_counts(records, rule_ids).items()
        }
        out["rule_confusion"] = rule_confusion(records)
    return out


def _backend_totals(result: MethodResult, records: Sequence[Scored]) -> dict[str, Any]:
    """The back end's own counters (requests, tokens, retries), summed over the run's
    invocations: per-image verdicts cannot carry tokens, since requests are batched."""
    totals: dict[str, float] = {}
    for invocation in result.log.get("invocations", []):
        for key, value in invocation.get("stats", {}).items():
            totals[key] = totals.get(key, 0) + value
    n = len(records)
    per_image = {k: v / n for k, v in totals.items() if n and k.endswith("tokens")}
    return {"backend_totals": totals, "tokens_per_image": per_image}


def _score_lists(records: Iterable[Scored]) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {"safe": [], "unsafe": []}
    for r in records:
        if r.score is not None and r.decided:
            out["unsafe" if r.truth_unsafe else "safe"].append(round(r.score, 6))
    return out


def gallery(
    result: MethodResult,
    examples: Mapping[str, Example],
    limit: int = GALLERY_SIZE,
    positives: int = GALLERY_POSITIVES,
) -> list[dict[str, Any]]:
    """The images the method got wrong (or left open), worst kinds first, up to `limit`;
    then up to `positives` it got right as unsafe with the right rule. Each with the
    evidence of the rules that decided it and the boxes of that evidence."""
    errors: list[dict[str, Any]] = []
    right: list[dict[str, Any]] = []
    for r in result.records:
        kind = _kind(r)
        if kind is None:
            continue
        example = examples[r.id]
        verdict = result.verdicts.get(r.id)
        lines, boxes = decisive_evidence(verdict, example.rules) if verdict else ([], [])
        item = {
            "id": r.id,
            "file": example.name,
            "kind": kind,
            "truth": example.label,
            "truth_rules": list(example.rules),
            "outcome": r.outcome,
            "violated": sorted(r.predicted_rules),
            "score": r.score,
            "rationale": result.rationales.get(r.id),
            "evidence": lines,
            "boxes": [b.model_dump() for b in boxes],
            # The space the boxes are in: the pixels the model saw.
            "image_size": list(verdict.image_size) if verdict and verdict.image_size else None,
            "error": verdict.error if verdict else None,
        }
        (right if kind == "true positive" else errors).append(item)
    errors.sort(key=lambda i: (_ORDER[str(i["kind"])], str(i["id"])))
    right.sort(key=lambda i: str(i["id"]))
    return errors[:limit] + right[:positives]


def _kind(r: Scored) -> str | None:
    """The gallery kind of an image: an error of some kind, a true positive, or None (a
    correct "safe", which needs no showing)."""
    if r.outcome == "error":
        return "error"
    if r.outcome == "undecided":
        return "undecided"
    if r.truth_unsafe and not r.predicted_unsafe:
        return "false negative"
    if not r.truth_unsafe and r.predicted_unsafe:
        return "false positive"
    if (
        r.truth_unsafe
        and r.truth_rules
        and r.predicted_rules
        and not (r.truth_rules & r.predicted_rules)
    ):
        return "wrong rule"
    if r.truth_unsafe and r.predicted_unsafe:
        return "true positive"
    return None


def _numbers(alt: AlternativeEvidence) -> str:
    shown = [
        f"{name} {value:.2f}"
        for name, value in (("M", alt.m), ("prior", alt.prior))
        if value is not None
    ]
    if alt.d is not None:
        shown.append(f"d {alt.d:+.2f}")
    if alt.masked_m is not None:
        shown.append(f"masked M {alt.masked_m:.2f}")
    return ", ".join(shown)


def _deciding(rule: RuleVerdict) -> list[PreconditionEvidence]:
    """The preconditions that decided `rule`: all of a violated chain (each met), the one
    not met, or the ones left undecided."""
    if rule.outcome == "violated":
        return list(rule.preconditions)
    if rule.outcome == "undecided":
        return [p for p in rule.preconditions if p.outcome == "undecided"]
    return [p for p in rule.preconditions if p.index == rule.decisive_precondition]


def decisive_evidence(
    verdict: Verdict, truth_rules: Iterable[str] = ()
) -> tuple[list[str], list[Box]]:
    """The evidence that decided the image, as lines, and the boxes in it.

    Only the rules that matter are shown: those violated or left undecided, and those the
    image truly violates (why a missed rule was not found: not met, or skipped as
    irrelevant). Of each, only the deciding preconditions and, of an OR, the alternatives
    that carried its outcome."""
    wanted = set(verdict.violated) | set(verdict.undecided) | set(truth_rules)
    lines: list[str] = []
    boxes: list[Box] = []
    for rule in verdict.rules:
        if rule.rule_id not in wanted:
            continue
        if rule.outcome == "irrelevant":
            bound = rule.relevance_threshold
            score = "" if rule.relevance is None else f" (relevance {rule.relevance:.3f}"
            score += f" <= {bound:.3f})" if score and bound is not None else (")" if score else "")
            lines.append(f"{rule.rule_id}: skipped as irrelevant{score}")
            continue
        for pre in _deciding(rule):
            carried = [a for a in pre.alternatives if a.outcome == pre.outcome]
            for alt in carried or pre.alternatives:
                numbers = _numbers(alt)
                lines.append(
                    f"{rule.rule_id} #{pre.index + 1}: {alt.statement} -> "
                    f"{alt.outcome.replace('_', ' ')} ({alt.stage}"
                    f"{'; ' + numbers if numbers else ''})"
                )
                if alt.box is not None and alt.box not in boxes:
                    boxes.append(alt.box)
        if rule.reason and rule.outcome in ("undecided", "skipped"):
            lines.append(f"{rule.rule_id}: {rule.reason}")
    return lines[:EVIDENCE_LINES], boxes


def build_report(
    *,
    dataset: Mapping[str, Any],
    constitution: Mapping[str, Any],
    results: Sequence[MethodResult],
    examples: Mapping[str, Example],
    rule_ids: Sequence[str],
    resamples: int = 1000,
    seed: int = 0,
    gallery_size: int = GALLERY_SIZE,
) -> dict[str, Any]:
    methods = [summarise(r, rule_ids, resamples=resamples, seed=seed) for r in results]
    main = next((r for r in results if r.method == "full"), results[0] if results else None)
    return {
        # 2: per-rule 95% intervals, true positives in the gallery, boxes and image sizes.
        "report_version": 2,
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "dataset": dict(dataset),
        "constitution": dict(constitution),
        "models": list(dict.fromkeys(r.model for r in results)),
        "rules": list(rule_ids),
        "methods": methods,
        "gallery": {
            "method": main.method if main else None,
            "model": main.model if main else None,
            "items": gallery(main, examples, gallery_size) if main else [],
        },
    }


def write_json(report: Mapping[str, Any]) -> str:
    return json.dumps(report, indent=2, sort_keys=False, default=str) + "\n"


# ---- shared by report.md and report.html ---------------------------------------------------


# How every table counts the images a method left open (judge.evaluate.metrics).
COUNTING = (
    "Every image counts: an undecided or unreadable image is a wrong answer; the "
    "fail-closed reading counts it as unsafe instead."
)
RULE_NOTE = (
    "A hit needs the right rule; a rule left undecided on an image counts as a wrong "
    "answer for it. Brackets: 95% Wilson interval (few images per rule: read them)."
)
CONFUSION_NOTE = (
    "Rows: the rule an image truly violates (safe: none); columns: the rules the verdict "
    "named (safe: none; undecided: left open). An image with several rules counts once "
    "per pair."
)


def pct(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.1f}"


def fraction(value: float | None) -> str:
    """A fraction as the paper writes F1: ".866", "1.000"."""
    return "–" if value is None else f"{value:.3f}".lstrip("0") if value < 1 else "1.000"


def pct_sign(value: float | None) -> str:
    """A rate in %, as the methods tables show it: "93.8%"."""
    return "–" if value is None else f"{100 * value:.1f}%"


METHOD_COLUMNS = ["Method", "kind", "model", "Recall", "Accuracy", "Precision", "F1",
                  "fail-closed Recall", "fail-closed Accuracy", "fail-closed F1", "ROC-AUC",
                  "PR-AUC", "undecided", "errors"]


def method_label(method: Mapping[str, Any]) -> str:
    """The method's name, with the reason when it had nothing to ablate."""
    idle = method.get("run", {}).get("method_config", {}).get("nothing_to_ablate")
    return f"{method['method']} ({idle})" if idle else str(method["method"])


def method_rows(report: Mapping[str, Any]) -> list[list[object]]:
    """Per method (`METHOD_COLUMNS`): image-level rates in %, F1 and AUCs as fractions, the
    fail-closed reading, and how many images were undecided or unreadable."""
    rows: list[list[object]] = []
    for m in report["methods"]:
        image, closed = m["image"], m["image"]["fail_closed"]
        rows.append([
            method_label(m), m["kind"], m["model"],
            pct_sign(image["recall"]), pct_sign(image["accuracy"]),
            pct_sign(image["precision"]), fraction(image["f1"]),
            pct_sign(closed["recall"]), pct_sign(closed["accuracy"]), fraction(closed["f1"]),
            fraction(image.get("roc_auc")), fraction(image.get("pr_auc")),
            image["undecided"], image["errors"],
        ])
    return rows


def cell(image: Mapping[str, Any]) -> str:
    """ "R / Acc / F1" as in the paper: recall and accuracy in %, F1 as a fraction."""
    return f"{pct(image['recall'])} / {pct(image['accuracy'])} / {fraction(image['f1'])}"


def with_interval(value: float | None, interval: Sequence[float] | None) -> str:
    """ "66.7% [20.8–93.9]": a rate in %, and its 95% interval when it has one."""
    if value is None:
        return "–"
    if not interval:
        return f"{100 * value:.1f}%"
    return f"{100 * value:.1f}% [{100 * interval[0]:.1f}–{100 * interval[1]:.1f}]"


def per_rule_rows(method: Mapping[str, Any]) -> list[list[object]]:
    """Rule, support, precision, recall, F1, accuracy (rates with intervals), undecided."""
    rows: list[list[object]] = []
    for rule, c in method.get("per_rule", {}).items():
        ci = c.get("ci95", {})
        rows.append(
            [
                rule,
                c["tp"] + c["fn"],
                with_interval(c["precision"], ci.get("precision")),
                with_interval(c["recall"], ci.get("recall")),
                fraction(c["f1"]),
                with_interval(c["accuracy"], ci.get("accuracy")),
                c["undecided"],
            ]
        )
    return rows


def confusion_grid(
    confusion: Mapping[str, Mapping[str, int]], rule_ids: Sequence[str]
) -> tuple[list[str], list[list[object]]]:
    """The rule confusion as (column labels, rows): truth in rows, named rules in columns,
    rules in the constitution's order, then "safe" and "undecided"."""
    named = {p for row in confusion.values() for p in row}
    columns = [r for r in rule_ids if r in named or r in confusion]
    columns += [c for c in ("safe", "undecided") if c in named]
    columns += sorted(named - set(columns))
    truths = [r for r in [*rule_ids, "safe"] if r in confusion]
    truths += sorted(set(confusion) - set(truths))
    rows = [[t, *(confusion[t].get(c, 0) for c in columns)] for t in truths]
    return columns, rows


COST_COLUMNS = ["Method", "model", "calls / image", "tokens / image", "cascade share",
                "s / image", "images / s"]


def cost_rows(report: Mapping[str, Any]) -> list[list[object]]:
    """Per method: calls and tokens per image, cascade share, seconds per image, rate."""
    rows: list[list[object]] = []
    for m in report["methods"]:
        cost = m["cost"]
        rows.append(
            [
                m["method"],
                m["model"],
                ", ".join(f"{k} {v:.2f}" for k, v in cost["calls_per_image"].items()),
                ", ".join(
                    f"{k.removesuffix('_tokens')} {v:.0f}"
                    for k, v in cost.get("tokens_per_image", {}).items()
                ),
                "–" if cost["cascade_share"] is None else f"{100 * cost['cascade_share']:.1f}%",
                "–" if cost["seconds_per_image"] is None else f"{cost['seconds_per_image']:.3f}",
                "–" if cost["images_per_s"] is None else f"{cost['images_per_s']:.2f}",
            ]
        )
    return rows


def main_method(report: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The method the headline, the per-rule tables and the gallery are about."""
    methods = report["methods"]
    return next((m for m in methods if m["method"] == "full"), methods[0] if methods else None)


# ---- progress ----------------------------------------------------------------------------


class EvalProgress:
    """A rich progress bar per method, with ETA and the running accuracy/F1."""

    def __init__(self, *, enabled: bool = True, console: Console | None = None) -> None:
        self.console = console or Console(stderr=True)
        self.progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            TextColumn("{task.fields[running]}"),
            console=self.console,
            disable=not enabled,
        )
        self._records: dict[TaskID, list[Scored]] = {}

    def __enter__(self) -> EvalProgress:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def start(self, label: str, total: int, done: Sequence[Scored] = ()) -> TaskID:
        task = self.progress.add_task(label, total=total, completed=len(done), running="")
        self._records[task] = list(done)
        self._refresh(task)
        return task

    def advance(self, task: TaskID, record: Scored) -> None:
        self._records[task].append(record)
        self.progress.advance(task)
        self._refresh(task)

    def _refresh(self, task: TaskID) -> None:
        counts: Counts = image_counts(self._records[task])
        if counts.n:
            text = f"acc {pct(counts.accuracy)}% F1 {fraction(counts.f1)}"
        else:
            text = ""
        if counts.undecided or counts.errors:
            text += f" undecided {counts.undecided} errors {counts.errors}"
        self.progress.update(task, running=text)
