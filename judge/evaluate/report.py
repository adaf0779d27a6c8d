"""Reports of an evaluation: report.json (for machines), report.md (the paper's table),
report.html (one self-contained page), and the live progress bar.

The HTML page carries everything inline (styles, SVG charts, thumbnails as data: URIs)
and no script at all; its Content-Security-Policy forbids scripts and remote loads, and
every text on it (file names, rule text, rationales, errors) is HTML-escaped, because all
of those come from data sets, policy authors or model output.
"""

from __future__ import annotations

import base64
import html
import io
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

from judge.engine.verdict import Verdict
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
)

GALLERY_SIZE = 24
_LEFT = ' class="l"'
_ORDER = {"false negative": 0, "wrong rule": 1, "false positive": 2, "undecided": 3, "error": 4}
THUMBNAIL = 160


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
        out["per_rule"] = {r: c.as_dict() for r, c in rule_counts(records, rule_ids).items()}
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
    per_image = {
        k: v / n for k, v in totals.items() if n and k.endswith("tokens")
    }
    return {"backend_totals": totals, "tokens_per_image": per_image}


def _score_lists(records: Iterable[Scored]) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {"safe": [], "unsafe": []}
    for r in records:
        if r.score is not None and r.decided:
            out["unsafe" if r.truth_unsafe else "safe"].append(round(r.score, 6))
    return out


def gallery(
    result: MethodResult, examples: Mapping[str, Example], limit: int = GALLERY_SIZE
) -> list[dict[str, Any]]:
    """The images the method got wrong (or left open), worst kinds first."""
    items = []
    for r in result.records:
        kind = _error_kind(r)
        if kind is None:
            continue
        example = examples[r.id]
        verdict = result.verdicts.get(r.id)
        items.append({
            "id": r.id,
            "file": example.name,
            "kind": kind,
            "truth": example.label,
            "truth_rules": list(example.rules),
            "outcome": r.outcome,
            "violated": sorted(r.predicted_rules),
            "score": r.score,
            "rationale": result.rationales.get(r.id),
            "evidence": _evidence(verdict) if verdict else [],
            "error": verdict.error if verdict else None,
        })
    items.sort(key=lambda i: (_ORDER[str(i["kind"])], str(i["id"])))
    return items[:limit]


def _error_kind(r: Scored) -> str | None:
    if r.outcome == "error":
        return "error"
    if r.outcome == "undecided":
        return "undecided"
    if r.truth_unsafe and not r.predicted_unsafe:
        return "false negative"
    if not r.truth_unsafe and r.predicted_unsafe:
        return "false positive"
    if r.truth_unsafe and r.truth_rules and r.predicted_rules and not (
        r.truth_rules & r.predicted_rules
    ):
        return "wrong rule"
    return None


def _evidence(verdict: Verdict) -> list[str]:
    """One line per judged precondition alternative of the rules that matter."""
    lines = []
    for rule in verdict.rules:
        if rule.outcome == "irrelevant":
            continue
        for pre in rule.preconditions:
            for alt in pre.alternatives:
                if alt.outcome == "skipped":
                    continue
                numbers = ", ".join(
                    f"{name} {value:.2f}"
                    for name, value in (("M", alt.m), ("prior", alt.prior), ("d", alt.d))
                    if value is not None
                )
                lines.append(
                    f"{rule.rule_id} #{pre.index + 1}: {alt.statement!s} -> {alt.outcome} "
                    f"({alt.stage}{'; ' + numbers if numbers else ''})"
                )
        if rule.reason:
            lines.append(f"{rule.rule_id}: {rule.reason}")
    return lines[:12]


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
        "report_version": 1,
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "dataset": dict(dataset),
        "constitution": dict(constitution),
        "models": list(dict.fromkeys(r.model for r in results)),
        "methods": methods,
        "gallery": {
            "method": main.method if main else None,
            "model": main.model if main else None,
            "items": gallery(main, examples, gallery_size) if main else [],
        },
    }


def write_json(report: Mapping[str, Any]) -> str:
    return json.dumps(report, indent=2, sort_keys=False, default=str) + "\n"


# ---- report.md ---------------------------------------------------------------------------


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.1f}"


def _f1(value: float | None) -> str:
    return "–" if value is None else f"{value:.3f}".lstrip("0") if value < 1 else "1.000"


def cell(image: Mapping[str, Any]) -> str:
    """"R / Acc / F1" as in the paper: recall and accuracy in %, F1 as a fraction."""
    return f"{_pct(image['recall'])} / {_pct(image['accuracy'])} / {_f1(image['f1'])}"


# How every table counts the images a method left open (judge.evaluate.metrics).
COUNTING = (
    "Every image counts: an undecided or unreadable image is a wrong answer; the "
    "fail-closed reading counts it as unsafe instead."
)


def _md(text: object) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def write_markdown(report: Mapping[str, Any]) -> str:
    models = report["models"]
    methods: dict[str, dict[str, Any]] = {}
    for m in report["methods"]:
        methods.setdefault(m["method"], {})[m["model"]] = m
    data = report["dataset"]
    lines = [
        f"# Evaluation: {_md(data.get('name'))} ({data.get('images')} images"
        f"{', split ' + _md(data['split']) if data.get('split') else ''})",
        "",
        f"Constitution `{_md(report['constitution'].get('name'))}` "
        f"(lock {report['constitution'].get('lock_hash')}); data set sha256 "
        f"`{str(data.get('sha256'))[:16]}`. Each cell: Recall % / Accuracy % / F1. "
        f"{COUNTING} The last column says how many images were undecided / unreadable.",
        "",
        "| Method | "
        + " | ".join(f"{_md(m)} | {_md(m)} (fail-closed)" for m in models)
        + " | undecided / errors |",
        "|---|" + "---|---|" * len(models) + "---|",
    ]
    for name, by_model in methods.items():
        cells = [
            f"{cell(by_model[m]['image'])} | {cell(by_model[m]['image']['fail_closed'])}"
            if m in by_model
            else "– | –"
            for m in models
        ]
        open_ = ", ".join(
            f"{by_model[m]['image']['undecided']} / {by_model[m]['image']['errors']}"
            for m in models
            if m in by_model
        )
        label = name if name == "full" else f"{name} ({next(iter(by_model.values()))['kind']})"
        lines.append(f"| {_md(label)} | " + " | ".join(cells) + f" | {open_} |")
    for m in report["methods"]:
        if m["method"] != "full":
            continue
        lines += ["", f"## Per rule: full method, {_md(m['model'])}", "",
                  "A rule left undecided on an image counts as a wrong answer for it.", "",
                  "| Rule | support | Precision | Recall | F1 | Accuracy | undecided |",
                  "|---|---|---|---|---|---|---|"]
        for rule, c in m.get("per_rule", {}).items():
            lines.append(
                f"| {_md(rule)} | {c['tp'] + c['fn']} | {_pct(c['precision'])} | "
                f"{_pct(c['recall'])} | {_f1(c['f1'])} | {_pct(c['accuracy'])} | {c['undecided']} |"
            )
        cost = m["cost"]
        calls = ", ".join(f"{k} {v:.2f}" for k, v in cost["calls_per_image"].items())
        share = cost["cascade_share"]
        lines += ["", f"Cost: {calls or 'no'} model calls per image; "
                  f"{'–' if share is None else f'{100 * share:.1f}%'} of preconditions reached "
                  f"the cascade; {cost['wall_s']:.1f} s wall, "
                  f"{(cost['images_per_s'] or 0):.2f} images/s."]
    return "\n".join(lines) + "\n"


# ---- report.html -------------------------------------------------------------------------


def e(value: object) -> str:
    """Escape any text for HTML (element content and quoted attributes alike)."""
    return html.escape("" if value is None else str(value), quote=True)


_CSS = """
body{font:14px/1.45 system-ui,sans-serif;margin:24px;color:#1b1f24;background:#fff}
h1{font-size:22px}h2{font-size:18px;margin-top:28px}
table{border-collapse:collapse;margin:8px 0}td,th{border:1px solid #d0d7de;padding:4px 8px;
text-align:right}th{background:#f3f4f6}td.l,th.l{text-align:left}
.cards{display:flex;gap:12px;flex-wrap:wrap}.card{border:1px solid #d0d7de;border-radius:8px;
padding:10px 14px;min-width:120px}.card b{display:block;font-size:22px}
.gallery{display:grid;grid-template-columns:repeat(auto-fill,minmax(320px,1fr));gap:12px}
.item{border:1px solid #d0d7de;border-radius:8px;padding:8px;display:flex;gap:10px}
.item img{width:120px;height:120px;object-fit:contain;background:#f6f8fa;flex:none}
.item pre{white-space:pre-wrap;font-size:11px;margin:4px 0}.kind{font-weight:600;color:#b42318}
small{color:#57606a}
"""


def _table(head: Sequence[str], rows: Iterable[Sequence[object]], left: int = 1) -> str:
    def row(cells: Sequence[object], tag: str) -> str:
        return "<tr>" + "".join(
            f"<{tag}{_LEFT if i < left else ''}>{e(c)}</{tag}>" for i, c in enumerate(cells)
        ) + "</tr>"

    return "<table>" + row(head, "th") + "".join(row(r, "td") for r in rows) + "</table>"


def histogram_svg(scores: Mapping[str, Sequence[float]], bins: int = 10) -> str:
    """Counts of the unsafe score for safe and unsafe images, as inline SVG bars."""
    width, height, pad = 420, 160, 24
    counts = {
        k: [sum(1 for s in v if min(int(s * bins), bins - 1) == b) for b in range(bins)]
        for k, v in scores.items()
    }
    top = max([1, *(c for v in counts.values() for c in v)])
    bar = (width - 2 * pad) / bins
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
             'role="img" aria-label="score histogram">',
             f'<line x1="{pad}" y1="{height - pad}" x2="{width - pad}" y2="{height - pad}" '
             'stroke="#57606a"/>']
    colours = {"safe": "#2da44e", "unsafe": "#cf222e"}
    for offset, (label, values) in enumerate(counts.items()):
        for b, count in enumerate(values):
            h = (height - 2 * pad) * count / top
            x = pad + b * bar + offset * bar / 2
            parts.append(
                f'<rect x="{x:.1f}" y="{height - pad - h:.1f}" width="{bar / 2 - 1:.1f}" '
                f'height="{h:.1f}" fill="{colours.get(label, "#888")}"><title>{e(label)} '
                f"{b / bins:.1f}-{(b + 1) / bins:.1f}: {count}</title></rect>"
            )
    for tick in (0, 0.5, 1):
        x = pad + tick * (width - 2 * pad)
        parts.append(f'<text x="{x:.0f}" y="{height - 6}" font-size="10" '
                     f'text-anchor="middle">{tick}</text>')
    parts.append(f'<text x="{width - pad}" y="14" font-size="11" text-anchor="end">'
                 '<tspan fill="#2da44e">■ safe</tspan> <tspan fill="#cf222e">■ unsafe</tspan>'
                 "</text></svg>")
    return "".join(parts)


def thumbnail(example: Example, size: int = THUMBNAIL) -> str | None:
    """A small PNG of the image as a data: URI, or None if it cannot be read."""
    from judge.errors import ImageError
    from judge.images import load_image

    try:
        image = load_image(example.source(), image_id=example.id).image.copy()
    except (ImageError, OSError):
        return None
    image.thumbnail((size, size))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _listed(names: Sequence[str]) -> str:
    return f" ({', '.join(names)})" if names else ""


def _fmt(value: float | None, pct: bool = True) -> str:
    if value is None:
        return "–"
    return f"{100 * value:.1f}%" if pct else f"{value:.3f}"


def write_html(
    report: Mapping[str, Any], examples: Mapping[str, Example], rule_text: Mapping[str, str]
) -> str:
    data, policy = report["dataset"], report["constitution"]
    main = next((m for m in report["methods"] if m["method"] == "full"), None)
    main = main or (report["methods"][0] if report["methods"] else None)
    body: list[str] = [
        f"<h1>Evaluation of {e(policy.get('name'))} on {e(data.get('name'))}</h1>",
        f"<p><small>{e(data.get('images'))} images · split {e(data.get('split') or 'all')} · "
        f"data set sha256 {e(str(data.get('sha256'))[:16])} · lock {e(policy.get('lock_hash'))} "
        f"· {e(report.get('created_at'))}</small></p>",
    ]
    if main is not None:
        img = main["image"]
        ci = img["ci95"]
        cards = [("Recall", img["recall"], ci.get("recall")), ("Accuracy", img["accuracy"],
                 ci.get("accuracy")), ("Precision", img["precision"], ci.get("precision")),
                 ("F1", img["f1"], ci.get("f1"))]
        body.append(f"<h2>Headline: {e(main['method'])} on {e(main['model'])}</h2>")
        body.append("<div class=cards>")
        for name, value, interval in cards:
            band = f"95% CI {_fmt(interval[0])}–{_fmt(interval[1])}" if interval else "no CI"
            body.append(
                f"<div class=card>{e(name)}<b>{e(_fmt(value))}</b><small>{e(band)}</small></div>"
            )
        for name, value in (("ROC-AUC", img.get("roc_auc")), ("PR-AUC", img.get("pr_auc"))):
            body.append(f"<div class=card>{e(name)}<b>{e(_fmt(value, pct=False))}</b></div>")
        closed = img["fail_closed"]
        body.append(f"<div class=card>Fail-closed R / Acc / F1<b>{e(cell(closed))}</b>"
                    "<small>undecided read as unsafe</small></div>")
        body.append(f"<div class=card>Undecided / errors<b>{e(img['undecided'])} / "
                    f"{e(img['errors'])}</b><small>of {e(img['n'])} images</small></div></div>")
    body.append(f"<h2>Methods</h2><p><small>{e(COUNTING)}</small></p>")
    body.append(_table(
        ["Method", "kind", "model", "Recall", "Accuracy", "Precision", "F1",
         "fail-closed Recall", "fail-closed Accuracy", "fail-closed F1", "ROC-AUC",
         "undecided", "errors"],
        ([m["method"], m["kind"], m["model"], _fmt(m["image"]["recall"]),
          _fmt(m["image"]["accuracy"]), _fmt(m["image"]["precision"]),
          _fmt(m["image"]["f1"], pct=False), _fmt(m["image"]["fail_closed"]["recall"]),
          _fmt(m["image"]["fail_closed"]["accuracy"]),
          _fmt(m["image"]["fail_closed"]["f1"], pct=False),
          _fmt(m["image"].get("roc_auc"), pct=False),
          m["image"]["undecided"], m["image"]["errors"]] for m in report["methods"]),
        left=3,
    ))
    if main is not None and "per_rule" in main:
        body.append("<h2>Per rule</h2><p><small>A hit needs the right rule; a rule left "
                    "undecided on an image counts as a wrong answer for it.</small></p>")
        body.append(_table(
            ["Rule", "text", "support", "Precision", "Recall", "F1", "Accuracy", "undecided"],
            ([rule, rule_text.get(rule, ""), c["tp"] + c["fn"], _fmt(c["precision"]),
              _fmt(c["recall"]), _fmt(c["f1"], pct=False), _fmt(c["accuracy"]), c["undecided"]]
             for rule, c in main["per_rule"].items()),
            left=2,
        ))
    if main is not None:
        matrix = main["confusion"]
        body.append("<h2>Confusion matrix</h2>")
        body.append(_table(["truth \\ verdict", "safe", "unsafe", "undecided", "error"],
                           ([t, *row.values()] for t, row in matrix.items())))
        body.append("<h2>Unsafe-score histograms</h2><p>")
        for m in report["methods"]:
            if m["scores"]["safe"] or m["scores"]["unsafe"]:
                body.append(f"<figure style='display:inline-block'>{histogram_svg(m['scores'])}"
                            f"<figcaption>{e(m['method'])} · {e(m['model'])}</figcaption></figure>")
        body.append("</p><h2>Cost</h2>")
        body.append(_table(
            ["Method", "model", "calls / image", "tokens / image", "cascade share", "s / image",
             "images / s"],
            ([m["method"], m["model"],
              ", ".join(f"{k} {v:.2f}" for k, v in m["cost"]["calls_per_image"].items()),
              ", ".join(f"{k.removesuffix('_tokens')} {v:.0f}"
                        for k, v in m["cost"].get("tokens_per_image", {}).items()),
              _fmt(m["cost"]["cascade_share"]), _fmt(m["cost"]["seconds_per_image"], pct=False),
              _fmt(m["cost"]["images_per_s"], pct=False)] for m in report["methods"]),
            left=4,
        ))
    items = report["gallery"]["items"]
    body.append(f"<h2>Errors: {e(report['gallery']['method'])} on "
                f"{e(report['gallery']['model'])} ({len(items)} shown)</h2><div class=gallery>")
    for item in items:
        example = examples.get(item["id"])
        uri = thumbnail(example) if example is not None else None
        picture = (
            f"<img alt='{e(item['file'])}' src='{e(uri)}'>" if uri else "<div>(no preview)</div>"
        )
        truth = item["truth"] + _listed(item["truth_rules"])
        said = item["outcome"] + _listed(item["violated"])
        body.append(
            f"<div class=item>{picture}<div><div class=kind>{e(item['kind'])}</div>"
            f"<div><b>{e(item['file'])}</b></div><div>truth: {e(truth)}</div>"
            f"<div>verdict: {e(said)}</div>"
            + (f"<div>rationale: {e(item['rationale'])}</div>" if item["rationale"] else "")
            + (f"<div>error: {e(item['error'])}</div>" if item["error"] else "")
            + (f"<pre>{e(chr(10).join(item['evidence']))}</pre>" if item["evidence"] else "")
            + "</div></div>"
        )
    body.append("</div>")
    csp = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"
    return (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        f"<meta http-equiv=\"Content-Security-Policy\" content=\"{csp}\">"
        f"<title>judge eval: {e(policy.get('name'))} on {e(data.get('name'))}</title>"
        f"<style>{_CSS}</style></head><body>" + "".join(body) + "</body></html>\n"
    )


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
            text = f"acc {_fmt(counts.accuracy)} F1 {_fmt(counts.f1, pct=False)}"
        else:
            text = ""
        if counts.undecided or counts.errors:
            text += f" undecided {counts.undecided} errors {counts.errors}"
        self.progress.update(task, running=text)
