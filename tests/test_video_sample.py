"""Which frames of a clip are judged (judge.video.sample): the grid, scene changes, the
cap, scenes, and what counts as a near-duplicate."""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import pytest
from PIL import Image

from judge.video.sample import (
    CHANGES_PER_INTERVAL,
    Sampler,
    changed,
    near,
    nearest,
    thumbnail,
)
from tests._video_fake import frame


def thumbs(*colours: str) -> np.ndarray:
    return thumbnail(frame(*colours, side=224))


def run(sampler: Sampler, frames: list[tuple[float, np.ndarray]]) -> list[tuple[float, str, int]]:
    out = []
    for time, thumb in frames:
        pick = sampler.offer(time, thumb)
        if pick is not None:
            out.append((round(time, 3), pick.why, pick.scene))
    return out


def held(colours: tuple[str, ...], start: float, end: float, fps: int = 10) -> list[Any]:
    thumb = thumbs(*colours)
    return [(i / fps, thumb) for i in range(round(start * fps), round(end * fps))]


def test_the_grid_then_the_scene_changes() -> None:
    frames = held((), 0, 2.3) + held(("red",), 2.3, 2.9) + held((), 2.9, 5.0)
    picks = run(Sampler(1.0, 300, 5.0), frames)
    assert picks == [
        (0.0, "first", 0), (1.0, "interval", 0), (2.0, "interval", 0),
        (2.3, "change", 1),  # the flash, between two grid points
        (2.9, "change", 2),  # back: a change again (scenes are not matched back)
        (3.0, "interval", 2), (4.0, "interval", 2),
    ]


def test_every_frame_without_fps() -> None:
    frames = held((), 0, 0.5)
    assert [why for _, why, _ in run(Sampler(None, 300, 0.5), frames)] == ["every"] * 5


def test_a_long_clip_is_sampled_more_sparsely_to_span_it() -> None:
    sampler = Sampler(1.0, 10, 100.0)
    picks = run(sampler, held((), 0, 100, fps=5))
    assert sampler.widened and sampler.interval == pytest.approx(10.0)
    assert [t for t, _, _ in picks] == [10.0 * k for k in range(10)]
    assert sampler.capped_at is None  # the whole clip is covered


def test_changes_take_only_what_the_grid_leaves() -> None:
    # Ten grid points fill max_frames: no room for a change frame.
    frames = held((), 0, 5.3) + held(("red",), 5.3, 5.6) + held((), 5.6, 10)
    sampler = Sampler(1.0, 10, 10.0)
    picks = run(sampler, frames)
    assert [why for _, why, _ in picks].count("change") == 0 and len(picks) == 10
    assert sampler.changes_dropped == 2
    # With room for them, they are taken.
    assert [why for _, why, _ in run(Sampler(1.0, 12, 10.0), frames)].count("change") == 2


def test_flicker_takes_a_bounded_number_of_frames() -> None:
    colours = [("red",), ("blue",)]
    frames = [(i / 10, thumbs(*colours[i % 2])) for i in range(30)]
    sampler = Sampler(1.0, 300, 3.0)
    picks = run(sampler, frames)
    per_second = [sum(1 for t, _, _ in picks if s <= t < s + 1) for s in range(3)]
    assert per_second == [1 + CHANGES_PER_INTERVAL] * 3
    assert sampler.changes_dropped == 30 - len(picks)


def test_without_a_duration_the_cap_says_where_sampling_stopped() -> None:
    sampler = Sampler(1.0, 3, None)
    picks = run(sampler, held((), 0, 6))
    assert [t for t, _, _ in picks] == [0.0, 1.0, 2.0]
    assert sampler.capped_at == 3.0


def test_near_and_changed() -> None:
    rng = np.random.default_rng(0)
    base = thumbs("red")
    noisy = np.clip(base + rng.normal(0, 1.5, base.shape), 0, 255)  # codec noise
    assert near(base, noisy) and not changed(base, noisy)
    # A small dot (28 px of 224, the toy world's smallest object) is never "near".
    dotted = frame("red", side=224)
    dotted.paste((35, 70, 215), (150, 150, 178, 178))
    assert not near(base, thumbnail(dotted)) and changed(base, thumbnail(dotted))
    # Colour counts, not brightness only: a red square turned green of similar grey.
    red, green = frame(side=224), frame(side=224)
    red.paste((200, 60, 60), (40, 40, 100, 100))
    green.paste((60, 120, 60), (40, 40, 100, 100))
    assert abs(np.mean(np.asarray(red.convert("L"))) - np.mean(np.asarray(green.convert("L")))) < 2
    assert not near(thumbnail(red), thumbnail(green))
    # H.264 at the toy clips' quality: each frame near its source.
    assert near(base, thumbnail(_jpeg_round_trip(frame("red", side=224))))


def test_nearest_finds_the_closest_judged_frame() -> None:
    judged = [thumbs("red"), thumbs("blue"), thumbs("red", "green")]
    assert nearest(thumbs("blue"), judged) == 1
    assert nearest(thumbs("yellow"), judged) is None
    assert nearest(thumbs("red"), []) is None


def _jpeg_round_trip(image: Image.Image) -> Image.Image:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=75)
    return Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")

