"""Toy clips end to end with the trained toy models, on transformers and on the real vLLM
server: the verdicts, the deciding frame's time (within one sampling interval of the
violation's onset), and early stopping and near-duplicate reuse asking the model less
without changing any verdict. No retraining: a clip's frames are toy scenes with codec
noise. Kept cheap for 2 CI cores: four clips of 4-6 s at 224 px, 10 frames a second,
sampled at 1 fps. The numbers are printed for the closing note (`pytest -s`).
"""

from __future__ import annotations

import io
import json
import time
from pathlib import Path
from typing import Any

import pytest

from judge import Judge, JudgeOptions, Verdict
from judge.video import VideoOptions

pytestmark = pytest.mark.slow

USED = ("hold-safe", "cuts-safe-webm", "flash-violation", "comes-back")
INTERVAL = 1.0  # 1 / the default fps
MODES = {
    "default": VideoOptions(),
    "scan-all": VideoOptions(scan_all=True),
    "neither": VideoOptions(scan_all=True, reuse=False),
}


@pytest.fixture(scope="module")
def clip_rows(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    from judge.toy.clips import CLIPS, write_clip_set

    folder = tmp_path_factory.mktemp("toy-clips")
    manifest = write_clip_set(folder, [c for c in CLIPS if c.name in USED])
    rows = [json.loads(line) for line in manifest.read_text().splitlines()]
    for row in rows:
        row["path"] = str(folder / row["video_path"])
    return rows


def _warm(policy: Path, store: Path, **kwargs: Any) -> None:
    """Ask every statement's prior once (no relevance scan: every rule is asked), so the
    modes compared below pay for frames only."""
    from judge.toy.world import SceneSpec, make_scene

    scene = make_scene(1, SceneSpec(objects=(("red", "circle", "large"),), text=""))
    assert scene.image is not None
    buffer = io.BytesIO()
    scene.image.save(buffer, "PNG")
    options = JudgeOptions(relevance=False)
    with Judge(policy, model="toy", store=store, options=options, **kwargs) as judge:
        judge.judge(buffer.getvalue())


def run_clips(
    policy: Path, rows: list[dict[str, Any]], store: Path, video: VideoOptions, **kwargs: Any
) -> dict[str, Any]:
    """Every clip, one at a time; the model's queries counted at the back end (frames in
    flight when sampling stopped included)."""
    with Judge(policy, model="toy", store=store, options=JudgeOptions(video=video),
               **kwargs) as judge:
        stats = judge.backend.stats
        before = stats.yes_no_queries + stats.generations
        started = time.perf_counter()
        verdicts = [judge.judge(row["path"]) for row in rows]
        seconds = time.perf_counter() - started
        queries = stats.yes_no_queries + stats.generations - before
    return {"verdicts": verdicts, "queries": queries, "seconds": seconds}


def check(rows: list[dict[str, Any]], verdicts: list[Verdict]) -> list[str]:
    """The table row of each clip; asserts the verdict and the deciding frame's time."""
    table = []
    for row, verdict in zip(rows, verdicts, strict=True):
        name = row["question_id"]
        assert verdict.outcome == row["label"], (name, verdict.outcome, verdict.undecided)
        assert sorted(verdict.violated) == sorted(row["rules"]), (name, verdict.violated)
        error = None
        if row["onset"] is not None:
            assert verdict.time is not None, name
            error = verdict.time - row["onset"]
            assert 0 <= error <= INTERVAL, (name, verdict.time, row["onset"])
        assert verdict.clip is not None
        table.append(
            f"{name}: {verdict.outcome} (truth {row['label']}), deciding time "
            f"{verdict.time} vs onset {row['onset']} (error {error}), frames sampled "
            f"{len(verdict.clip.sampled)}, judged {verdict.clip.judged}, reused "
            f"{verdict.clip.reused}, stopped at {verdict.clip.stopped_at}"
        )
    return table


def compare(rows: list[dict[str, Any]], runs: dict[str, dict[str, Any]], label: str) -> None:
    for mode, run in runs.items():
        table = check(rows, run["verdicts"])
        print(f"\n{label}, {mode}: {run['queries']} model queries, {run['seconds']:.1f} s")
        for line in table:
            print("  " + line)
    shown = {m: [(v.outcome, sorted(v.violated), v.time) for v in r["verdicts"]]
             for m, r in runs.items()}
    assert all(s == shown["default"] for s in shown.values()), shown
    queries = {m: r["queries"] for m, r in runs.items()}
    if "scan-all" in queries:
        assert queries["default"] < queries["scan-all"], queries  # early stop
        assert queries["scan-all"] < queries["neither"], queries  # near-duplicate reuse
    assert queries["default"] < queries["neither"], queries


def test_toy_clips_on_transformers(
    toy_models: Any, toy_policy: Path, clip_rows: list[dict[str, Any]], tmp_path: Path
) -> None:
    store = tmp_path / "store.sqlite3"
    _warm(toy_policy, store)
    runs = {mode: run_clips(toy_policy, clip_rows, store, video) for mode, video in MODES.items()}
    compare(clip_rows, runs, "hf")


@pytest.mark.vllm
def test_toy_clips_on_the_vllm_server(
    toy_models: Any, toy_policy: Path, clip_rows: list[dict[str, Any]], tmp_path: Path,
    vllm_server: Any,
) -> None:
    store = tmp_path / "store.sqlite3"
    _warm(toy_policy, store, server=vllm_server.url)
    runs = {mode: run_clips(toy_policy, clip_rows, store, MODES[mode], server=vllm_server.url)
            for mode in ("default", "neither")}
    compare(clip_rows, runs, "vllm-server")
