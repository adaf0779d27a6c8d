"""Issue 13, item 6, end to end: every row of `judge eval`'s table counts every image.

The method, an ablation that leaves images undecided, and a baseline run on a set with an
unreadable file. Each row covers all images; the undecided and the unreadable ones are
wrong answers in the headline, unsafe in the fail-closed reading, and counted in sight.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.test_eval_command import FAKE, cli, make_policy, make_set


def test_every_row_counts_every_image_and_shows_the_open_ones(tmp_path: Path) -> None:
    policy, data = make_policy(tmp_path), make_set(tmp_path)
    # One more image that cannot be read, labelled unsafe (red).
    (tmp_path / "imgs" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    row = {"image": "imgs/broken.png", "label": "unsafe", "rules": ["red-things"]}
    data.write_text(data.read_text() + json.dumps(row) + "\n")
    out = tmp_path / "out"
    code = cli("eval", str(data), "--constitution", str(policy), "--out", str(out),
               "--ablations", "no-cascade", "--baselines", "prior", "--bootstrap", "10", *FAKE)
    assert code == 0
    report = json.loads((out / "report.json").read_text())
    rows = {m["method"]: m["image"] for m in report["methods"]}
    assert set(rows) == {"full", "no-cascade", "prior"}
    for image in rows.values():
        assert image["n"] == 7 and image["errors"] == 1
        assert image["fail_closed"]["n"] == 7
    full, lazy = rows["full"], rows["no-cascade"]
    # full: 6 right; the unreadable unsafe image is a miss (fail-closed: a hit).
    assert (full["tp"], full["fp"], full["tn"], full["fn"]) == (4, 0, 2, 1)
    assert full["recall"] == pytest.approx(4 / 5)
    assert full["fail_closed"]["recall"] == 1.0
    # no-cascade: the two safe green images stay undecided: wrong, and unsafe fail-closed.
    assert lazy["undecided"] == 2
    assert (lazy["tp"], lazy["fp"], lazy["tn"], lazy["fn"]) == (4, 2, 0, 1)
    assert lazy["accuracy"] == pytest.approx(4 / 7) and full["accuracy"] == pytest.approx(6 / 7)
    assert (lazy["fail_closed"]["tp"], lazy["fail_closed"]["fp"]) == (5, 2)
    md = (out / "report.md").read_text()
    assert "| no-cascade (ablation) | 80.0 / 57.1 / .727 | 100.0 / 71.4 / .833 | 2 / 1 |" in md
    assert "unreadable image is a wrong answer" in md
    html = (out / "report.html").read_text()
    assert "fail-closed Recall" in html and "of 7 images" in html
    gallery = report["gallery"]["items"]
    assert any(item["kind"] == "error" and item["file"].endswith("broken.png") for item in gallery)
