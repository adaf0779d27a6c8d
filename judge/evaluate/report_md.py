"""report.md: the evaluation as Markdown, section for section what report.html shows,
without the images (no histograms, no thumbnails; the gallery's evidence as text).

Every text that comes from a data set, a policy or a model is escaped for a table cell
(`|` and line breaks) or set in a code span, so it cannot break the page's structure.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from judge.evaluate.report import (
    CONFUSION_NOTE,
    COST_COLUMNS,
    COUNTING,
    METHOD_COLUMNS,
    RULE_NOTE,
    cell,
    confusion_grid,
    cost_rows,
    fraction,
    main_method,
    method_rows,
    per_rule_rows,
    with_interval,
)


def _md(text: object) -> str:
    """Text for a table cell or a line: no table break, no line break, no raw HTML."""
    out = str(text).replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")
    return out.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _code(text: object) -> str:
    """`text` as a code span, whatever backticks it holds (the fence is longer)."""
    body = str(text).replace("\n", " ")
    fence = "`"
    while fence in body:
        fence += "`"
    return f"{fence} {body} {fence}"


def _table(head: Sequence[str], rows: Iterable[Sequence[object]]) -> list[str]:
    lines = ["| " + " | ".join(_md(h) for h in head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(_md(c) for c in row) + " |" for row in rows]
    return lines


def _paper_table(report: Mapping[str, Any]) -> list[str]:
    models = report["models"]
    methods: dict[str, dict[str, Any]] = {}
    for m in report["methods"]:
        methods.setdefault(m["method"], {})[m["model"]] = m
    head = ["Method", *(h for m in models for h in (m, f"{m} (fail-closed)"))]
    rows = []
    for name, by_model in methods.items():
        cells = [
            c
            for m in models
            for c in (
                (cell(by_model[m]["image"]), cell(by_model[m]["image"]["fail_closed"]))
                if m in by_model
                else ("–", "–")
            )
        ]
        open_ = ", ".join(
            f"{by_model[m]['image']['undecided']} / {by_model[m]['image']['errors']}"
            for m in models
            if m in by_model
        )
        label = name if name == "full" else f"{name} ({next(iter(by_model.values()))['kind']})"
        rows.append([label, *cells, open_])
    return _table([*head, "undecided / errors"], rows)


def _headline(main: Mapping[str, Any]) -> list[str]:
    img, ci = main["image"], main["image"]["ci95"]
    rows = [
        [name, with_interval(img[key], ci.get(key))]
        for name, key in (
            ("Recall", "recall"),
            ("Accuracy", "accuracy"),
            ("Precision", "precision"),
        )
    ]
    f1_ci = ci.get("f1")
    f1 = fraction(img["f1"]) + (f" [{fraction(f1_ci[0])}–{fraction(f1_ci[1])}]" if f1_ci else "")
    rows += [
        ["F1", f1],
        ["ROC-AUC", fraction(img.get("roc_auc"))],
        ["PR-AUC", fraction(img.get("pr_auc"))],
        ["Fail-closed R / Acc / F1", cell(img["fail_closed"])],
        ["Undecided / errors", f"{img['undecided']} / {img['errors']} of {img['n']} images"],
    ]
    return [
        f"## Headline: {_md(main['method'])} on {_md(main['model'])}",
        "",
        "Brackets: 95% bootstrap interval over images.",
        "",
        *_table(["Metric", "Value"], rows),
    ]


def _gallery(report: Mapping[str, Any]) -> list[str]:
    gallery = report["gallery"]
    items = gallery["items"]
    lines = [
        f"## Examples: {_md(gallery['method'])} on {_md(gallery['model'])} ({len(items)} shown)",
        "",
        "Errors first (worst kinds first), then true positives; the evidence of the rules "
        "that decided each image only.",
    ]
    for item in items:
        truth = item["truth"] + (
            f" ({', '.join(item['truth_rules'])})" if item["truth_rules"] else ""
        )
        said = item["outcome"] + (f" ({', '.join(item['violated'])})" if item["violated"] else "")
        lines += ["", f"### {_md(item['kind'])}: {_code(item['file'])}", ""]
        lines.append(f"- truth: {_md(truth)}; verdict: {_md(said)}")
        if item.get("boxes"):
            found = ", ".join(f"{b['label']} {b['confidence']:.2f}" for b in item["boxes"])
            lines.append(f"- located: {_md(found)}")
        if item["rationale"]:
            lines.append(f"- rationale: {_code(item['rationale'])}")
        if item["error"]:
            lines.append(f"- error: {_code(item['error'])}")
        lines += [f"- {_code(line)}" for line in item["evidence"]]
    return lines


def write_markdown(report: Mapping[str, Any]) -> str:
    data = report["dataset"]
    main = main_method(report)
    lines = [
        f"# Evaluation: {_md(data.get('name'))} ({data.get('images')} images"
        f"{', split ' + _md(data['split']) if data.get('split') else ''})",
        "",
        f"Constitution `{_md(report['constitution'].get('name'))}` "
        f"(lock {report['constitution'].get('lock_hash')}); data set sha256 "
        f"`{str(data.get('sha256'))[:16]}`; {report.get('created_at')}.",
        "",
    ]
    if main is not None:
        lines += [*_headline(main), ""]
    lines += [
        "## Methods",
        "",
        f"Each cell: Recall % / Accuracy % / F1. {COUNTING} The last column says how many "
        "images were undecided / unreadable.",
        "",
        *_paper_table(report),
        "",
        *_table(METHOD_COLUMNS, method_rows(report)),
    ]
    if main is not None and "per_rule" in main:
        title = f"## Per rule: {_md(main['method'])}, {_md(main['model'])}"
        lines += ["", title, "", RULE_NOTE, ""]
        lines += _table(
            ["Rule", "support", "Precision", "Recall", "F1", "Accuracy", "undecided"],
            per_rule_rows(main),
        )
        columns, rows = confusion_grid(main.get("rule_confusion", {}), report.get("rules", []))
        if rows:
            lines += ["", "## Rule confusion", "", CONFUSION_NOTE, ""]
            lines += _table(["truth \\ named", *columns], rows)
    if main is not None:
        matrix = main["confusion"]
        lines += ["", "## Confusion matrix", ""]
        lines += _table(
            ["truth \\ verdict", "safe", "unsafe", "undecided", "error"],
            ([t, *row.values()] for t, row in matrix.items()),
        )
    lines += ["", "## Cost", ""]
    lines += _table(
        COST_COLUMNS,
        cost_rows(report),
    )
    lines += ["", *_gallery(report)]
    return "\n".join(lines) + "\n"
