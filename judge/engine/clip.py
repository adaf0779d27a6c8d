"""A clip, judged: its sampled frames go through the image procedure, and one verdict
comes back with the deciding frame as evidence (docs/video.md).

Per clip:
1. Open and probe it (judge.video.decode): every limit that can be checked without
   decoding is checked, and a corrupt or truncated container is an "error" verdict with
   the reason before any model is asked anything.
2. Decode it frame by frame; the sampler (judge.video.sample) takes the frames on the
   `fps` grid and at scene changes, up to `max_frames`.
3. Judge the taken frames in time order, `window` at a time, through `judge_image`, with
   the same Setup as images: the language priors are the same cache, so a statement's
   prior is asked once for images and clips alike. With reuse on (the default), a frame
   that is a near-duplicate of a frame already judged takes that frame's answers with no
   model call, and the relevance scan runs once per scene (its first frame's scores).
   Once a rule is violated, later frames are not asked about it again: its verdict
   cannot change.
4. Stop early (unless `scan_all`): once every rule is violated, or a rule is violated
   and no other rule is undecided (or `first_violation` is set), the verdict can no
   longer change its outcome; the rules not violated by then are "skipped", with the
   time sampling stopped, since the rest of the clip was not judged for them.

Per rule, over the frames judged: violated if any frame violates it (the evidence is the
first such frame: its time, its index and its precondition outcomes); otherwise
undecided if any frame left it undecided, never "not violated" (a rule undecided on some
frames and not violated on the rest is undecided); otherwise not violated, or irrelevant
when every frame found it irrelevant. A clip whose sampling ran out before its end
(`capped_at`: --max-frames reached on a clip of unknown duration) cannot be "safe".
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections import Counter, deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

from judge.constitution.schema import Lock
from judge.engine.procedure import ImageResult, Setup, SharedRelevance, judge_image
from judge.engine.verdict import (
    ClipInfo,
    FrameVerdict,
    RuleVerdict,
    Verdict,
    deciding_frame,
    image_outcome,
    make_verdict,
    model_failure,
    unreadable,
)
from judge.errors import BackendError, ImageError, VideoError, VideoLimitError
from judge.models.base import Backend
from judge.video.decode import Clip, DecodedFrame, open_clip
from judge.video.sample import Pick, Sampler, Thumb, nearest

ClipSource = str | Path | bytes


@dataclass(eq=False)
class _Frame:
    """A sampled frame on its way through the procedure."""

    index: int
    time: float
    pick: Pick
    thumb: Thumb
    task: asyncio.Task[ImageResult] | None = None
    source: _Frame | None = None  # a near-duplicate of this judged frame
    size: tuple[int, int] | None = None

    async def result(self) -> ImageResult:
        owner = self.source or self
        assert owner.task is not None
        return await owner.task


@dataclass
class _RuleState:
    """One rule over the frames judged so far."""

    violated: list[tuple[_Frame, RuleVerdict]] = field(default_factory=list)
    undecided: tuple[_Frame, RuleVerdict] | None = None
    skipped: tuple[_Frame, RuleVerdict] | None = None
    not_violated: tuple[_Frame, RuleVerdict] | None = None
    irrelevant: tuple[_Frame, RuleVerdict] | None = None
    judged: int = 0

    def add(self, frame: _Frame, rule: RuleVerdict) -> None:
        self.judged += 1
        item = (frame, rule)
        if rule.outcome == "violated":
            self.violated.append(item)
        elif rule.outcome == "undecided":
            self.undecided = self.undecided or item
        elif rule.outcome == "skipped":
            self.skipped = self.skipped or item
        elif rule.outcome == "not_violated":
            # The evidence shown: the first frame, or the first that left a precondition
            # undecided (its reason must not be lost).
            if self.not_violated is None or (
                rule.undecided_preconditions and not self.not_violated[1].undecided_preconditions
            ):
                self.not_violated = item
        elif rule.outcome == "irrelevant":
            best = self.irrelevant
            if best is None or (rule.relevance or 0.0) > (best[1].relevance or 0.0):
                self.irrelevant = item

    @property
    def open(self) -> bool:
        """Left undecided (or unjudged) on some frame: more frames could still matter."""
        return self.undecided is not None or self.skipped is not None


@dataclass
class _Loaded:
    """What `make_verdict` reads of a loaded image."""

    image_id: str
    sha256: str


async def judge_clip(
    setup: Setup,
    source: ClipSource,
    image_id: str | None,
    *,
    lock: Lock,
    backend: Backend,
    budget: int | None,
) -> Verdict:
    """The verdict for one clip (a path or the file's bytes): outcome "error" when it
    cannot be read, with the reason; otherwise the rules' verdicts over its frames.
    `budget` is the back end's pixel budget each frame is resized to."""
    started = time.perf_counter()
    try:
        clip = await asyncio.to_thread(open_clip, source, setup.options.video.limits)
    except ImageError as error:
        return unreadable(image_id, source, error)
    probe_s = time.perf_counter() - started
    label = source if isinstance(source, str) else str(source) if isinstance(source, Path) else None
    name = image_id or label or f"sha256:{clip.probe.sha256[:16]}"
    run = _ClipRun(setup, clip, name, lock=lock, backend=backend, budget=budget)
    try:
        verdict = await run.run()
    except ImageError as error:  # corrupt past the demux pass: found while decoding
        return unreadable(name, source, error)
    if verdict.run is None:  # refused before any frame was judged
        return verdict
    timings = dict(verdict.run.timings) if verdict.run is not None else {}
    timings["probe"] = round(probe_s, 6)
    timings["total"] = round(time.perf_counter() - started, 6)
    return verdict.model_copy(update={"run": verdict.run.model_copy(update={"timings": timings})})


class _ClipRun:
    def __init__(
        self,
        setup: Setup,
        clip: Clip,
        name: str,
        *,
        lock: Lock,
        backend: Backend,
        budget: int | None,
    ) -> None:
        self.setup, self.clip, self.name = setup, clip, name
        self.lock, self.backend, self.budget = lock, backend, budget
        self.options = setup.options
        self.video = setup.options.video
        self.rule_ids = [r.id for r in setup.rules if r.enabled]
        self.state = {rule_id: _RuleState() for rule_id in self.rule_ids}
        self.applied: list[_Frame] = []
        self.sampled: list[FrameVerdict] = []
        self.judged: list[_Frame] = []  # frames judged for themselves, in order
        self.scenes: dict[int, SharedRelevance] = {}
        self.subsets: dict[frozenset[str], Setup] = {}
        self.calls: Counter[str] = Counter()
        self.timings: Counter[str] = Counter()
        self.decode_s = 0.0
        self.stopped_at: float | None = None
        fps = None if self.options.all_frames else self.video.fps
        self.sampler = Sampler(fps, self.video.max_frames, clip.probe.duration)

    # -- the loop

    async def run(self) -> Verdict:
        probe = self.clip.probe
        if self.sampler.fps is None and probe.frames > self.video.max_frames:
            return unreadable(self.name, self.name, VideoLimitError(
                f"{self.name}: the clip has {probe.frames:,} frames and every frame was asked "
                f"for (--all-frames), over --max-frames {self.video.max_frames}; raise "
                "--max-frames, or sample it with --fps"
            ))
        frames = self.clip.frames()
        window: deque[_Frame] = deque()
        exhausted = False
        try:
            while True:
                while not exhausted and len(window) < self.video.window:
                    taken = await self._next(frames)
                    if taken is None:
                        exhausted = True
                        break
                    window.append(await self._schedule(*taken))
                if not window:
                    break
                head = window.popleft()
                self._apply(head, await head.result())
                if self._decided():
                    if window or not exhausted:
                        self.stopped_at = head.time
                    break
        finally:
            cancelled = [p.task for p in window if p.task is not None and not p.task.done()]
            for task in cancelled:
                task.cancel()
            await asyncio.gather(*cancelled, return_exceptions=True)
            close = getattr(frames, "close", None)
            if close is not None:
                await asyncio.to_thread(close)
        if not self.applied:
            raise VideoError(f"{self.name}: no frame of the clip could be decoded")
        return self._verdict()

    async def _next(self, frames: Iterator[DecodedFrame]) -> tuple[DecodedFrame, Pick] | None:
        """The next sampled frame (decoding the frames between in a worker thread)."""
        started = time.perf_counter()
        found = await asyncio.to_thread(self._pull, frames)
        self.decode_s += time.perf_counter() - started
        return found

    def _pull(self, frames: Iterator[DecodedFrame]) -> tuple[DecodedFrame, Pick] | None:
        for frame in frames:
            pick = self.sampler.offer(frame.time, frame.thumb)
            if pick is not None:
                return frame, pick
        return None

    async def _schedule(self, decoded: DecodedFrame, pick: Pick) -> _Frame:
        frame = _Frame(decoded.index, decoded.time, pick, decoded.thumb)
        if self.video.reuse:
            found = nearest(decoded.thumb, [f.thumb for f in self.judged])
            if found is not None:
                frame.source = self.judged[found]
                return frame
        from judge.images import fit_pixels

        def pixels() -> Image.Image:
            # Resized once, as an image is: the relevance scan, locator and model see these.
            return fit_pixels(decoded.picture(), self.budget)

        started = time.perf_counter()
        image = await asyncio.to_thread(pixels)
        self.decode_s += time.perf_counter() - started
        frame.size = image.size
        todo = frozenset(
            r for r in self.rule_ids if self.video.scan_all or not self.state[r].violated
        )
        shared = None
        if self.video.reuse:
            shared = self.scenes.setdefault(pick.scene, SharedRelevance())
        key = f"{self.clip.probe.sha256[:16]}@{decoded.index}"
        frame.task = asyncio.ensure_future(self._judge(image, key, todo, shared))
        self.judged.append(frame)
        return frame

    async def _judge(
        self, image: Image.Image, key: str, todo: frozenset[str], shared: SharedRelevance | None
    ) -> ImageResult:
        setup = self._setup_for(todo)
        try:
            return await judge_image(setup, image, key, shared)
        except BackendError as error:
            return ImageResult(model_failure(setup.rules, error), Counter(), {})

    def _setup_for(self, todo: frozenset[str]) -> Setup:
        """The run's Setup narrowed to the rules still worth asking about (the priors,
        scorer, locator and encoder lock stay shared)."""
        if len(todo) == len(self.rule_ids):
            return self.setup
        if todo not in self.subsets:
            rules = [r for r in self.setup.rules if r.id in todo]
            self.subsets[todo] = dataclasses.replace(self.setup, rules=rules)
        return self.subsets[todo]

    def _apply(self, frame: _Frame, result: ImageResult) -> None:
        for rule in result.rules:
            if rule.rule_id in self.state:
                self.state[rule.rule_id].add(frame, rule)
        if frame.source is None:
            self.calls.update(result.calls)
            self.timings.update(result.timings)
        outcome, violated, undecided = image_outcome(result.rules)
        self.applied.append(frame)
        self.sampled.append(FrameVerdict(
            index=frame.index,
            time=round(frame.time, 6),
            scene=frame.pick.scene,
            why=frame.pick.why,
            outcome=outcome,
            violated=violated,
            undecided=undecided,
            reused_from=frame.source.index if frame.source is not None else None,
        ))

    def _decided(self) -> bool:
        """Whether judging more frames could no longer change the clip's outcome."""
        if self.video.scan_all:
            return False
        violated = [r for r in self.rule_ids if self.state[r].violated]
        if not violated:
            return False
        if len(violated) == len(self.rule_ids) or self.options.first_violation:
            return True
        return not any(self.state[r].open for r in self.rule_ids if r not in violated)

    # -- the verdict

    def _rule(self, rule_id: str) -> RuleVerdict:
        state = self.state[rule_id]
        if state.violated:
            frame, rule = state.violated[0]
            times = [round(f.time, 6) for f, _ in state.violated]
            return _at(rule, frame, violated_at=times)
        if state.undecided is not None:
            frame, rule = state.undecided
            return _at(rule, frame, reason=f"at {frame.time:.2f} s: {rule.reason or 'undecided'}")
        if self.stopped_at is not None:
            return RuleVerdict(
                rule_id=rule_id, outcome="skipped",
                reason=f"not judged after {self.stopped_at:.2f} s: the clip was unsafe by "
                f"then, so sampling stopped (--scan-all judges every sampled frame); not "
                f"violated in the {state.judged} frame(s) judged before",
            )
        if state.skipped is not None:
            frame, rule = state.skipped
            return _at(rule, frame)
        capped = self.sampler.capped_at
        if capped is not None:
            return RuleVerdict(
                rule_id=rule_id, outcome="undecided",
                reason=f"only the clip's first {capped:.2f} s were judged: --max-frames "
                f"{self.video.max_frames} was reached (its duration was not known to spread "
                f"the samples); not violated in the {state.judged} frame(s) judged",
            )
        for found in (state.not_violated, state.irrelevant):
            if found is not None:
                return _at(found[1], found[0])
        return RuleVerdict(rule_id=rule_id, outcome="undecided", reason="no frame was judged")

    def _verdict(self) -> Verdict:
        rules = [self._rule(rule_id) for rule_id in self.rule_ids]
        probe = self.clip.probe
        first = next((f for f in self.applied if f.source is None), None)
        timings = {k: float(v) for k, v in self.timings.items() if k != "total"}
        timings["decode"] = self.decode_s
        verdict = make_verdict(
            _Loaded(self.name, probe.sha256),
            rules,
            backend=self.backend,
            lock=self.lock,
            calls=self.calls,
            timings=timings,
            fill=self.options.fill_used(self.setup.locator),
            size=first.size if first is not None else None,
        )
        deciding = deciding_frame(verdict.outcome, rules)
        sampler = self.sampler
        info = ClipInfo(
            format=probe.format,
            codec=probe.codec,
            width=probe.width,
            height=probe.height,
            duration=round(probe.duration, 6) if probe.duration is not None else None,
            frame_rate=round(probe.frame_rate, 6) if probe.frame_rate else None,
            frames=probe.frames,
            fps=sampler.fps,
            interval=round(sampler.interval, 6) if sampler.interval is not None else None,
            max_frames=sampler.max_frames,
            sampled=self.sampled,
            judged=sum(f.source is None for f in self.applied),
            reused=sum(f.source is not None for f in self.applied),
            scenes=len({f.pick.scene for f in self.applied}),
            stopped_at=round(self.stopped_at, 6) if self.stopped_at is not None else None,
            capped_at=sampler.capped_at,
            changes_dropped=sampler.changes_dropped,
        )
        return verdict.model_copy(update={
            "frame": deciding[0] if deciding else None,
            "time": deciding[1] if deciding else None,
            "clip": info,
        })


def _at(rule: RuleVerdict, frame: _Frame, **update: Any) -> RuleVerdict:
    """`rule` as the clip's verdict for it, its evidence from `frame`."""
    return rule.model_copy(update={"frame": frame.index, "time": round(frame.time, 6), **update})
