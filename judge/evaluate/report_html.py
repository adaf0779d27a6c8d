"""report.html: the evaluation as one self-contained page.

The page carries everything inline (styles, SVG charts, thumbnails as data: URIs) and no
script at all; its Content-Security-Policy forbids scripts and remote loads, and every
text on it (file names, rule text, rationales, errors) is HTML-escaped, because all of
those come from data sets, policy authors or model output. The sections are those of
report.md (`report_md`), plus the score histograms and the gallery's thumbnails, on
which the locator's boxes of the deciding evidence are drawn.
"""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from judge.evaluate.datasets import Example
from judge.evaluate.report import (
    CONFUSION_NOTE,
    COST_COLUMNS,
    COUNTING,
    METHOD_COLUMNS,
    RULE_NOTE,
    cell,
    confusion_grid,
    cost_rows,
    main_method,
    method_rows,
    per_rule_rows,
)

THUMBNAIL = 280  # px, the longer side of a gallery picture
BOX_COLOUR = (255, 0, 255)  # magenta: stands out on photos and on the toy's flat colours
_LEFT = ' class="l"'

_CSS = """
body{font:14px/1.45 system-ui,sans-serif;margin:24px;color:#1b1f24;background:#fff}
h1{font-size:22px}h2{font-size:18px;margin-top:28px}
table{border-collapse:collapse;margin:8px 0}td,th{border:1px solid #d0d7de;padding:4px 8px;
text-align:right}th{background:#f3f4f6}td.l,th.l{text-align:left}td.z{color:#8c959f}
.cards{display:flex;gap:12px;flex-wrap:wrap}.card{border:1px solid #d0d7de;border-radius:8px;
padding:10px 14px;min-width:120px}.card b{display:block;font-size:22px}
.gallery{display:grid;grid-template-columns:repeat(auto-fill,minmax(560px,1fr));gap:12px}
.item{border:1px solid #d0d7de;border-radius:8px;padding:8px;display:flex;gap:12px}
.item img{width:280px;height:280px;object-fit:contain;background:#f6f8fa;flex:none}
.item pre{white-space:pre-wrap;font-size:11px;margin:4px 0}.kind{font-weight:600;color:#b42318}
.kind.ok{color:#1a7f37}small{color:#57606a}
"""


def e(value: object) -> str:
    """Escape any text for HTML (element content and quoted attributes alike)."""
    return html.escape("" if value is None else str(value), quote=True)


def _table(
    head: Sequence[str], rows: Iterable[Sequence[object]], left: int = 1, cls: str = ""
) -> str:
    def row(cells: Sequence[object], tag: str) -> str:
        return (
            "<tr>"
            + "".join(
                f"<{tag}{_LEFT if i < left else ''}>{e(c)}</{tag}>" for i, c in enumerate(cells)
            )
            + "</tr>"
        )

    opening = f"<table class={cls}>" if cls else "<table>"
    return opening + row(head, "th") + "".join(row(r, "td") for r in rows) + "</table>"


def _fmt(value: float | None, pct: bool = True) -> str:
    if value is None:
        return "–"
    return f"{100 * value:.1f}%" if pct else f"{value:.3f}"


def histogram_svg(scores: Mapping[str, Sequence[float]], bins: int = 10) -> str:
    """Counts of the unsafe score for safe and unsafe images, as inline SVG bars."""
    width, height, pad = 420, 160, 24
    counts = {
        k: [sum(1 for s in v if min(int(s * bins), bins - 1) == b) for b in range(bins)]
        for k, v in scores.items()
    }
    top = max([1, *(c for v in counts.values() for c in v)])
    bar = (width - 2 * pad) / bins
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        'role="img" aria-label="score histogram">',
        f'<line x1="{pad}" y1="{height - pad}" x2="{width - pad}" y2="{height - pad}" '
        'stroke="#57606a"/>',
    ]
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
        parts.append(
            f'<text x="{x:.0f}" y="{height - 6}" font-size="10" text-anchor="middle">{tick}</text>'
        )
    parts.append(
        f'<text x="{width - pad}" y="14" font-size="11" text-anchor="end">'
        '<tspan fill="#2da44e">■ safe</tspan> <tspan fill="#cf222e">■ unsafe</tspan>'
        "</text></svg>"
    )
    return "".join(parts)


def thumbnail(
    example: Example,
    size: int = THUMBNAIL,
    boxes: Sequence[Mapping[str, Any]] = (),
    box_space: Sequence[int] | None = None,
) -> str | None:
    """A PNG of the image, at most `size` px a side, as a data: URI, with `boxes` drawn
    (given in an image of `box_space` (width, height), the pixels the model saw; None:
    the image's own size); None if the image cannot be read."""
    from PIL import ImageDraw

    from judge.errors import ImageError
    from judge.images import load_image

    try:
        image = load_image(example.source(), image_id=example.id).image.convert("RGB")
    except (ImageError, OSError):
        return None
    space = tuple(box_space) if box_space else image.size
    image.thumbnail((size, size))
    if boxes:
        scale = image.width / max(1, space[0])
        draw = ImageDraw.Draw(image)
        line = max(2, round(image.width / 120))
        for box in boxes:
            corners = [box["x0"], box["y0"], box["x1"], box["y1"]]
            x0, y0, x1, y1 = (round(v * scale) for v in corners)
            draw.rectangle((x0, y0, max(x0, x1), max(y0, y1)), outline=BOX_COLOUR, width=line)
            label = f"{box['label']} {box['confidence']:.2f}"
            draw.text((x0 + line + 1, y0 + line), label, fill=BOX_COLOUR)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _listed(names: Sequence[str]) -> str:
    return f" ({', '.join(names)})" if names else ""


def _headline(main: Mapping[str, Any]) -> list[str]:
    img, ci = main["image"], main["image"]["ci95"]
    cards = [
        ("Recall", img["recall"], ci.get("recall")),
        ("Accuracy", img["accuracy"], ci.get("accuracy")),
        ("Precision", img["precision"], ci.get("precision")),
        ("F1", img["f1"], ci.get("f1")),
    ]
    body = [f"<h2>Headline: {e(main['method'])} on {e(main['model'])}</h2>", "<div class=cards>"]
    for name, value, interval in cards:
        band = f"95% CI {_fmt(interval[0])}–{_fmt(interval[1])}" if interval else "no CI"
        body.append(
            f"<div class=card>{e(name)}<b>{e(_fmt(value))}</b><small>{e(band)}</small></div>"
        )
    for name, value in (("ROC-AUC", img.get("roc_auc")), ("PR-AUC", img.get("pr_auc"))):
        body.append(f"<div class=card>{e(name)}<b>{e(_fmt(value, pct=False))}</b></div>")
    body.append(
        f"<div class=card>Fail-closed R / Acc / F1<b>{e(cell(img['fail_closed']))}</b>"
        "<small>undecided read as unsafe</small></div>"
    )
    body.append(
        f"<div class=card>Undecided / errors<b>{e(img['undecided'])} / "
        f"{e(img['errors'])}</b><small>of {e(img['n'])} images</small></div></div>"
    )
    return body


def _methods(report: Mapping[str, Any]) -> str:
    return _table(METHOD_COLUMNS, method_rows(report), left=3)


def _per_rule(
    report: Mapping[str, Any], main: Mapping[str, Any], rule_text: Mapping[str, str]
) -> list[str]:
    rows = [[row[0], rule_text.get(str(row[0]), ""), *row[1:]] for row in per_rule_rows(main)]
    body = [
        f"<h2>Per rule</h2><p><small>{e(RULE_NOTE)}</small></p>",
        _table(
            [
                "Rule",
                "text",
                "support",
                "Precision [95% CI]",
                "Recall [95% CI]",
                "F1",
                "Accuracy [95% CI]",
                "undecided",
            ],
            rows,
            left=2,
            cls="rules",
        ),
    ]
    columns, grid = confusion_grid(main.get("rule_confusion", {}), report.get("rules", []))
    if grid:
        body.append(f"<h2>Rule confusion</h2><p><small>{e(CONFUSION_NOTE)}</small></p>")
        body.append(_table(["truth \\ named", *columns], grid, cls="rule-confusion"))
    return body


def _gallery(report: Mapping[str, Any], examples: Mapping[str, Example]) -> list[str]:
    items = report["gallery"]["items"]
    body = [
        f"<h2>Examples: {e(report['gallery']['method'])} on "
        f"{e(report['gallery']['model'])} ({len(items)} shown)</h2><p><small>Errors "
        "first (worst kinds first), then true positives; the evidence of the rules that "
        "decided each image only, with the locator's boxes of that evidence drawn in "
        "magenta.</small></p><div class=gallery>"
    ]
    for item in items:
        example = examples.get(item["id"])
        boxes = item.get("boxes") or []
        uri = (
            thumbnail(example, boxes=boxes, box_space=item.get("image_size"))
            if (example is not None)
            else None
        )
        picture = (
            f"<img alt='{e(item['file'])}' src='{e(uri)}'>" if uri else "<div>(no preview)</div>"
        )
        ok = " ok" if item["kind"] == "true positive" else ""
        truth = item["truth"] + _listed(item["truth_rules"])
        said = item["outcome"] + _listed(item["violated"])
        located = ", ".join(f"{b['label']} {b['confidence']:.2f}" for b in boxes)
        body.append(
            f"<div class=item>{picture}<div><div class='kind{ok}'>{e(item['kind'])}</div>"
            f"<div><b>{e(item['file'])}</b></div><div>truth: {e(truth)}</div>"
            f"<div>verdict: {e(said)}</div>"
            + (f"<div>located: {e(located)}</div>" if located else "")
            + (f"<div>rationale: {e(item['rationale'])}</div>" if item["rationale"] else "")
            + (f"<div>error: {e(item['error'])}</div>" if item["error"] else "")
            + (f"<pre>{e(chr(10).join(item['evidence']))}</pre>" if item["evidence"] else "")
            + "</div></div>"
        )
    body.append("</div>")
    return body


def write_html(
    report: Mapping[str, Any], examples: Mapping[str, Example], rule_text: Mapping[str, str]
) -> str:
    data, policy = report["dataset"], report["constitution"]
    main = main_method(report)
    body: list[str] = [
        f"<h1>Evaluation of {e(policy.get('name'))} on {e(data.get('name'))}</h1>",
        f"<p><small>{e(data.get('images'))} images · split {e(data.get('split') or 'all')} · "
        f"data set sha256 {e(str(data.get('sha256'))[:16])} · lock {e(policy.get('lock_hash'))} "
        f"· {e(report.get('created_at'))}</small></p>",
    ]
    if main is not None:
        body += _headline(main)
    body.append(f"<h2>Methods</h2><p><small>{e(COUNTING)}</small></p>")
    body.append(_methods(report))
    if main is not None and "per_rule" in main:
        body += _per_rule(report, main, rule_text)
    if main is not None:
        body.append("<h2>Confusion matrix</h2>")
        body.append(
            _table(
                ["truth \\ verdict", "safe", "unsafe", "undecided", "error"],
                ([t, *row.values()] for t, row in main["confusion"].items()),
            )
        )
        body.append("<h2>Unsafe-score histograms</h2><p>")
        for m in report["methods"]:
            if m["scores"]["safe"] or m["scores"]["unsafe"]:
                body.append(
                    f"<figure style='display:inline-block'>{histogram_svg(m['scores'])}"
                    f"<figcaption>{e(m['method'])} · {e(m['model'])}</figcaption></figure>"
                )
        body.append("</p><h2>Cost</h2>")
        body.append(
            _table(
                COST_COLUMNS,
                cost_rows(report),
                left=4,
            )
        )
    body += _gallery(report, examples)
    csp = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"
    return (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        f'<meta http-equiv="Content-Security-Policy" content="{csp}">'
        f"<title>judge eval: {e(policy.get('name'))} on {e(data.get('name'))}</title>"
        f"<style>{_CSS}</style></head><body>" + "".join(body) + "</body></html>\n"
    )
