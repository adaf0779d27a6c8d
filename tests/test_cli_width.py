"""What `judge` prints fits the terminal: under an 80-column pseudo-terminal no line of the
verdict table, of `--explain` or of any `--help` is wider than 80 characters; in a pipe,
the output is plain text as wide as COLUMNS says.

The model is the scripted back end of tests/test_cli_judge.py (red meets "a red shape",
grey gets a missing answer), so these tests need no model weights.
"""

from __future__ import annotations

import fcntl
import io
import os
import pty
import re
import select
import struct
import subprocess
import sys
import termios
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from tests.test_cli_judge import _args, judge_cli
from tests.test_cli_judge import world as world

ANSI = re.compile(r"\x1b(\[[0-?]*[ -/]*[@-~]|\][^\x07]*\x07|[@-Z\\-_])")
COLUMNS = 80
RUN = (
    "import sys; sys.path.insert(0, sys.argv[1]); import plugin_scripted_cli; "
    "from judge.cli import main; main(sys.argv[2:])"
)


def in_pty(argv: list[str], cwd: Path, columns: int = COLUMNS) -> tuple[int, str]:
    """Run `argv` with stdout and stderr on a pseudo-terminal of `columns` columns; the
    exit code and everything it wrote."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 50, columns, 0, 0))
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES", "NO_COLOR")}
    env["TERM"] = "xterm-256color"
    child = subprocess.Popen(
        argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=slave, stderr=slave
    )
    os.close(slave)
    chunks: list[bytes] = []
    while True:
        ready, _, _ = select.select([master], [], [], 60)
        if not ready:
            child.kill()
            raise AssertionError("no output for 60 s")
        try:
            data = os.read(master, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    os.close(master)
    return child.wait(timeout=60), b"".join(chunks).decode("utf-8", "replace")


def visible_lines(output: str) -> list[str]:
    """The lines as a terminal shows them: escape sequences dropped, split at line ends
    and carriage returns."""
    return re.split(r"\r\n|\n|\r", ANSI.sub("", output))


def too_wide(output: str, columns: int = COLUMNS) -> list[str]:
    return [line for line in visible_lines(output) if len(line) > columns]


def judge_argv(world: dict[str, Any], *args: str) -> list[str]:
    return [sys.executable, "-c", RUN, str(world["dir"]), *_args(world, args)]


@pytest.fixture
def deep(world: dict[str, Any]) -> dict[str, Any]:
    """The world plus an image with a long name in deeply nested folders."""
    folder = world["images"] / "a" / "rather" / "deeply" / "nested" / "folder" / "of" / "scans"
    folder.mkdir(parents=True)
    name = "an_image_with_a_really_remarkably_long_file_name_0001.png"
    Image.new("RGB", (40, 30), (220, 30, 30)).save(folder / name)
    return world


def test_the_table_and_explain_fit_80_columns(deep: dict[str, Any]) -> None:
    code, output = in_pty(judge_argv(deep, str(deep["images"]), "--explain"), deep["dir"])
    assert code == 3, output  # grey is undecided
    assert not too_wide(output), "\n".join(too_wide(output))
    assert "\x1b[" in output  # a terminal gets colours
    for line in visible_lines(output):
        # Rule ids are never broken: "no-red" is whole wherever it appears.
        assert not re.search(r"\bno-?r?e?$", line) or line.rstrip().endswith("no-red"), line
    # The long path keeps its file name, shortened from the middle.
    assert "…/" in ANSI.sub("", output) or "…" in ANSI.sub("", output)


def test_an_undecided_image_says_why_in_the_table(world: dict[str, Any]) -> None:
    result = judge_cli(world, str(world["images"] / "grey.png"), str(world["images"] / "red.png"))
    assert result.returncode == 3
    assert "reason" in result.stdout.splitlines()[0]
    assert "HTTP 500 from the test server" in " ".join(result.stdout.split())
    # A column empty for every image is left out.
    blue = judge_cli(world, str(world["images"] / "blue.png"))
    assert "undecided" not in blue.stdout.splitlines()[0] and "violated" not in blue.stdout


def all_commands() -> list[list[str]]:
    """Every command and sub-command `judge` has, as the words that name it."""
    import typer

    from judge.cli import _load_commands
    from judge.commands.app import app

    _load_commands()
    out: list[list[str]] = []

    def walk(group: Any, words: list[str]) -> None:
        for name, command in getattr(group, "commands", {}).items():
            out.append([*words, name])
            walk(command, [*words, name])

    walk(typer.main.get_command(app), [])
    return out


def test_help_fits_80_columns_and_cuts_nothing(world: dict[str, Any]) -> None:
    commands = [[], *all_commands()]
    assert ["run"] in commands and ["toy", "build"] in commands
    for command in commands:
        argv = [sys.executable, "-c", RUN, str(world["dir"]), *command, "--help"]
        code, output = in_pty(argv, world["dir"])
        assert code == 0, output
        assert not too_wide(output), (command, too_wide(output))
        text = ANSI.sub("", output)
        cut = [
            line
            for line in visible_lines(output)
            if "…" in line or (line.rstrip().endswith("...") and "Usage:" not in line)
        ]
        assert not cut, (command, cut)  # nothing cut off
        # Names are never split at a hyphen at the end of a line.
        assert not re.search(r"\w-\r?\n", text), (command, text)
    code, output = in_pty(
        [*judge_argv(world, "eval", "--help")[:4], "eval", "--help"], world["dir"]
    )
    text = " ".join(ANSI.sub("", output).split())
    for name in ("prior-cot", "constitution-cot", "no-preconditions", "fill-black"):
        assert name in text


def test_a_pipe_gets_plain_text_as_wide_as_columns(deep: dict[str, Any]) -> None:
    env = {**os.environ, "COLUMNS": "60"}
    env.pop("FORCE_COLOR", None)
    result = subprocess.run(
        judge_argv(deep, str(deep["images"]), "--explain"),
        cwd=deep["dir"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 3, result.stderr
    assert "\x1b[" not in result.stdout
    wide = [line for line in result.stdout.splitlines() if len(line) > 60]
    assert not wide, "\n".join(wide)


def test_the_explain_tree_reads_as_a_tree(world: dict[str, Any]) -> None:
    result = judge_cli(world, str(world["images"] / "red.png"), "--explain")
    assert result.returncode == 1
    out = result.stdout
    assert "no-red violated" in out
    assert "met by d: 'a red shape'" in out
    assert "M 0.950 - prior 0.500 = d +0.450 > a2 +0.400" in out
    assert "M = P(Yes), prior = M without image" in out  # the legend, once
    assert out.count("M = P(Yes)") == 1


@pytest.mark.slow
def test_explain_for_two_toy_images_is_short_and_fits(toy_models: Any, tmp_path: Path) -> None:
    """The toy constitution's 10 rules on two toy images: a tree well under 150 lines (the
    old evidence table took over 1,400 at 80 columns), every line within 80."""
    root = Path(__file__).resolve().parents[1]
    images = [str(root / "eval/toy/images" / f"sample-00000{i}.png") for i in (0, 1)]
    argv = [
        sys.executable,
        "-m",
        "judge.cli",
        *images,
        "--constitution",
        str(root / "constitutions/toy.yaml"),
        "--model",
        "toy",
        "--explain",
        "--store",
        str(tmp_path / "s.db"),
    ]
    code, output = in_pty(argv, tmp_path)
    assert code == 1, output  # sample-000000 is unsafe
    assert not too_wide(output), "\n".join(too_wide(output))
    shown = [line for line in visible_lines(output) if line.strip()]
    assert len(shown) < 150, len(shown)
    text = "\n".join(shown)
    assert "sample-000000.png unsafe" in text and "sample-000001.png safe" in text
    assert text.count("M = P(Yes)") == 1


def test_paths_shorten_from_the_middle_keeping_the_file_name() -> None:
    from judge.commands.display import shorten_path

    path = "data/2024/batch-07/scans/front/IMG_0001.png"
    assert shorten_path(path, 80) == path
    assert shorten_path(path, 24) == "…/front/IMG_0001.png"
    assert shorten_path(path, 14) == "…/IMG_0001.png"
    long_name = "a_remarkably_long_file_name_of_a_scan_number_0001.png"
    cut = shorten_path(f"x/{long_name}", 20)
    assert len(cut) == 20 and cut.endswith("0001.png") and "…" in cut


def test_the_reason_is_said_once_when_every_rule_shares_it() -> None:
    from judge.commands.display import undecided_reason
    from judge.engine.verdict import RuleVerdict, Verdict

    down = "model failure: cannot reach http://127.0.0.1:8000/v1"
    rules = [RuleVerdict(rule_id=r, outcome="undecided", reason=down) for r in ("a", "b")]
    verdict = Verdict(image_id="x.png", outcome="undecided", undecided=["a", "b"], rules=rules)
    assert undecided_reason(verdict) == f"every rule: {down}"
    mixed = [*rules, RuleVerdict(rule_id="c", outcome="not_violated")]
    verdict = Verdict(image_id="x.png", outcome="undecided", undecided=["a", "b"], rules=mixed)
    assert undecided_reason(verdict) == f"a, b: {down}"
    error = Verdict(image_id="x.png", outcome="error", error="x.png: not a raster image")
    assert undecided_reason(error) == "not a raster image"


def test_model_output_is_never_read_as_markup() -> None:
    from rich.console import Console

    from judge.commands.display import explain_tree
    from judge.engine.verdict import (
        AlternativeEvidence,
        PreconditionEvidence,
        RuleVerdict,
        Verdict,
    )

    said = "[yellow]fake[/] [link=http://x]y[/link]"
    alt = AlternativeEvidence(
        statement="[bold]s", outcome="met", stage="cascade", rationale=said, error=said
    )
    rule = RuleVerdict(
        rule_id="[red]r",
        outcome="violated",
        decisive_precondition=0,
        preconditions=[PreconditionEvidence(index=0, outcome="met", alternatives=[alt])],
    )
    verdict = Verdict(image_id="[i].png", outcome="unsafe", violated=["[red]r"], rules=[rule])
    console = Console(width=80, record=True, file=io.StringIO())
    console.print(explain_tree(verdict, "[i].png"))
    text = console.export_text()
    assert "why: [yellow]fake[/] [link=http://x]y[/link]" in text
    assert "[red]r violated" in text and "'[bold]s'" in text and "[i].png" in text
