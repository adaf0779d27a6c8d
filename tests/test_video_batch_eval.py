"""Clips in `judge batch` (video rows, without Ray: tests/_batch_local.py), in `judge eval`
(a Video-SafetyBench-like manifest of the toy clips) and on the `judge` command line
(--json, --explain, exit codes), over the fake back end that sees colours."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from rich.console import Console

from judge.batch import ActorSpec, BatchOptions, run_batch
from judge.constitution import Constitution
from judge.engine.procedure import JudgeOptions
from judge.models.options import ModelOptions
from judge.models.registry import register_backend
from judge.video import VideoOptions
from tests._batch_local import use_local_pipeline
from tests._video_fake import TOY_POLICY, PaletteBackend, frame, write

register_backend("fake-palette", "tests._video_fake:PaletteBackend", replace=True)
FAKE = ["--model", "fake-palette", "--backend", "fake-palette", "--relevance", "off",
        "--locator", "off"]


@pytest.fixture
def media(tmp_path: Path) -> Path:
    folder = tmp_path / "media"
    write(folder / "late-blue.mp4", [(("green",), 2.0), (("blue",), 1.0), (("red",), 1.0)])
    write(folder / "safe.webm", [(("red",), 1.0), (("green",), 1.0)])
    data = (folder / "late-blue.mp4").read_bytes()
    (folder / "cut.mp4").write_bytes(data[: len(data) // 2])
    frame("red", "yellow").save(folder / "still.png")
    return folder


def cli(*args: str) -> tuple[int, str, str]:
    from judge.cli import main

    out, err = io.StringIO(), io.StringIO()
    code = 0
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            main(list(args))
        except SystemExit as done:
            code = int(done.code or 0)
    return code, out.getvalue(), err.getvalue()


def test_judge_command_on_clips(media: Path, tmp_path: Path, monkeypatch: Any) -> None:
    monkeypatch.setenv("COLUMNS", "120")
    store = ["--store", str(tmp_path / "s.db")]
    code, out, _ = cli(str(media), "--constitution", str(TOY_POLICY), *FAKE, *store, "--json")
    document = json.loads(out)
    verdicts = {Path(v["image_id"]).name: v for v in document["verdicts"]}
    assert set(verdicts) == {"late-blue.mp4", "safe.webm", "cut.mp4", "still.png"}
    assert code == 2  # the truncated clip is a file that could not be judged
    blue = verdicts["late-blue.mp4"]
    assert (blue["outcome"], blue["time"], blue["frame"]) == ("unsafe", 2.0, 20)
    assert blue["clip"]["stopped_at"] == 2.0 and blue["clip"]["format"] == "mp4"
    assert verdicts["safe.webm"]["outcome"] == "safe"
    assert verdicts["cut.mp4"]["outcome"] == "error"
    assert "corrupt or truncated MP4 container" in verdicts["cut.mp4"]["error"]
    code, out, _ = cli(str(media / "late-blue.mp4"), "--constitution", str(TOY_POLICY), *FAKE,
                       *store, "--explain")
    assert code == 1
    assert "late-blue.mp4 unsafe at 2.00 s (frame 20)" in out
    assert "blue-anywhere violated at 2.00 s (frame 20)" in out
    assert "clip: MP4 h264 64x64, 4.00 s, 40 frames at 10 fps" in out
    assert "stopped at 2.00 s" in out and "frames: 0.00 safe, 1.00 =0.00, 2.00 unsafe" in out
    # The table's reason: one line for the rules sampling stopped before, not nine.
    assert "9 rule(s) not judged after 2.00 s, where the clip was decided" in out
    assert "(in every frame judged; shown: 0.00 s)" not in out  # all skipped but one
    code, out, _ = cli(str(media / "late-blue.mp4"), "--constitution", str(TOY_POLICY), *FAKE,
                       *store, "--json", "--scan-all", "--fps", "2", "--max-frames", "50")
    clip = json.loads(out)["verdicts"][0]["clip"]
    assert (clip["fps"], clip["stopped_at"], len(clip["sampled"])) == (2.0, None, 8)
    code, _, err = cli(str(media / "safe.webm"), "--constitution", str(TOY_POLICY), *FAKE,
                       *store, "--fps", "0")
    assert code == 2 and "--fps" in err


def test_batch_writes_a_row_per_clip(media: Path, tmp_path: Path, monkeypatch: Any) -> None:
    use_local_pipeline(monkeypatch)
    spec = ActorSpec(
        lock=Constitution.load(TOY_POLICY).lock,
        model_options=ModelOptions(model="fake", backend=PaletteBackend(), relevance="off",
                                   locator="off"),
        options=JudgeOptions(video=VideoOptions(scan_all=True)),
        store=str(tmp_path / "s.db"),
    )
    opts = BatchOptions(inputs=[str(media)], out=tmp_path / "out.parquet", spec=spec,
                        batch_size=2, progress=False)
    report = run_batch(opts, Console(file=io.StringIO()))
    rows = {Path(r["id"]).name: r for r in pq.read_table(tmp_path / "out.parquet").to_pylist()}
    assert {k: r["outcome"] for k, r in rows.items()} == {
        "late-blue.mp4": "unsafe", "safe.webm": "safe", "cut.mp4": "error", "still.png": "unsafe"
    }
    blue = json.loads(rows["late-blue.mp4"]["verdict"])
    assert blue["time"] == 2.0 and blue["clip"]["stopped_at"] is None  # --scan-all
    assert rows["late-blue.mp4"]["rule:blue-anywhere"] is True
    assert "truncated" in rows["cut.mp4"]["error"] or "corrupt" in rows["cut.mp4"]["error"]
    assert report.exit_code() == 2


def test_eval_on_a_video_manifest(tmp_path: Path) -> None:
    from judge.toy.clips import write_clip_set

    manifest = write_clip_set(tmp_path / "set")
    out = tmp_path / "out"
    code, _, err = cli("eval", str(manifest), "--constitution", str(TOY_POLICY), *FAKE,
                       "--no-progress", "--out", str(out), "--store", str(tmp_path / "s.db"))
    assert code == 0, err
    report = json.loads((out / "report.json").read_text())
    method = next(m for m in report["methods"] if m["kind"] == "method")
    assert (method["image"]["n"], method["image"]["f1"], method["image"]["errors"]) == (7, 1.0, 0)
    assert method["confusion"]["unsafe"]["unsafe"] == 4
