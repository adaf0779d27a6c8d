"""`judge check`, `judge compile` (--check, --no-model, with a registered back end) and
`judge schema`, on the shipped constitutions and on broken ones."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

import judge.commands.constitution  # noqa: F401  (registers the commands)
from judge.commands.app import app
from judge.constitution import Constitution
from judge.errors import ConstitutionError, InputError, LockError, ReviewError
from judge.models.registry import register_backend
from judge.resources import data_dir
from tests.test_constitution_compiler import FakeCompilerModel, chain, score

runner = CliRunner()

SHIPPED = sorted(
    p for p in data_dir("constitutions").glob("*.yaml")
    if not p.name.endswith((".lock.yaml", ".tests.yaml"))  # locks, `judge test` cases
)


def run(*args: str):
    return runner.invoke(app, [str(a) for a in args])


def test_check_passes_on_every_shipped_constitution():
    assert {p.name for p in SHIPPED} >= {"clue.yaml", "moderation.yaml"}
    result = run("check", *SHIPPED)
    assert result.exit_code == 0, result.output
    for path in SHIPPED:
        assert f"OK   {path}:" in result.output
    assert "lock up to date" in result.output and "STALE" not in result.output


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_compile_check_passes_on_every_shipped_constitution(path):
    result = run("compile", path, "--check")
    assert result.exit_code == 0, result.output
    assert "lock up to date" in result.output


def test_check_reports_each_bad_file_and_fails(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: p\nrules:\n  - id: a\n    text: x\n    severity: severe\n")
    result = run("check", bad, SHIPPED[0])
    assert isinstance(result.exception, ConstitutionError)
    assert f"FAIL {bad}:5:15: [rule a] severity: must be one of" in result.output
    assert f"OK   {SHIPPED[0]}" in result.output
    assert "1 of 2 constitution file(s) failed validation" in str(result.exception)


def test_exit_codes_through_the_real_entry_point(tmp_path, capsys):
    from judge.cli import main

    bad = tmp_path / "bad.yaml"
    bad.write_text("name: p\n")
    with pytest.raises(SystemExit) as done:
        main(["check", str(bad)])
    assert done.value.code == 2
    with pytest.raises(SystemExit) as done:
        main(["check", str(SHIPPED[0])])
    assert done.value.code == 0


def copy_shipped(tmp_path: Path, name: str = "moderation") -> Path:
    for file in (f"{name}.yaml", f"{name}.lock.yaml"):
        shutil.copy(data_dir("constitutions") / file, tmp_path / file)
    return tmp_path / f"{name}.yaml"


def test_compile_check_fails_on_a_stale_or_missing_lock(tmp_path):
    source = copy_shipped(tmp_path)
    source.write_text(source.read_text().replace("a handgun is visible", "a pistol is visible"))
    result = run("compile", source, "--check")
    assert isinstance(result.exception, LockError)
    assert f"judge compile {source}" in str(result.exception)
    (tmp_path / "moderation.lock.yaml").unlink()
    result = run("compile", source, "--check")
    assert isinstance(result.exception, LockError)
    assert "has no lock" in str(result.exception)


def test_compile_without_a_model_for_hand_written_chains(tmp_path):
    source = copy_shipped(tmp_path)
    before = (tmp_path / "moderation.lock.yaml").read_text()
    # Unchanged: the lock is rewritten byte for byte, no model needed.
    result = run("compile", source)
    assert result.exit_code == 0, result.output
    assert (tmp_path / "moderation.lock.yaml").read_text() == before
    # A new hand-written rule compiles with --no-model; the others are reused.
    source.write_text(
        source.read_text()
        + (
            "  - id: harm-noose-new\n"
            "    text: The image must not show a noose around a person's neck.\n"
            "    preconditions: [a person is visible, a noose is around the person's neck]\n"
        )
    )
    result = run("compile", source, "--no-model")
    assert result.exit_code == 0, result.output
    assert "1 hand-written without a model, 24 reused" in result.output
    lock = Constitution.load(source).lock
    assert lock.rules[-1].id == "harm-noose-new" and lock.rules[-1].objectiveness is None
    assert lock.rules[-1].produced_by.preconditions == "hand-written"
    assert run("compile", source, "--check").exit_code == 0


def test_compile_needs_a_model_for_rules_without_chains(tmp_path):
    source = tmp_path / "p.yaml"
    source.write_text("name: p\nrules:\n  - id: a\n    text: No knives.\n")
    result = run("compile", source)
    assert isinstance(result.exception, InputError)
    assert "no compiler model" in str(result.exception)


def test_compile_with_a_registered_back_end_reports_fallbacks(tmp_path):
    knives, guns = "No knives are visible.", "No guns are visible."
    made: list[FakeCompilerModel] = []

    def factory(model: str | None = None) -> FakeCompilerModel:
        fake = FakeCompilerModel(
            {
                ("score", knives): [score(9)],
                ("preconditions", knives): [chain(["a knife is visible"], objects=["knife"])],
                ("score", guns): [score(10)],
                ("preconditions", guns): ["nonsense"] * 3,
            }
        )
        made.append(fake)
        return fake

    register_backend("test-fake-compiler", factory, replace=True)
    source = tmp_path / "p.yaml"
    source.write_text(
        f"name: p\nrules:\n  - id: knives\n    text: {knives}\n  - id: guns\n    text: {guns}\n"
    )
    result = run(
        "compile", source, "--backend", "test-fake-compiler", "--model", "m", "--concurrency", "2"
    )
    # The lock is written, but a fallback needs review: a distinct exit code.
    assert isinstance(result.exception, ReviewError), result.output
    assert result.exit_code == 1 and ReviewError.exit_code == 8  # CliRunner: 1 per exception
    assert "2 sent to fake/compiler-1" in result.output
    assert "guns: objectiveness 10, extraction fallback (FALLBACK" in result.output
    assert "1 rule(s) NEED REVIEW:\n  guns: precondition extraction fell back" in result.output
    lock = Constitution.load(source).lock
    assert [r.extraction for r in lock.rules] == ["llm", "fallback"]
    assert [r.produced_by.preconditions for r in lock.rules] == ["fake/compiler-1", "fallback"]
    assert not made[0].unused()
    # Nothing changed: no back end is even created, and the review is still asked for.
    result = run("compile", source, "--backend", "test-fake-compiler", "--model", "m")
    assert isinstance(result.exception, ReviewError) and len(made) == 1


def test_schema_prints_json_schema():
    result = run("schema")
    assert result.exit_code == 0
    body = json.loads(result.output)
    assert body["title"] == "judge constitution"
    assert "anyOf" in body["$defs"]["PreconditionSpec"]
    lock = json.loads(run("schema", "--lock").output)
    assert "source_sha256" in lock["properties"]
