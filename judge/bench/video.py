"""`judge bench`, video section: what a clip costs (docs/video.md).

The clips are toy scenes that cut every 3.7 s (`SCENE_SECONDS`, off the 1-fps grid, so
the sampler takes each cut as a scene change) and hold in between, written at
10 frames per second and 224 x 224 with PyAV (H.264): a hold is what near-duplicate reuse
saves on, a cut is a scene change the sampler takes. Each clip is judged twice, with
reuse (near-duplicates take a judged frame's answers, relevance once per scene: the
default) and without, the prefix cache reset before each run where the server allows it.
Reported:

* frames judged per second (reuse off: every sampled frame goes to the model);
* model queries per clip (Yes/No queries and generations, counted at the back end, so
  frames judged in flight when sampling stopped count too) with and without reuse;
* how the cost per clip grows with its length (5, 20 and 60 s by default): seconds and
  queries per clip;
* early stopping: a clip as long as the longest, with a violation a quarter of the way
  in, judged with the default early stop and with `--scan-all`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from judge.bench.probes import RecordingBackend

LENGTHS: tuple[float, ...] = (5.0, 20.0, 60.0)
QUICK_LENGTHS: tuple[float, ...] = (5.0, 10.0)
SCENE_SECONDS = 3.7  # off the 1-fps grid: each cut is a scene-change frame
CLIP_FPS = 10
SEED = 500_000
# The early-stop clip: as long as the longest clip, unsafe from a quarter of the way in.
EARLY_STOP_SHARE = 0.25


def bench_clip(path: Path, seconds: float, seed: int, violation_at: float | None = None) -> Path:
    """A clip of `seconds`: safe toy scenes, a cut every SCENE_SECONDS; with
    `violation_at`, a blue shape (blue-anywhere) held for 2 s from that time."""
    from judge.toy import world
    from judge.toy.clips import write_clip
    from judge.toy.labelled import violated_rules

    frames = []
    scene = None
    n = round(seconds * CLIP_FPS)
    for index in range(n):
        t = index / CLIP_FPS
        if violation_at is not None and violation_at <= t < violation_at + 2.0:
            spec = world.SceneSpec(objects=(("blue", "square", "large"),), text="",
                                   distractors=(0, 0))
            picture = world.make_scene(seed, spec).image
        else:
            number = int(t // SCENE_SECONDS)
            if scene is None or scene[0] != number:
                candidate = seed + number * 97
                while violated_rules(found := world.make_scene(candidate)):
                    candidate += 1_000_003
                scene = (number, found.image)
            picture = scene[1]
        assert picture is not None
        frames.append(picture)
    return write_clip(frames, path, fps=CLIP_FPS)


@dataclass
class ClipRun:
    """One clip judged once."""

    seconds: float  # the clip's length
    wall_s: float
    queries: int  # Yes/No queries and generations the back end answered
    sampled: int
    judged: int
    outcome: str
    time: float | None


@dataclass
class VideoCosts:
    reuse: list[ClipRun] = field(default_factory=list)
    no_reuse: list[ClipRun] = field(default_factory=list)
    early_stop: ClipRun | None = None
    scan_all: ClipRun | None = None


async def _judge_once(
    judge: Any, backend: RecordingBackend, path: Path, seconds: float, reset: Callable[[], Any]
) -> ClipRun:
    reset()
    backend.recording.clear()
    started = time.perf_counter()
    verdict = await judge.ajudge(str(path))
    wall = time.perf_counter() - started
    clip = verdict.clip
    if clip is None:
        raise RuntimeError(f"the bench clip {path.name} was not judged: {verdict.error}")
    return ClipRun(
        seconds=seconds,
        wall_s=wall,
        queries=len(backend.recording.queries) + backend.recording.generations,
        sampled=len(clip.sampled),
        judged=clip.judged,
        outcome=verdict.outcome,
        time=verdict.time,
    )


async def video_costs(
    make_judge: Callable[[Any], Any],
    backend: RecordingBackend,
    folder: Path,
    lengths: Sequence[float] = LENGTHS,
    reset: Callable[[], Any] = lambda: None,
    say: Callable[[str], None] = lambda text: None,
) -> VideoCosts:
    """Judge the bench clips with and without reuse (and the early-stop clip with and
    without --scan-all). `make_judge(video_options)` gives a Judge over `backend` with
    those options; the judges should share one store, so the priors are asked once."""
    from judge.video.options import VideoOptions

    backend.record = True
    out = VideoCosts()
    clips = [(s, bench_clip(folder / f"bench-{s:g}s.mp4", s, SEED + int(s))) for s in lengths]
    warm = bench_clip(folder / "warm.mp4", 2.0, SEED - 1)
    judges = {
        "reuse": make_judge(VideoOptions()),
        "no_reuse": make_judge(VideoOptions(reuse=False)),
        "scan_all": make_judge(VideoOptions(scan_all=True)),
    }
    try:
        say("video: warming up (priors, kernels)")
        await judges["reuse"].ajudge(str(warm))
        for seconds, path in clips:
            say(f"video: a {seconds:g} s clip, with and without reuse")
            out.no_reuse.append(await _judge_once(judges["no_reuse"], backend, path, seconds,
                                                  reset))
            out.reuse.append(await _judge_once(judges["reuse"], backend, path, seconds, reset))
        length = max(lengths)
        at = round(length * EARLY_STOP_SHARE, 1)
        unsafe = bench_clip(folder / "bench-unsafe.mp4", length, SEED + 7, violation_at=at)
        say(f"video: a {length:g} s clip unsafe from {at:g} s, early stop and --scan-all")
        out.early_stop = await _judge_once(judges["reuse"], backend, unsafe, length, reset)
        out.scan_all = await _judge_once(judges["scan_all"], backend, unsafe, length, reset)
    finally:
        for judge in judges.values():
            await judge.aclose()
    return out


def add_rows(result: Any, costs: VideoCosts) -> None:
    """The video rows and summary keys of a BenchResult."""
    for on, off in zip(costs.reuse, costs.no_reuse, strict=True):
        name = f"{on.seconds:g} s clip"
        result.add("video", f"{name}: frames sampled / judged by the model (reuse)",
                   f"{on.sampled} / {on.judged}")
        result.add("video", f"{name}: model queries, reuse on / off",
                   f"{on.queries} / {off.queries}", off.queries / max(1, on.queries),
                   "off/on")
        result.add("video", f"{name}: seconds, reuse on / off",
                   f"{on.wall_s:.2f} / {off.wall_s:.2f}", off.wall_s / max(1e-9, on.wall_s),
                   "off/on")
    judged = sum(r.judged for r in costs.no_reuse)
    seconds = sum(r.wall_s for r in costs.no_reuse)
    rate = judged / max(1e-9, seconds)
    result.add("video", "frames judged / s (reuse off)", f"{rate:.2f}")
    first, last = costs.reuse[0], costs.reuse[-1]
    growth = last.wall_s / max(1e-9, first.wall_s)
    result.add("video", "cost vs length (reuse on, s per clip)", ", ".join(
        f"{r.seconds:g} s: {r.wall_s:.2f}" for r in costs.reuse), growth,
        f"{last.seconds:g} s / {first.seconds:g} s")
    summary: dict[str, Any] = {
        "video_frames_per_s": rate,
        "video_queries_per_clip": {f"{r.seconds:g}": r.queries for r in costs.reuse},
        "video_queries_per_clip_no_reuse": {f"{r.seconds:g}": r.queries for r in costs.no_reuse},
        "video_seconds_per_clip": {f"{r.seconds:g}": r.wall_s for r in costs.reuse},
        "video_length_growth": growth,
    }
    stop, full = costs.early_stop, costs.scan_all
    if stop is not None and full is not None:
        same = (stop.outcome, stop.time) == (full.outcome, full.time)
        result.add("video", f"early stop: queries on a {stop.seconds:g} s clip unsafe at "
                   f"{stop.time} s (stop / --scan-all)", f"{stop.queries} / {full.queries}",
                   full.queries / max(1, stop.queries), "scan-all/stop")
        result.add("video", "early stop: same verdict and deciding time", "yes" if same else
                   f"no ({stop.outcome} {stop.time} vs {full.outcome} {full.time})",
                   None, "yes", same)
        summary.update(video_early_stop_queries=stop.queries,
                       video_scan_all_queries=full.queries, video_early_stop_same=same)
    result.summary.update(summary)


def video_summary(summary: dict[str, Any]) -> str:
    """The video part of the one-line summary."""
    rate = summary.get("video_frames_per_s")
    if rate is None:
        return "video=skipped"
    on = summary.get("video_queries_per_clip", {})
    off = summary.get("video_queries_per_clip_no_reuse", {})
    calls = ",".join(f"{k}s:{on[k]}/{off.get(k, '?')}" for k in on)
    return f"video={rate:.2f} frames/s, queries reuse/none {calls}"


async def run_video_section(
    bench: Any, lengths: Sequence[float], reset_cache: Callable[[str], Any]
) -> None:
    """The video section of a `judge bench` run (judge.bench.run.Bench) on its server;
    `reset_cache(url)` empties the server's prefix cache where it allows that."""
    from dataclasses import replace

    from judge.engine.judge import Judge
    from judge.engine.procedure import JudgeOptions
    from judge.store import Store

    config = bench.config
    backend = bench._backend()
    folder = Path(bench._tmp.name) / "video"
    folder.mkdir(parents=True, exist_ok=True)
    store = Store(folder / "video.sqlite3")  # shared: each prior is asked once
    base = config.options or JudgeOptions()

    def make_judge(video: Any) -> Judge:
        return Judge(bench.lock, **config.model_options.judge_kwargs(backend=backend),
                     options=replace(base, video=video), store=store)

    try:
        costs = await video_costs(make_judge, backend, folder, lengths,
                                  reset=lambda: reset_cache(config.server), say=bench.say)
    finally:
        store.close()
        await backend.aclose()
    add_rows(bench.result, costs)
