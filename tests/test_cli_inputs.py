"""Issue 12, finding 6: inputs are checked before models load, unreadable files are
counted apart from images, and no run with an unjudged file reads as complete.

Exit-code precedence (judge/commands/judge_cmd.py): 2 a file could not be read, then 3 an
image is undecided, then 1 an image is unsafe, else 0.
"""

from __future__ import annotations

import itertools
import json
from typing import Any

import pytest

from judge.commands.judge_cmd import EXIT_PRECEDENCE, exit_code
from judge.engine.verdict import Verdict
from tests.test_cli_judge import judge_cli, world  # noqa: F401  (the fixture)

CODE = {"safe": 0, "unsafe": 1, "error": 2, "undecided": 3}


def test_an_unreadable_file_next_to_an_unsafe_image_is_not_a_complete_run(
    world: dict[str, Any],  # noqa: F811
) -> None:
    red, missing = str(world["images"] / "red.png"), str(world["dir"] / "missing.png")
    result = judge_cli(world, red, missing)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "1 image judged: 0 safe, 1 unsafe, 0 undecided" in result.stdout
    assert "1 unreadable file(s) NOT judged" in result.stdout
    document = json.loads(judge_cli(world, red, missing, "--json").stdout)
    summary = document["summary"]
    assert (summary["files"], summary["images"], summary["unreadable"]) == (2, 1, 1)
    assert summary["exit_code"] == 2


def test_inputs_are_checked_before_any_model_loads(world: dict[str, Any]) -> None:  # noqa: F811
    missing = str(world["dir"] / "missing.png")
    notes = str(world["images"] / "notes.txt")
    # A model that cannot load: were it loaded first, this would fail on the model.
    result = judge_cli(world, missing, notes, "--model", "/no/such/model-folder")
    assert result.returncode == 2, result.stdout + result.stderr
    shown = " ".join(result.stdout.split())  # the table wraps its cells at spaces
    assert "no such file" in shown and "not a raster image" in shown
    assert "model" not in result.stderr
    assert "0 images judged" in shown and "2 unreadable file(s)" in shown


def _verdict(outcome: str) -> Verdict:
    return Verdict(image_id=outcome, outcome=outcome)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "outcomes",
    [
        combo
        for n in (1, 2, 3, 4)
        for combo in itertools.combinations(["safe", "unsafe", "error", "undecided"], n)
    ],
)
def test_exit_code_precedence(outcomes: tuple[str, ...]) -> None:
    code = exit_code([_verdict(o) for o in outcomes])
    # The documented order: unreadable, undecided, unsafe, safe.
    expected = next((c for o, c in EXIT_PRECEDENCE if o in outcomes), 0)
    assert code == expected
    assert [o for o, _ in EXIT_PRECEDENCE] == ["error", "undecided", "unsafe"]
    if {"error", "undecided"} & set(outcomes):
        assert code not in (0, 1), "a run with an unjudged file must not read as complete"
    else:
        assert code == max(CODE[o] for o in outcomes)
