"""`judge test` and `judge diff` end to end: exit codes (0, 1, 2, 3, 8 in judge's order),
the failing case named with its rule and evidence, coverage, JUnit XML, JSON, --check on
the shipped cases files; `judge diff` on a real change, with --on. Fast tests run on a
back end that reads the toy colours from the pixels; the slow ones on the toy models."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from judge.commands.policy_test import exit_code
from judge.constitution import Constitution
from judge.models.registry import register_backend
from tests.test_policy_cases import TOY, TOY_CASES

ROOT = Path(__file__).resolve().parent.parent
register_backend("toy-colours", "tests.test_policy_cases:ToyColours", replace=True)
FAKE = ["--backend", "toy-colours", "--model", "colours", "--relevance", "off",
        "--locator", "off"]


@pytest.fixture(autouse=True)
def _wide(monkeypatch: pytest.MonkeyPatch) -> None:
    # Output is wrapped to the terminal (COLUMNS): wide, so each line is checked whole.
    monkeypatch.setenv("COLUMNS", "400")


def cli(*args: str) -> int:
    from judge.cli import main

    try:
        main(list(args))
    except SystemExit as done:
        return int(done.code or 0)
    return 0


def toy_copy(folder: Path) -> Path:
    """The toy policy and its lock in `folder`, with the cases file's images made absolute
    (so that it can be edited there)."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("toy.yaml", "toy.lock.yaml"):
        shutil.copy(ROOT / "constitutions" / name, folder / name)
    text = TOY_CASES.read_text().replace("../eval", str(ROOT / "eval"))
    (folder / "toy.tests.yaml").write_text(text)
    return folder / "toy.yaml"


def break_one_case(cases: Path) -> None:
    """sample-000013 shows a blue shape alone: expect red-and-blue violated, wrongly."""
    text = cases.read_text()
    before = "    violated:\n      - blue-anywhere\n    not_violated:\n      - red-and-blue\n"
    assert before in text
    cases.write_text(text.replace(
        before, "    violated:\n      - blue-anywhere\n      - red-and-blue\n    not_violated:\n"
    ))


def test_exit_codes_follow_judges_precedence() -> None:
    assert exit_code([]) == 0 and exit_code(["passed"]) == 0
    assert exit_code(["passed", "failed"]) == 1
    assert exit_code(["failed", "undecided"]) == 3
    assert exit_code(["failed", "undecided", "error"]) == 2


def test_the_toy_cases_pass_and_one_wrong_expectation_fails_naming_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    policy = toy_copy(tmp_path / "p")
    store = ["--store", str(tmp_path / "s.sqlite3")]
    assert cli("test", str(policy), *FAKE, *store) == 0
    out = capsys.readouterr().out
    assert "23 cases: 23 passed, 0 failed" in out and "FAIL" not in out
    break_one_case(tmp_path / "p" / "toy.tests.yaml")
    junit, report = tmp_path / "out" / "junit.xml", tmp_path / "r.json"
    assert cli("test", str(policy), *FAKE, *store, "--junit", str(junit)) == 1
    out = capsys.readouterr().out
    assert "FAIL sample-000013 (blue)" in out
    assert "red-and-blue: expected violated, got not violated" in out
    # The evidence that decided it: the first link of the chain was not met.
    assert "precondition 1 not met: 'a red shape' not met (stage: prior): M 0.050" in out
    assert "23 cases: 22 passed, 1 failed" in out
    root = ET.parse(junit).getroot()
    assert root.tag == "testsuites"
    (suite,) = root.iter("testsuite")
    assert (suite.get("tests"), suite.get("failures"), suite.get("errors")) == ("23", "1", "0")
    failed = [c for c in suite.iter("testcase") if c.find("failure") is not None]
    assert [c.get("name") for c in failed] == ["sample-000013 (blue)"]
    assert cli("test", str(policy), *FAKE, *store, "--json") == 1
    document = json.loads(capsys.readouterr().out)
    report.write_text(json.dumps(document))
    assert document["summary"]["failed"] == 1 and document["summary"]["exit_code"] == 1
    (bad,) = [c for c in document["report"]["cases"] if c["status"] != "passed"]
    assert bad["differences"][0]["rule_id"] == "red-and-blue"


def test_coverage_and_min_coverage(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store = ["--store", str(tmp_path / "s.sqlite3")]
    assert cli("test", str(TOY), *FAKE, *store, "--coverage") == 0
    out = capsys.readouterr().out
    assert "coverage: 23 of 24 alternatives (95.8%) seen both Yes and No over 23 cases" in out
    lines = out.splitlines()
    first_rule = next(i for i, line in enumerate(lines) if line.startswith("green-and-yellow"))
    assert first_rule == 1  # the least covered rule first: its yellow link is never Yes
    assert "  2 'a yellow shape': yes 0, no 11, not reached 12" in out
    assert cli("test", str(TOY), *FAKE, *store, "--min-coverage", "95") == 0
    capsys.readouterr()
    assert cli("test", str(TOY), *FAKE, *store, "--min-coverage", "96") == 1
    assert "coverage 95.8% is below --min-coverage 96%" in capsys.readouterr().out


def test_bad_input_is_exit_2_before_any_model(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    policy = toy_copy(tmp_path / "p")
    cases = tmp_path / "p" / "toy.tests.yaml"
    cases.write_text(cases.read_text().replace("- blue-anywhere", "- blue-everywhere", 1))
    # No back end is named: had a model been loaded, this would fail differently.
    assert cli("test", str(policy), "--backend", "no-such-backend") == 2
    err = capsys.readouterr().err
    assert f"{cases}:19:" in err and "no rule 'blue-everywhere'" in err
    assert cli("test", str(policy), "--cases", str(tmp_path / "none.yaml")) == 2
    assert "no such cases file" in capsys.readouterr().err


def test_an_unreadable_image_is_2_an_undecided_case_3(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    policy = toy_copy(tmp_path / "p")
    cases = tmp_path / "p" / "toy.tests.yaml"
    text = cases.read_text()
    cases.write_text(text.replace("sample-000001.png", "missing.png"))
    store = ["--store", str(tmp_path / "s.sqlite3")]
    assert cli("test", str(policy), *FAKE, *store) == 2
    out = capsys.readouterr().out
    assert "ERROR sample-000001 (yellow)" in out and "missing.png: no such file" in out
    assert "22 passed, 0 failed, 0 undecided, 1 unreadable" in out
    # Only unreadable images: nothing to judge, no model loaded (this back end is unknown).
    only = tmp_path / "only.yaml"
    only.write_text("cases:\n  - {image: nowhere.png, expect: safe}\n")
    assert cli("test", str(policy), "--cases", str(only), "--backend", "no-such") == 2
    capsys.readouterr()


def test_a_lock_that_needs_review_is_8(tmp_path: Path) -> None:
    policy = toy_copy(tmp_path / "p")
    lock = tmp_path / "p" / "toy.lock.yaml"
    text = lock.read_text()
    # A chain whose extraction fell back to the rule's text needs review.
    assert "    preconditions: hand-written\n" in text
    lock.write_text(text.replace(
        "    preconditions: hand-written\n", "    preconditions: fallback\n", 1))
    assert Constitution.load(policy).lock_status()[0] == "fresh"
    assert cli("test", str(policy), *FAKE, "--store", str(tmp_path / "s.sqlite3")) == 8


def test_check_validates_the_shipped_cases_files(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli("test", str(TOY), "--check") == 0
    assert "OK   " in capsys.readouterr().out
    moderation = ROOT / "constitutions" / "moderation.yaml"
    assert cli("test", str(moderation), "--check") == 0
    captured = capsys.readouterr()
    assert "7 cases" in captured.out and "not here" in captured.out
    assert "moderation-cases/safe/kitchen-knife-on-board.jpg: no such file" in captured.err


def test_judge_check_reads_a_cases_file_as_the_policy_beside_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from judge.policy import policy_of_cases

    assert policy_of_cases(TOY_CASES) == TOY
    assert policy_of_cases(tmp_path / "lonely.tests.yaml") is None
    assert policy_of_cases(TOY) is None
    # `judge check constitutions/*.yaml` names policies, locks and cases: each policy once.
    assert cli("check", str(TOY_CASES), str(TOY), str(TOY.with_name("toy.lock.yaml"))) == 0
    assert capsys.readouterr().out.count("lock up to date") == 1


def test_schema(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli("test", "--schema") == 0
    assert json.loads(capsys.readouterr().out)["title"] == "judge policy cases"


# ---- judge diff ----------------------------------------------------------------------------


def _changed_toy(folder: Path) -> Path:
    """The toy policy with a real change: red-and-blue also flags green with blue (an added
    alternative), yellow-and-blue needs a red shape too (an added precondition), and
    green-and-yellow is removed; compiled by hand."""
    path = toy_copy(folder)
    text = path.read_text()
    text = text.replace(
        "  - id: red-and-blue\n    text: Images must not show a red shape together with a blue "
        "shape.\n    topic: red or blue shapes\n    category: colour-mix\n    severity: medium\n"
        "    preconditions:\n      - any_of:\n          - a red shape\n",
        "  - id: red-and-blue\n    text: Images must not show a red shape together with a blue "
        "shape.\n    topic: red or blue shapes\n    category: colour-mix\n    severity: medium\n"
        "    preconditions:\n      - any_of:\n          - a red shape\n          - a green shape\n",
    )
    head, sep, _ = text.partition("  - id: green-and-yellow\n")
    assert sep
    text = head.rstrip() + "\n"
    marker = "  - id: red-with-yellow-or-blue\n"
    assert marker in text
    block = (
        "    preconditions:\n      - any_of:\n          - a yellow shape\n        objects:\n"
        "          - yellow shape\n      - any_of:\n          - a blue shape\n        objects:\n"
        "          - blue shape\n"
    )
    start = text.index("  - id: yellow-and-blue\n")
    end = text.index(marker)
    section = text[start:end]
    assert block in section
    section = section.replace(block, block + "      - any_of:\n          - a red shape\n")
    text = text[:start] + section + text[end:]
    path.write_text(text)
    policy = Constitution.load(path)
    policy.compile(None)
    policy.save_lock()
    return path


def test_diff_on_the_toy_set_names_relations_and_flips(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    new = _changed_toy(tmp_path / "new")
    store = ["--store", str(tmp_path / "s.sqlite3")]
    assert cli("diff", str(TOY), str(new)) == 1
    out = capsys.readouterr().out
    assert "2 changed, 0 added, 1 removed, 7 unchanged" in out
    assert "~ red-and-blue: chain stricter" in out
    assert "flagged by the new version only, when exactly these are true: 'a blue shape', " \
           "'a green shape'" in out
    assert "~ yellow-and-blue: chain looser" in out
    assert "- green-and-yellow: removed" in out
    assert cli("diff", str(TOY), str(TOY)) == 0
    capsys.readouterr()
    images = str(ROOT / "eval" / "toy" / "images")
    assert cli("diff", str(TOY), str(new), "--on", images, *FAKE, *store, "--json") == 1
    document = json.loads(capsys.readouterr().out)
    on = document["on"]
    flipped = {rule: sorted(Path(f["image"]).name for f in found)
               for rule, found in on["rules"].items() if found}
    # Green with blue and no red: sample-000000, 000006, 000012 (manifest ground truth);
    # yellow with blue: sample-000022, which has no red.
    assert flipped == {
        "red-and-blue": ["sample-000000.png", "sample-000006.png", "sample-000012.png"],
        "yellow-and-blue": ["sample-000022.png"],
    }
    assert on["outcomes"] == []  # those images were unsafe by other rules already
    calls = on["calls"]
    assert calls["sent"] < calls["asked"] and calls["saved"] == calls["asked"] - calls["sent"]
    # The text form says the same, and what the sharing saved (a fresh store: the priors
    # are asked again).
    store = ["--store", str(tmp_path / "again.sqlite3")]
    assert cli("diff", str(TOY), str(new), "--on", images, *FAKE, *store) == 1
    out = capsys.readouterr().out
    assert "on 24 images: 4 rule verdict(s) change on 4 image(s)" in out
    assert f"model calls: {calls['asked']} asked by the two versions, {calls['sent']} sent" in out


def test_diff_on_a_missing_image_is_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli("diff", str(TOY), str(TOY), "--on", str(tmp_path / "nope.png"), *FAKE) == 2
    assert "no such file" in capsys.readouterr().out


# ---- on the toy models ---------------------------------------------------------------------


def _judge(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "400"}  # each output line whole
    return subprocess.run(
        [sys.executable, "-m", "judge.cli", *args], cwd=ROOT, env=env, capture_output=True,
        text=True, timeout=1800,
    )


@pytest.mark.slow
def test_toy_models_pass_the_shipped_cases_and_fail_one_wrong_expectation(
    toy_models: object, tmp_path: Path
) -> None:
    done = _judge("test", "constitutions/toy.yaml", "--model", "toy", "--coverage")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "23 cases: 23 passed" in done.stdout
    policy = toy_copy(tmp_path / "p")
    break_one_case(tmp_path / "p" / "toy.tests.yaml")
    junit = tmp_path / "junit.xml"
    done = _judge("test", str(policy), "--model", "toy", "--junit", str(junit))
    assert done.returncode == 1, done.stdout[-3000:] + done.stderr[-3000:]
    assert "FAIL sample-000013 (blue)" in done.stdout
    assert "red-and-blue: expected violated, got not violated" in done.stdout
    root = ET.parse(junit).getroot()
    (suite,) = root.iter("testsuite")
    assert suite.get("tests") == "23" and suite.get("failures") == "1"
    failed = [c.get("name") for c in suite.iter("testcase") if c.find("failure") is not None]
    assert failed == ["sample-000013 (blue)"]


SMALL_TOY = """\
name: small-toy
defaults:
  model: toy
rules:
  - id: red-with-blue-or-green
    text: Images must not show a red shape together with a blue or a green shape.
    preconditions:
      - any_of:
          - a red shape
        objects:
          - red shape
      - any_of:
          - a blue shape
          - a green shape
        objects:
          - blue shape
          - green shape
"""


@pytest.mark.slow
def test_toy_models_coverage_matches_a_hand_count(toy_models: object, tmp_path: Path) -> None:
    # Six large-shape scenes from the manifest (colours): 008 red+green+blue, 011 red+green,
    # 018 red, 013 blue, 014 green, 001 yellow. With the relevance scan off, every rule is
    # reached; the chain stops at "a red shape" on the three without red.
    #   precondition 1 'a red shape':   yes 3 (008, 011, 018), no 3
    #   precondition 2 (reached 3):     met 2 (008, 011), not met 1 (018), not reached 3
    #     'a blue shape':  yes 1 (008), no 2 (011, 018)   - 008: both met by the first pass
    #     'a green shape': yes 2 (008, 011), no 1 (018)
    #   rule: violated 2, not violated 4; alternatives both ways: 3 of 3
    policy = tmp_path / "small.yaml"
    policy.write_text(SMALL_TOY)
    compiled = Constitution.load(policy)
    compiled.compile(None)
    compiled.save_lock()
    chosen = ["008", "011", "018", "013", "014", "001"]
    expect = {"008": "unsafe", "011": "unsafe"}
    cases = "cases:\n" + "".join(
        f"  - {{image: {ROOT}/eval/toy/images/sample-000{n}.png, "
        f"expect: {expect.get(n, 'safe')}}}\n"
        for n in chosen
    )
    (tmp_path / "small.tests.yaml").write_text(cases)
    done = _judge("test", str(policy), "--model", "toy", "--relevance", "off", "--json")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    cov = json.loads(done.stdout)["report"]["coverage"]
    (rule,) = cov["rules"]
    assert rule["counts"] == {"yes": 2, "no": 4, "undecided": 0, "not_reached": 0}
    pre1, pre2 = rule["preconditions"]
    assert pre1["alternatives"][0]["counts"] == {"yes": 3, "no": 3, "undecided": 0,
                                                 "not_reached": 0}
    assert pre2["counts"] == {"yes": 2, "no": 1, "undecided": 0, "not_reached": 3}
    blue, green = (a["counts"] for a in pre2["alternatives"])
    assert blue == {"yes": 1, "no": 2, "undecided": 0, "not_reached": 3}
    assert green == {"yes": 2, "no": 1, "undecided": 0, "not_reached": 3}
    assert (cov["alternatives_both_ways"], cov["alternatives"]) == (3, 3)


@pytest.mark.slow
def test_toy_models_diff_on_the_toy_set_saves_calls_and_flips_as_judging_twice(
    toy_models: object, tmp_path: Path
) -> None:
    from judge import Judge
    from judge.policy import diff_on, flips

    new = _changed_toy(tmp_path / "new")
    images = sorted(str(p) for p in (ROOT / "eval" / "toy" / "images").glob("*.png"))
    result = diff_on(TOY, new, images, model="toy", store=tmp_path / "shared.sqlite3")
    verdicts, sent_apart = [], 0
    for policy in (TOY, new):
        with Judge(policy, model="toy", store=tmp_path / "apart.sqlite3") as judge:
            verdicts.append(judge.judge_many(images))
            sent_apart += judge.backend.stats.yes_no_queries + judge.backend.stats.generations
    per_rule, outcomes = flips(*verdicts)
    assert result.rules == per_rule and result.outcomes == outcomes
    # Not `asked == sent_apart`: batched forward passes may tip an uncertain answer.
    assert result.calls.sent < sent_apart
