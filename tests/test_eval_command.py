"""`judge eval` and `judge calibrate` end to end on a fake back end (no model needed):
reports, resumption after SIGKILL, --fresh, escaping, no API key stored."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PIL import Image

from judge.constitution import Constitution
from judge.models.registry import register_backend
from tests._eval_fake import PAYLOAD

ROOT = Path(__file__).resolve().parents[1]
register_backend("fake-colour", "tests._eval_fake:ColourBackend", replace=True)

POLICY = """\
name: colours
rules:
  - id: red-things
    text: Images must not show anything red.
    preconditions:
      - a red shape
  - id: blue-things
    text: Images must not show anything blue.
    preconditions:
      - [a blue shape, a blue circle]
  - id: green-things
    text: Images must not show anything green.
    preconditions:
      - a green shape
"""
FILE_PAYLOAD = "<img src=x onerror=alert(2)>.png"
FAKE = ["--backend", "fake-colour", "--relevance", "off", "--locator", "off", "--no-progress"]


def make_policy(folder: Path) -> Path:
    path = folder / "colours.yaml"
    path.write_text(POLICY)
    policy = Constitution.load(path)
    policy.compile(None)  # hand-written preconditions: no model needed
    policy.save_lock()
    return path


def make_set(folder: Path, n: int = 6, splits: bool = False) -> Path:
    """n images cycling red / blue / green (distinct pixels each); red and blue unsafe,
    green labelled safe (the fake model's cascade says "not visible" for green)."""
    (folder / "imgs").mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n):
        colour = ("red", "blue", "green")[i % 3]
        rgb = {"red": (250 - i, 0, 0), "blue": (0, 0, 250 - i), "green": (0, 250 - i, 0)}[colour]
        name = FILE_PAYLOAD if i == 2 else f"{i:03d}-{colour}.png"
        Image.new("RGB", (32 + i, 32), rgb).save(folder / "imgs" / name)
        row: dict[str, object] = {"image": f"imgs/{name}", "label": "safe"}
        if colour != "green":
            row = {**row, "label": "unsafe", "rules": [f"{colour}-things"]}
        if splits:
            row["split"] = "train" if i % 2 == 0 else "test"
        rows.append(row)
    path = folder / "set.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def cli(*args: str) -> int:
    from judge.cli import main

    try:
        main(list(args))
    except SystemExit as done:
        return int(done.code or 0)
    return 0


def test_eval_writes_all_reports_with_baselines_and_ablations(tmp_path: Path) -> None:
    policy, data = make_policy(tmp_path), make_set(tmp_path)
    out = tmp_path / "out"
    code = cli(
        "eval",
        str(data),
        "--constitution",
        str(policy),
        "--out",
        str(out),
        "--baselines",
        "all",
        "--ablations",
        "no-debias,no-cascade,no-preconditions",
        "--bootstrap",
        "50",
        *FAKE,
    )
    assert code == 0
    report = json.loads((out / "report.json").read_text())
    rows = {m["method"]: m for m in report["methods"]}
    assert list(rows) == [
        "full",
        "no-debias",
        "no-cascade",
        "no-preconditions",
        "prior",
        "prior-cot",
        "constitution",
        "constitution-cot",
    ]
    full = rows["full"]["image"]
    assert (full["tp"], full["fp"], full["tn"], full["fn"]) == (4, 0, 2, 0)
    assert rows["full"]["per_rule"]["red-things"]["tp"] == 2
    assert rows["full"]["cost"]["cascade_share"] > 0  # green went to the cascade
    # without the cascade, the two (safe) green images stay undecided: every image counts,
    # an undecided one as a wrong answer, and as unsafe when read fail-closed
    no_cascade = rows["no-cascade"]["image"]
    assert no_cascade["undecided"] == 2 and no_cascade["n"] == 6
    assert (no_cascade["tp"], no_cascade["fp"], no_cascade["tn"], no_cascade["fn"]) == (4, 2, 0, 0)
    assert no_cascade["accuracy"] == pytest.approx(4 / 6)
    assert no_cascade["fail_closed"]["accuracy"] == pytest.approx(4 / 6)
    assert "per_rule" not in rows["prior"]  # a baseline never names a rule
    assert rows["prior"]["image"]["recall"] == 1.0
    log = rows["full"]["run"]
    assert log["lock_hash"] and log["dataset"]["sha256"] and log["prompt_versions"]
    assert "packages" in log and "git_commit" in log
    md = (out / "report.md").read_text()
    assert (
        "| Method | fake-colour-model | fake-colour-model (fail-closed) | undecided / errors |"
        in md
    )
    assert "| full | 100.0 / 100.0 / 1.000 | 100.0 / 100.0 / 1.000 | 0 / 0 |" in md
    assert "| no-cascade (ablation) | 100.0 / 66.7 / .800 | 100.0 / 66.7 / .800 | 2 / 0 |" in md
    assert (out / "judge.sqlite3").exists()


def test_html_report_escapes_rationales_and_file_names(tmp_path: Path) -> None:
    policy, data = make_policy(tmp_path), make_set(tmp_path)
    # Label green unsafe, so green images (and their payload rationale and file name)
    # land in the gallery of errors.
    rows = [json.loads(x) for x in data.read_text().splitlines()]
    for row in rows:
        if "green" in str(row["image"]) or row["image"] == f"imgs/{FILE_PAYLOAD}":
            row.update(label="unsafe", rules=["green-things"])
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "out"
    assert cli("eval", str(data), "-c", str(policy), "-o", str(out), "--bootstrap", "0", *FAKE) == 0
    page = (out / "report.html").read_text()
    assert "<script" not in page.lower() and "onerror=alert" not in page.replace(
        "onerror=alert(2)&gt;", ""
    )
    assert "&lt;script&gt;alert(&#x27;rationale&#x27;)&lt;/script&gt;" in page
    assert "&lt;img src=x onerror=alert(2)&gt;.png" in page
    assert "Content-Security-Policy" in page and "data:image/png;base64," in page
    gallery = json.loads((out / "report.json").read_text())["gallery"]["items"]
    assert any(PAYLOAD in (i["rationale"] or "") for i in gallery)


def _results(store: Path) -> list[tuple[str, str]]:
    with sqlite3.connect(store) as db:
        return db.execute("SELECT example_id, invocation FROM eval_results").fetchall()


def _keys(folder: Path) -> dict[str, str]:
    """example id -> the image key the judge sends with its queries."""
    out = {}
    for path in sorted((folder / "imgs").iterdir()):
        out[f"imgs/{path.name}"] = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
    return out


def _run_eval(args: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    code = (
        "from judge.models.registry import register_backend as r;"
        "r('fake-colour', 'tests._eval_fake:ColourBackend');"
        "from judge.cli import main; main()"
    )
    return subprocess.Popen(
        [sys.executable, "-c", code, *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def test_resume_after_sigkill_loses_nothing_and_judges_nothing_twice(tmp_path: Path) -> None:
    n = 12
    policy, data = make_policy(tmp_path), make_set(tmp_path, n)
    out, calls = tmp_path / "out", tmp_path / "calls.log"
    env = {
        **os.environ,
        "JUDGE_FAKE_CALL_LOG": str(calls),
        "JUDGE_FAKE_DELAY": "0.15",
        "JUDGE_API_KEY": "sk-never-store-me",
    }
    args = [
        "eval",
        str(data),
        "-c",
        str(policy),
        "-o",
        str(out),
        "--concurrency",
        "2",
        "--bootstrap",
        "0",
        "--api-key",
        "sk-never-store-me-either",
        "--server",
        "http://user:hunter2@127.0.0.1:9/v1",
        *FAKE,
    ]
    first = _run_eval(args, env)
    store = out / "judge.sqlite3"
    deadline = time.time() + 60
    while time.time() < deadline:
        if store.exists():
            try:
                if len(_results(store)) >= 3:
                    break
            except sqlite3.OperationalError:
                pass
        time.sleep(0.05)
    first.send_signal(signal.SIGKILL)
    first.wait(10)
    with sqlite3.connect(store) as db:  # the kill left a sound database
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    done_first = {e for e, _ in _results(store)}
    assert 3 <= len(done_first) < n, "the kill should land half-way"
    calls_first = len(calls.read_text().splitlines())

    second = _run_eval(args, env)
    _, err = second.communicate(timeout=120)
    assert second.returncode == 0, err.decode()
    rows = _results(store)
    assert sorted(e for e, _ in rows) == sorted(_keys(tmp_path))  # nothing lost
    assert len(rows) == len({e for e, _ in rows}) == n  # nothing twice
    # Images finished before the kill were not sent to the model again.
    later = calls.read_text().splitlines()[calls_first:]
    keys = _keys(tmp_path)
    asked_again = {k for line in later for k in [line.split()[1]]}
    assert not {keys[e] for e in done_first} & asked_again
    assert {keys[e] for e in set(keys) - done_first} <= asked_again
    # No key anywhere; the server's password stripped.
    for path in (store, out / "report.json", out / "report.md", out / "report.html"):
        blob = path.read_bytes()
        assert b"sk-never-store-me" not in blob and b"hunter2" not in blob
    report = json.loads((out / "report.json").read_text())
    assert report["methods"][0]["run"]["server"] == "http://127.0.0.1:9/v1"
    assert len(report["methods"][0]["run"]["invocations"]) == 2

    # --fresh starts over: every image judged again.
    before = len(calls.read_text().splitlines())
    env["JUDGE_FAKE_DELAY"] = "0"
    fresh = _run_eval([*args, "--fresh"], env)
    assert fresh.wait(120) == 0
    again = {line.split()[1] for line in calls.read_text().splitlines()[before:]}
    assert set(keys.values()) <= again
    assert len(_results(store)) == n


def test_limit_and_split_and_bad_input(tmp_path: Path) -> None:
    policy, data = make_policy(tmp_path), make_set(tmp_path, 6, splits=True)
    out = tmp_path / "out"
    assert (
        cli(
            "eval",
            str(data),
            "-c",
            str(policy),
            "-o",
            str(out),
            "--split",
            "test",
            "--limit",
            "2",
            "--bootstrap",
            "0",
            *FAKE,
        )
        == 0
    )
    report = json.loads((out / "report.json").read_text())
    assert report["dataset"]["images"] == 2 and report["dataset"]["split"] == "test"
    assert (
        cli("eval", str(data), "-c", str(policy), "-o", str(out), "--baselines", "nope", *FAKE) == 2
    )
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"image": "imgs/000-red.png", "label": "unsafe", "rules": ["typo"]}\n')
    assert cli("eval", str(bad), "-c", str(policy), "-o", str(out), *FAKE) == 2


def test_calibrate_writes_the_lock_and_reports_before_after(tmp_path: Path) -> None:
    policy, data = make_policy(tmp_path), make_set(tmp_path, 12, splits=True)
    lock_before = Constitution.load(policy).lock
    assert lock_before.calibration is None
    code = cli(
        "calibrate",
        str(data),
        "-c",
        str(policy),
        "--store",
        str(tmp_path / "s.db"),
        "--backend",
        "fake-colour",
        "--locator",
        "off",
        "--relevance",
        "off",
        "--no-progress",
    )
    assert code == 0
    lock = Constitution.load(policy).lock  # still fresh: calibration does not stale it
    assert lock.calibration is not None
    assert lock.calibration.objective == "f1"
    from judge.evaluate.datasets import load_dataset

    assert lock.calibration.dataset_sha256 == load_dataset(data).sha256
    # red: positives have e = (0.95 - 0.5) / 0.5 = 0.9, negatives -0.9: a cut between them
    a2 = lock.calibration.rules["red-things"].a2_scale
    assert a2 is not None and -0.9 < a2 < 0.9
    assert lock.lock_hash() != lock_before.lock_hash()
