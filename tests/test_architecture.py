"""The import arrows of judge/, held by a test (docs/architecture.md, "The rules").

Every import in every module counts, those inside functions and under TYPE_CHECKING too:
a lazy import is still an arrow, and a cycle through one is still a cycle.

* models, vision, store, constitution and video sit below the engine: they never import it;
* the engine never imports the commands, the CLI, bench or the toy package;
* only the CLI imports the commands: no other package (batch, serve, evaluate, ...) does,
  so what a command and a library share lives outside judge/commands/;
* bench asks its questions through judge.queries, never by rendering prompts itself;
* no module imports a private name (a module or name with a leading underscore) of
  another package: what a package offers the others is its public surface.
"""

from __future__ import annotations

import ast
import subprocess
import tarfile
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# package -> the packages it must never import
FORBIDDEN = {
    "models": {"engine"},
    "vision": {"engine"},
    "store": {"engine"},
    "constitution": {"engine"},
    "video": {"engine"},
    "engine": {"commands", "cli", "bench", "toy"},
    "bench": {"prompts"},
}
# The packages that may import the commands: the commands themselves and the CLI.
COMMAND_USERS = {"commands", "cli"}


@dataclass(frozen=True)
class Arrow:
    """`source` (a module path under judge/) imports `target` (a dotted module), line `line`;
    `names` are the names it takes from it (empty for `import x`)."""

    source: str
    line: int
    target: str
    names: tuple[str, ...]


def _module_of(path: Path, root: Path) -> list[str]:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return parts[:-1] if parts[-1] == "__init__" else parts


def arrows(root: Path) -> list[Arrow]:
    """Every import of a judge module found under `root` (the folder holding judge/)."""
    out: list[Arrow] = []
    for path in sorted((root / "judge").rglob("*.py")):
        module = _module_of(path, root)
        package = module if path.name == "__init__.py" else module[:-1]
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        where = str(path.relative_to(root))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name.split(".")[0] == "judge":
                        out.append(Arrow(where, node.lineno, alias.name, ()))
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package[: len(package) - node.level + 1]
                    target = ".".join([*base, *([node.module] if node.module else [])])
                else:
                    target = node.module or ""
                if target.split(".")[0] == "judge":
                    names = tuple(a.name for a in node.names)
                    out.append(Arrow(where, node.lineno, target, names))
    return out


def _package(dotted: str) -> str:
    """The judge package a dotted module belongs to: "judge.engine.judge" -> "engine",
    "judge.store" -> "store", "judge" -> ""."""
    parts = dotted.split(".")
    return parts[1] if len(parts) > 1 else ""


def _source_package(source: str) -> str:
    return _package(source.removesuffix(".py").replace("/", "."))


def _private(part: str) -> bool:
    return part.startswith("_") and not (part.startswith("__") and part.endswith("__"))


def violations(root: Path) -> list[str]:
    """What breaks the arrows, as "file:line: why"."""
    problems: list[str] = []
    for arrow in arrows(root):
        mine, theirs = _source_package(arrow.source), _package(arrow.target)
        here = f"{arrow.source}:{arrow.line}"
        forbidden = FORBIDDEN.get(mine, set()) | (
            set() if mine in COMMAND_USERS else {"commands", "cli"}
        )
        if theirs in forbidden:
            problems.append(f"{here}: {mine} imports {arrow.target} ({theirs})")
        for name in arrow.names:
            # `from judge.engine import procedure` names a module: read it as one.
            full = f"{arrow.target}.{name}"
            if _package(full) in forbidden and theirs == "":
                problems.append(f"{here}: {mine} imports {full}")
        if mine == theirs or theirs == "":
            continue
        private = [p for p in arrow.target.split(".")[2:] if _private(p)]
        private += [n for n in arrow.names if _private(n)]
        if private:
            problems.append(f"{here}: imports private {', '.join(private)} of {arrow.target}")
    return problems


def test_the_import_arrows_hold() -> None:
    problems = violations(ROOT)
    assert not problems, "\n".join(problems)


def test_the_checker_sees_what_it_must(tmp_path: Path) -> None:
    """A planted breach of each kind is found, in a function body and relative form too."""
    package = tmp_path / "judge"
    for folder in ("vision", "engine", "models", "batch", "bench"):
        (package / folder).mkdir(parents=True)
        (package / folder / "__init__.py").write_text("")
    (package / "__init__.py").write_text("")
    (package / "vision" / "boxes.py").write_text(
        "def f():\n    from judge.engine.verdict import Box\n"
    )
    (package / "engine" / "run.py").write_text("from ..toy import world\nimport judge.cli\n")
    (package / "engine" / "peek.py").write_text(
        "from judge.models._secret import read\nfrom judge.models.base import _hidden\n"
    )
    (package / "models" / "ok.py").write_text("from judge.models._secret import read\n")
    (package / "batch" / "inputs.py").write_text(
        "def f():\n    from judge.commands.judge_cmd import expand_inputs\n"
    )
    (package / "bench" / "run.py").write_text("from judge import prompts\n")
    found = "\n".join(violations(tmp_path))
    assert "judge/vision/boxes.py:2: vision imports judge.engine.verdict" in found
    assert "judge/engine/run.py:1: engine imports judge.toy" in found
    assert "judge/engine/run.py:2: engine imports judge.cli" in found
    assert "private _secret of judge.models._secret" in found
    assert "private _hidden of judge.models.base" in found
    assert "models/ok.py" not in found  # a package's own private modules are its own
    assert "judge/batch/inputs.py:2: batch imports judge.commands.judge_cmd" in found
    assert "judge/bench/run.py:1: bench imports judge.prompts" in found


def test_the_checker_fails_on_the_tree_before_issue_17(tmp_path: Path) -> None:
    """The commit before the arrows were fixed breaks them (so this test means something)."""
    before = "7037fa7"
    try:
        data = subprocess.run(
            ["git", "-C", str(ROOT), "archive", before, "judge"],
            check=True,
            capture_output=True,
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("no git history here")
    archive = tmp_path / "before.tar"
    archive.write_bytes(data)
    with tarfile.open(archive) as tar:
        tar.extractall(tmp_path, filter="data")
    found = "\n".join(violations(tmp_path))
    assert "judge/vision/locator.py" in found and "vision imports judge.engine" in found
