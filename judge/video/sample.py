"""Which frames of a clip are judged, and which of them show the same thing.

Every decoded frame is reduced to a *thumbnail*: 32 x 32 cells, each the mean RGB of its
block of the frame (area averaging, so codec noise averages out). Two measures compare
thumbnails, both on the 0-255 scale: the mean absolute difference over all cells and
channels (a global change: a cut, a fade, a pan) and the largest difference of any one
cell and channel (a local change: a small object that appears, or changes colour).
Colour is kept on purpose: a grey thumbnail cannot tell a red shape from a green one of
the same brightness, and colour is exactly what a policy may be about.

* **Near-duplicate** (`near`): mean < 2 and every cell < 24. Such a frame takes the answers
  of the judged frame it is near to, with no model call. A 28-px object in a 224-px
  frame covers whole cells and moves them by far more than 24, so a small object that
  appears is never "near"; codec noise (H.264 at CRF 18-28) moves cells by a few units.
  Frames are compared with the frames judged for themselves, never with one that reused
  another's answers, so a slow drift cannot creep past the threshold step by step.
* **Scene change** (`changed`): mean > 12 or some cell > 64. A frame that changed from
  the frame decoded before it is sampled on top of the regular grid (at most one such
  frame per quarter sampling interval: a flicker or fast motion cannot take every frame),
  so a short segment between two grid points is still seen. A sampled frame that changed
  from its scene's first frame starts a new *scene*; the relevance scan runs once per
  scene, on its first frame (`judge.engine.clip`).

Sampling (`Sampler`): the first frame, then the first frame at or after each multiple of
the interval (1 / fps), then the change frames. When the clip's duration is known and
fps x duration exceeds `max_frames`, the grid is widened to duration / max_frames, so the
samples still span the whole clip; change frames take only what the grid leaves of
`max_frames`. If the grid itself runs out (a duration the header did not give), the
sampler stops and says where (`capped_at`): the clip can then not be "safe".
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
from PIL import Image

THUMB_SIDE = 32
NEAR_MEAN = 2.0
NEAR_CELL = 24.0
CHANGE_MEAN = 12.0
CHANGE_CELL = 64.0
# Change frames taken between two grid points, at most: a flicker or fast motion that
# changes every frame cannot take every frame.
CHANGES_PER_INTERVAL = 3

Why = Literal["first", "interval", "change", "every"]
Thumb = np.ndarray


def thumbnail(image: Image.Image) -> Thumb:
    """The 32 x 32 x 3 float32 thumbnail of an RGB image (block means)."""
    small = image.convert("RGB").resize((THUMB_SIDE, THUMB_SIDE), Image.Resampling.BOX)
    return np.asarray(small, dtype=np.float32)


def as_thumb(pixels: np.ndarray) -> Thumb:
    """A (32, 32, 3) uint8 array (a decoder's own area-averaged reduction) as a thumbnail."""
    return np.asarray(pixels, dtype=np.float32).reshape(THUMB_SIDE, THUMB_SIDE, 3)


def distance(a: Thumb, b: Thumb) -> tuple[float, float]:
    """(mean, largest) absolute difference of two thumbnails, on the 0-255 scale."""
    diff = np.abs(a - b)
    return float(diff.mean()), float(diff.max())


def near(a: Thumb, b: Thumb) -> bool:
    """Whether two frames show the same thing: one may take the other's answers."""
    mean, cell = distance(a, b)
    return mean < NEAR_MEAN and cell < NEAR_CELL


def changed(a: Thumb, b: Thumb) -> bool:
    """Whether the picture changed between two frames (a cut, or something appeared)."""
    mean, cell = distance(a, b)
    return mean > CHANGE_MEAN or cell > CHANGE_CELL


def nearest(thumb: Thumb, judged: Sequence[Thumb]) -> int | None:
    """The index of the judged frame `thumb` is nearest to, if it is near one (all are
    compared at once: a few hundred thumbnails cost a millisecond)."""
    if not judged:
        return None
    diff = np.abs(np.stack(judged) - thumb[None])
    means = diff.mean(axis=(1, 2, 3))
    cells = diff.max(axis=(1, 2, 3))
    ok = np.flatnonzero((means < NEAR_MEAN) & (cells < NEAR_CELL))
    if not ok.size:
        return None
    return int(ok[np.argmin(means[ok])])


@dataclass
class Pick:
    """A sampled frame: why it was taken and which scene it belongs to."""

    why: Why
    scene: int


@dataclass
class Sampler:
    """Decides, frame by frame in decoding order, which frames are judged.

    Args:
        fps: frames per second on the regular grid; None takes every frame.
        max_frames: most frames taken.
        duration: the clip's duration in seconds, when known (to widen the grid).
    """

    fps: float | None
    max_frames: int
    duration: float | None = None
    interval: float | None = field(init=False, default=None)
    widened: bool = field(init=False, default=False)
    taken: int = field(init=False, default=0)
    scenes: int = field(init=False, default=0)
    changes_dropped: int = field(init=False, default=0)
    capped_at: float | None = field(init=False, default=None)
    _next_due: float = field(init=False, default=0.0)
    _previous: Thumb | None = field(init=False, default=None, repr=False)
    _scene_key: Thumb | None = field(init=False, default=None, repr=False)
    _changes: int = field(init=False, default=0)

    def __post_init__(self) -> None:
        if self.fps is not None:
            self.interval = 1.0 / self.fps
            span = self.duration
            if span is not None and span > 0 and span / self.interval > self.max_frames:
                # Spread the samples over the whole clip (k * interval < duration for
                # k < max_frames); the tiny margin keeps rounding from adding one.
                self.interval = span / self.max_frames * (1 + 1e-9)
                self.widened = True

    def offer(self, time: float, thumb: Thumb) -> Pick | None:
        """Whether the frame at `time` (seconds) with `thumb` is taken, and as what."""
        previous, self._previous = self._previous, thumb
        why = self._why(time, thumb, previous)
        if why is None:
            return None
        if self.taken >= self.max_frames:
            if why == "change":
                self.changes_dropped += 1
            elif self.capped_at is None:
                self.capped_at = time
            return None
        self.taken += 1
        if self._scene_key is None or changed(self._scene_key, thumb):
            self._scene_key = thumb
            self.scenes += 1
        return Pick(why, self.scenes - 1)

    def _why(self, time: float, thumb: Thumb, previous: Thumb | None) -> Why | None:
        if self.interval is None:
            return "every"
        if self.taken == 0 and self.capped_at is None:
            self._next_due = time + self.interval
            self._changes = 0
            return "first"
        eps = 1e-6
        if time >= self._next_due - eps:
            while self._next_due <= time + eps:
                self._next_due += self.interval
            self._changes = 0
            return "interval"
        if previous is None or not changed(previous, thumb):
            return None
        if self._changes >= CHANGES_PER_INTERVAL or not self._budget_left():
            self.changes_dropped += 1
            return None
        self._changes += 1
        return "change"

    def _budget_left(self) -> bool:
        """Whether a change frame leaves room for the grid's remaining samples."""
        assert self.interval is not None
        remaining = 0
        if self.duration is not None and self.duration > self._next_due:
            remaining = math.ceil((self.duration - self._next_due) / self.interval)
        return self.taken + remaining + 1 <= self.max_frames
