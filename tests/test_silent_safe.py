"""Issue 24, items 2-4: the engine never says "safe" without saying what it rests on.

* A policy with no enabled rule (or no rule) is refused by `judge check`, by `judge` and by
  the `Judge` API, instead of calling every image safe.
* An image "safe" while a rule had an undecided precondition says so: in the rule's reason
  and the verdict JSON, in the table, and in the summary's count.
* The verdict records each rule's relevance threshold and where it came from.

The CLI runs the scripted back end of tests/test_cli_judge.py in this process.
"""

from __future__ import annotations

import contextlib
import io
import json
import sys
from pathlib import Path
from typing import Any

import pytest

from judge.constitution import Constitution
from judge.engine import Judge, RuleVerdict, image_outcome
from judge.errors import ConstitutionError, InputError
from judge.models.scripted import ScriptedBackend
from tests.test_cli_judge import Result, judge_cli, world  # noqa: F401  (world: the fixture)
from tests.test_engine_api import BLUE, RED, key
from tests.test_engine_decisions import make_lock, rule

ALL_OFF = """\
name: all-off
rules:
  - id: no-red
    text: Images must not show a red shape.
    enabled: false
    preconditions:
      - a red shape
"""

PARTLY = """\
name: partly
rules:
  - id: red-and-odd
    text: Images must not show a red shape together with an odd thing.
    preconditions:
      - an unanswerable thing
      - a red shape
"""


def _cli(world: dict[str, Any], *argv: str) -> Result:  # noqa: F811
    """`judge ARGV` in this process, exactly as given (the scripted back end registered)."""
    sys.path.insert(0, str(world["dir"]))
    try:
        import plugin_scripted_cli  # noqa: F401  (registers the back end)
    finally:
        sys.path.remove(str(world["dir"]))
    from judge.cli import main

    out, err = io.StringIO(), io.StringIO()
    code = 0
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            main(list(argv))
        except SystemExit as done:
            code = int(done.code or 0)
    return Result(code, out.getvalue(), err.getvalue())


def _compiled(tmp_path: Path, text: str, name: str = "policy.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    policy = Constitution.load(path)
    policy.compile(None)
    policy.save_lock()
    return path


# ---- item 2: no enabled rule -------------------------------------------------------------


def test_image_outcome_of_no_rules_is_never_safe() -> None:
    assert image_outcome([]) == ("undecided", [], [])
    irrelevant = RuleVerdict(rule_id="r", outcome="irrelevant")
    assert image_outcome([irrelevant])[0] == "safe"  # the scan decided: nothing to check


def test_check_rejects_a_policy_with_every_rule_disabled(
    world: dict[str, Any],  # noqa: F811
) -> None:
    path = _compiled(world["dir"], ALL_OFF, "all-off.yaml")
    result = _cli(world, "check", str(path))
    assert result.returncode == 2, result.stdout + result.stderr
    assert f"FAIL {path}" in result.stderr and "enabled: false" in result.stderr
    assert "Traceback" not in result.stderr
    ok = _cli(world, "check", str(world["policy"]))
    assert ok.returncode == 0, ok.stderr


def test_judging_with_a_policy_with_every_rule_disabled_is_refused(
    world: dict[str, Any],  # noqa: F811
) -> None:
    path = _compiled(world["dir"], ALL_OFF, "all-off.yaml")
    red = str(world["images"] / "red.png")
    result = judge_cli(world, red, "--constitution", str(path))
    assert result.returncode == 2, result.stdout + result.stderr
    assert str(path) in result.stderr and "enable at least one rule" in result.stderr.lower()
    assert "safe" not in result.stdout


def test_the_api_refuses_no_enabled_rules(tmp_path: Path) -> None:
    off = make_lock(rule("r", "a", enabled=False))
    for lock in (off, make_lock()):
        with pytest.raises(ConstitutionError, match="Enable at least one rule") as raised:
            Judge(lock, backend=ScriptedBackend(), relevance="off", locator="off",
                  store=tmp_path / "s.db")
        assert isinstance(raised.value, InputError)  # exit 2; the service refuses it
    path = _compiled(tmp_path, ALL_OFF, "all-off.yaml")
    with pytest.raises(ConstitutionError, match=r"all-off\.yaml"):
        Judge(path, backend=ScriptedBackend(), relevance="off", locator="off",
              store=tmp_path / "s.db")


def test_the_shipped_constitutions_have_enabled_rules() -> None:
    from judge.constitution.loader import require_enabled_rules

    shipped = sorted(Path("constitutions").glob("*.yaml"))
    shipped = [p for p in shipped if ".lock." not in p.name and ".tests." not in p.name]
    assert shipped
    for path in shipped:
        require_enabled_rules(Constitution.load(path).spec.rules, str(path))


# ---- item 3: safe with an undecided precondition -----------------------------------------


def test_safe_with_an_undecided_precondition_is_said_everywhere(
    world: dict[str, Any],  # noqa: F811
) -> None:
    path = _compiled(world["dir"], PARTLY, "partly.yaml")
    blue, red = str(world["images"] / "blue.png"), str(world["images"] / "red.png")
    result = judge_cli(world, blue, red, "--constitution", str(path), "--json")
    # Blue: "a red shape" not met decides the rule; red: it is met, the other undecided.
    assert result.returncode == 3, result.stderr
    document = json.loads(result.stdout)
    by_name = {Path(v["image_id"]).name: v for v in document["verdicts"]}
    safe = by_name["blue.png"]
    assert safe["outcome"] == "safe" and safe["partly_undecided"] == ["red-and-odd"]
    rule_json = safe["rules"][0]
    assert rule_json["outcome"] == "not_violated" and rule_json["undecided_preconditions"] == [0]
    assert rule_json["reason"].startswith(
        "not violated: precondition 2 not met; undecided: precondition 1: 'an unanswerable thing'"
    )
    assert by_name["red.png"]["outcome"] == "undecided"
    assert by_name["red.png"]["partly_undecided"] == []
    assert document["summary"]["safe_with_undecided_precondition"] == 1
    # The table (no --explain) gives the reason, and the summary line counts the image.
    table = judge_cli(world, blue, "--constitution", str(path))
    assert table.returncode == 0, table.stderr
    said = " ".join(table.stdout.split())
    assert "reason" in table.stdout.splitlines()[0]
    assert "red-and-odd: not violated: precondition 2 not met; undecided" in said
    assert "1 safe (1 with an undecided precondition)" in said


def test_a_plainly_safe_image_has_no_note(world: dict[str, Any]) -> None:  # noqa: F811
    result = judge_cli(world, str(world["images"] / "blue.png"))
    assert result.returncode == 0
    assert "undecided precondition" not in result.stdout
    assert "reason" not in result.stdout.splitlines()[0]


# ---- item 4: the relevance threshold used, and where it came from -------------------------


def _vlm_judge(tmp_path: Path, policy_extra: str = "", **kwargs: Any) -> Judge:
    policy = Constitution.from_yaml(
        "name: p\n"
        + policy_extra
        + "rules:\n  - id: no-red\n    text: No red shapes.\n    topic: red things\n"
        "    preconditions: [a red shape]\n"
    )
    policy.compile(None)
    backend = ScriptedBackend(
        {
            ("a red shape", key(RED)): 0.95,
            ("a red shape", None): 0.5,
            ("topic: red things", key(RED)): 0.45,
            ("topic: red things", key(BLUE)): 0.1,
        }
    )
    return Judge(policy, backend=backend, relevance="vlm", locator="off",
                 store=tmp_path / "s.db", **kwargs)


@pytest.mark.parametrize(
    ("extra", "run", "threshold", "source"),
    [
        ("", None, 0.5, "judge's default"),
        ("defaults:\n  thresholds: {relevance_vlm: 0.4}\n", None, 0.4,
         "the policy's defaults.thresholds"),
        ("defaults:\n  thresholds: {relevance_vlm: 0.4}\n", {"relevance_vlm": 0.3}, 0.3,
         "this run's thresholds"),
    ],
)
def test_the_verdict_records_the_relevance_threshold_and_its_source(
    tmp_path: Path, extra: str, run: dict[str, float] | None, threshold: float, source: str
) -> None:
    with _vlm_judge(tmp_path, extra, thresholds=run) as judge:
        verdict = judge.judge(BLUE)
    data = json.loads(verdict.model_dump_json())
    rule_json = data["rules"][0]
    assert rule_json["outcome"] == "irrelevant"
    assert rule_json["relevance_threshold"] == threshold
    assert rule_json["relevance_threshold_source"] == source


def test_the_cli_summary_takes_the_source_from_the_verdicts(
    world: dict[str, Any],  # noqa: F811
) -> None:
    blue = str(world["images"] / "blue.png")
    result = _cli(
        world, blue, "-c", str(world["policy"]), "--backend", "scripted-cli", "--relevance",
        "vlm", "--locator", "off", "--store", str(world["dir"] / "s.db"), "--json",
    )
    document = json.loads(result.stdout)
    rule_json = document["verdicts"][0]["rules"][0]
    assert rule_json["outcome"] == "irrelevant" and rule_json["relevance_threshold"] == 0.5
    assert rule_json["relevance_threshold_source"] == "judge's default"
    assert document["summary"]["relevance_threshold_source"] == "judge's default"
