"""The README's commands and Python example run as written (from the repo root)."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")


def _blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", README, flags=re.S)


def _env() -> dict[str, str]:
    env = dict(os.environ)
    # `.venv/bin/judge` in the README is this interpreter's `judge`.
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return env


def test_fresh_machine_commands_are_the_ones_ci_runs() -> None:
    setup_and_main, tests, matrix = _blocks("bash")[:3]
    assert setup_and_main.startswith("bash scripts/setup.sh && ")
    ci = (ROOT / ".ci" / "run").read_text()
    assert "bash scripts/setup.sh" in ci
    assert tests.strip().replace(".venv/bin/python -m pytest -q", "") == ""
    assert ".venv/bin/python -m pytest -q" in ci
    # The family matrix runs on its own (pyproject's addopts leave it out of the above).
    assert matrix.strip() == ".venv/bin/python -m pytest -q -m matrix"
    assert "python -m pytest -q -m matrix" in ci and "support_matrix.py" in ci


@pytest.mark.slow
def test_main_command(toy_models: object) -> None:
    command = _blocks("bash")[0].strip().removeprefix("bash scripts/setup.sh && ")
    argv = shlex.split(command)
    assert argv[0] == ".venv/bin/judge"
    argv[0] = str(Path(sys.executable).parent / "judge")
    result = subprocess.run(argv, cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=900)
    # The toy images include unsafe ones: exit 1, with a verdict per image.
    assert result.returncode == 1, result.stdout[-2000:] + result.stderr[-2000:]
    assert "unsafe" in result.stdout and "safe" in result.stdout.replace("unsafe", "")


@pytest.mark.slow
def test_python_example(toy_models: object) -> None:
    (code,) = _blocks("python")
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=_env(), capture_output=True, text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    first = result.stdout.splitlines()[0]
    assert first.split()[0] in {"safe", "unsafe", "undecided"}
