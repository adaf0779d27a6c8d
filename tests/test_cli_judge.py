"""`judge IMAGE... --constitution POLICY`: outputs, exit codes, JSONL resume after SIGKILL.

The model is a scripted back end registered as a plugin ("scripted-cli"): red images meet
"a red shape" (M 0.95), others do not (0.05), grey images and statements with the word
"unanswerable" get a missing answer (a model failure), all against a prior of 0.5.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from judge.models.base import YesNoResult
from judge.models.scripted import ScriptedBackend

PLUGIN = """
import asyncio
from judge.models.base import YesNoResult
from judge.models.registry import register_backend
from judge.models.scripted import ScriptedBackend


class ByColour(ScriptedBackend):
    delay = 0.0

    async def yes_no(self, queries):
        await asyncio.sleep(self.delay)
        out = []
        for q in queries:
            if q.image is None:
                out.append(YesNoResult(0.5, 0.5))
                continue
            r, g, b = q.image.convert("RGB").getpixel((1, 1))
            if r == g == b or "unanswerable" in q.question:
                out.append(YesNoResult.failed("HTTP 500 from the test server"))
            else:
                red = r > 150 and g < 100
                out.append(YesNoResult(0.95, 0.05) if red else YesNoResult(0.05, 0.95))
        return out


def factory(model=None, server=None, api_key=None, delay=0.0):
    backend = ByColour(model=model or "scripted-cli")
    backend.delay = float(__import__("os").environ.get("JUDGE_TEST_DELAY", delay))
    return backend


try:
    register_backend("scripted-cli", factory)
except ValueError:
    pass
"""

POLICY = """\
name: colours
rules:
  - id: no-red
    text: Images must not show a red shape.
    preconditions:
      - a red shape
"""


@pytest.fixture
def world(tmp_path: Path) -> dict[str, Any]:
    (tmp_path / "plugin_scripted_cli.py").write_text(PLUGIN)
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY)
    from judge.constitution import Constitution

    constitution = Constitution.load(policy)
    constitution.compile(None)
    constitution.save_lock()
    images = tmp_path / "images"
    images.mkdir()
    colours = {"red": (220, 30, 30), "blue": (30, 60, 220), "grey": (128, 128, 128)}
    for name, colour in colours.items():
        Image.new("RGB", (40, 30), colour).save(images / f"{name}.png")
    (images / "notes.txt").write_text("not an image")
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nbroken")
    return {"dir": tmp_path, "policy": policy, "images": images}


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str


def _args(world: dict[str, Any], args: tuple[str, ...]) -> list[str]:
    out = [*args]
    if "--constitution" not in out:
        out += ["--constitution", str(world["policy"])]
    out += ["--backend", "scripted-cli", "--relevance", "off", "--locator", "off"]
    return [*out, "--store", str(world["dir"] / "s.db")]


def judge_cli(world: dict[str, Any], *args: str) -> Result:
    """Run `judge ...` in this process (fast); the exit code comes from SystemExit."""
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
            main(_args(world, args))
        except SystemExit as done:
            code = int(done.code or 0)
    return Result(code, out.getvalue(), err.getvalue())


def judge_subprocess(world: dict[str, Any], *args: str, env: dict[str, str]) -> Any:
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]); import plugin_scripted_cli; "
        "from judge.cli import main; main(sys.argv[2:])"
    )
    argv = [sys.executable, "-c", code, str(world["dir"]), *_args(world, args)]
    return subprocess.Popen(
        argv,
        cwd=world["dir"],
        env={**os.environ, **env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


def test_exit_codes(world: dict[str, Any]) -> None:
    images = world["images"]
    assert judge_cli(world, str(images / "blue.png")).returncode == 0
    assert judge_cli(world, str(images / "red.png")).returncode == 1
    grey = judge_cli(world, str(images / "grey.png"))
    assert grey.returncode == 3, grey.stderr  # a model failure is never a silent 0
    assert judge_cli(world, str(world["dir"] / "broken.png")).returncode == 2
    # An unjudged (undecided) image comes before an unsafe one: never read as complete.
    both = [str(images / "red.png"), str(images / "grey.png")]
    assert judge_cli(world, *both).returncode == 3
    missing_policy = judge_cli(world, str(images / "red.png"), "--constitution", "nope.yaml")
    assert missing_policy.returncode == 2 and "nope.yaml" in missing_policy.stderr


def test_json_document_folder_and_glob(world: dict[str, Any]) -> None:
    result = judge_cli(world, str(world["images"]), "--json")
    assert result.returncode == 3, result.stderr  # grey is undecided
    document = json.loads(result.stdout)
    outcomes = {Path(v["image_id"]).name: v["outcome"] for v in document["verdicts"]}
    assert outcomes == {"blue.png": "safe", "grey.png": "undecided", "red.png": "unsafe"}
    summary = {k: document["summary"][k] for k in ("files", "images", "unreadable", "unsafe")}
    assert summary == {"files": 3, "images": 3, "unreadable": 0, "unsafe": 1}
    red = next(v for v in document["verdicts"] if v["image_id"].endswith("red.png"))
    alt = red["rules"][0]["preconditions"][0]["alternatives"][0]
    assert alt["m"] == pytest.approx(0.95) and alt["prior"] == 0.5 and alt["stage"] == "prior"
    assert red["run"]["calls"]["first_pass"] == 1
    globbed = judge_cli(world, str(world["images"] / "b*.png"), "--json")
    assert [v["outcome"] for v in json.loads(globbed.stdout)["verdicts"]] == ["safe"]
    nothing = judge_cli(world, str(world["images"] / "z*.png"))
    assert nothing.returncode == 2 and "no file matches" in nothing.stderr


def test_table_and_explain(world: dict[str, Any]) -> None:
    result = judge_cli(world, str(world["images"] / "red.png"), "--explain")
    assert result.returncode == 1
    assert "unsafe" in result.stdout and "no-red" in result.stdout
    assert "a red shape" in result.stdout and "0.950" in result.stdout  # the evidence table


def test_bad_thresholds_file_is_usage_error(world: dict[str, Any]) -> None:
    bad = world["dir"] / "th.yaml"
    bad.write_text("beta: [1, 2]\n")
    result = judge_cli(world, str(world["images"] / "red.png"), "--thresholds", str(bad))
    assert result.returncode == 2 and "beta" in result.stderr
    assert "Traceback" not in result.stderr


def test_stale_lock_needs_compile(world: dict[str, Any]) -> None:
    world["policy"].write_text(POLICY.replace("a red shape", "a red circle"))
    stale = judge_cli(world, str(world["images"] / "red.png"))
    assert stale.returncode == 2 and "compile" in stale.stderr
    fixed = judge_cli(world, str(world["images"] / "red.png"), "--compile")
    assert fixed.returncode == 1, fixed.stderr  # hand-written: compiles without a model


def _lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_jsonl_appends_and_skips_done_images(world: dict[str, Any]) -> None:
    out = world["dir"] / "out.jsonl"
    first = judge_cli(world, str(world["images"] / "red.png"), "--jsonl", str(out))
    assert first.returncode == 1
    again = judge_cli(world, str(world["images"]), "--jsonl", str(out))
    assert again.returncode == 3  # grey is undecided
    records = _lines(out)
    assert sorted(Path(r["image_id"]).name for r in records) == ["blue.png", "grey.png", "red.png"]


def test_jsonl_repairs_a_torn_last_line(world: dict[str, Any]) -> None:
    out = world["dir"] / "out.jsonl"
    judge_cli(world, str(world["images"] / "red.png"), "--jsonl", str(out))
    with open(out, "a") as handle:
        handle.write('{"image_id": "half')
    judge_cli(world, str(world["images"]), "--jsonl", str(out))
    records = _lines(out)
    assert len(records) == 3 and out.read_text().endswith("\n")


def test_sigkill_then_resume_loses_and_duplicates_nothing(world: dict[str, Any]) -> None:
    many = world["dir"] / "many"
    many.mkdir()
    for i in range(40):
        colour = (220, 30, 30) if i % 3 == 0 else (30, 60 + i, 220)
        Image.new("RGB", (32, 32), colour).save(many / f"img{i:02d}.png")
    out = world["dir"] / "run.jsonl"
    proc = judge_subprocess(
        world, str(many), "--jsonl", str(out), "--concurrency", "2", env={"JUDGE_TEST_DELAY": "0.1"}
    )
    deadline = time.time() + 90
    while time.time() < deadline:
        if out.exists() and out.read_text().count("\n") >= 5:
            break
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    partial = out.read_text().count("\n")
    assert 5 <= partial < 40, "the run should have been killed part-way"
    resumed = judge_cli(world, str(many), "--jsonl", str(out), "--json")
    assert resumed.returncode == 1, resumed.stderr
    records = _lines(out)
    ids = [r["image_id"] for r in records]
    assert len(ids) == 40 and len(set(ids)) == 40
    assert sum(r["outcome"] == "unsafe" for r in records) == 14
    assert json.loads(resumed.stdout)["summary"]["images"] == 40


def test_scripted_backend_plugin_shape() -> None:
    # The plugin above relies on these: keep them stable.
    backend = ScriptedBackend(model="m")
    assert backend.model_id == "m" and YesNoResult.failed("x").m is None
