"""`judge bench`'s video section (judge.bench.video) over the fake back end that sees
colours: the numbers it reports exist and point the right way (reuse and early stopping
ask fewer queries; the verdict and its time do not change). The section against the real
vLLM server runs in tests/test_bench.py's `judge bench --quick`."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from judge import Judge, JudgeOptions
from judge.bench.probes import RecordingBackend
from judge.bench.run import BenchResult
from judge.bench.video import add_rows, bench_clip, video_costs, video_summary
from judge.store import Store
from judge.video import open_clip
from tests._video_fake import TOY_POLICY, PaletteBackend


def test_bench_clips_cut_hold_and_carry_a_violation(tmp_path: Path) -> None:
    path = bench_clip(tmp_path / "c.mp4", 9.0, 1, violation_at=5.0)
    clip = open_clip(path)
    assert (clip.probe.frames, clip.probe.duration) == (90, 9.0)


def test_the_video_section_measures_reuse_and_early_stop(tmp_path: Path) -> None:
    backend = RecordingBackend(PaletteBackend())
    store = Store(tmp_path / "s.sqlite3")

    def make_judge(video: Any) -> Judge:
        return Judge(TOY_POLICY, model="fake", backend=backend, relevance="vlm", locator="off",
                     options=JudgeOptions(video=video), store=store)

    try:
        costs = asyncio.run(video_costs(make_judge, backend, tmp_path, lengths=(5.0, 10.0)))
    finally:
        store.close()
    for on, off in zip(costs.reuse, costs.no_reuse, strict=True):
        assert on.outcome == off.outcome == "safe"
        assert on.sampled == off.sampled and on.judged < off.judged == off.sampled
        assert 0 < on.queries < off.queries
    # Longer clips cost more; cuts every 4 s: a few more scenes, not ten times more frames.
    assert costs.reuse[1].queries > costs.reuse[0].queries
    stop, full = costs.early_stop, costs.scan_all
    assert stop is not None and full is not None
    assert (stop.outcome, stop.time) == (full.outcome, full.time) == ("unsafe", 2.5)
    assert stop.queries < full.queries and stop.sampled < full.sampled
    result = BenchResult()
    add_rows(result, costs)
    measures = [row.measure for row in result.rows]
    assert "frames judged / s (reuse off)" in measures
    assert "5 s clip: model queries, reuse on / off" in measures
    assert result.summary["video_early_stop_same"] is True
    line = video_summary(result.summary)
    assert line.startswith("video=") and "5s:" in line and "10s:" in line
