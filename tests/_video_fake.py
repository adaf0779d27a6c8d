"""A fake back end for the fast video tests: it sees which toy colours a frame holds.

`PaletteBackend` answers the toy constitution's questions the way a perfect model would:
"a <colour> shape" is Yes (M 0.95) when enough pixels of the frame lie near that toy
colour, else No (M 0.05); the language prior is 0.5; a relevance question ("Topic: red
or blue shapes") is Yes when a colour it names is there. It counts what it was asked per
kind and per image key, so tests can prove which frames reached the model and how often
the relevance scan ran. `fail_keys` makes the answers for some frames go missing (an
undecided frame), `raise_keys` makes a whole request fail (a model failure).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from judge.models.base import Backend, Chat, Generation, YesNoQuery, YesNoResult
from judge.toy.world import COLOURS

_STATEMENT = re.compile(r"^Statement:\s*a (\w+) shape", re.MULTILINE)
_TOPIC = re.compile(r"^Topic:\s*(.*?)\s*$", re.MULTILINE)
TOY_POLICY = Path(__file__).resolve().parents[1] / "constitutions" / "toy.yaml"


def colours_in(image: Image.Image, share: float = 0.01) -> set[str]:
    """The toy colours covering at least `share` of the image."""
    pixels = np.asarray(image.convert("RGB"), dtype=np.int32).reshape(-1, 3)
    found = set()
    for name, rgb in COLOURS.items():
        close = np.abs(pixels - np.array(rgb)).max(axis=1) < 60
        if close.mean() >= share:
            found.add(name)
    return found


class PaletteBackend(Backend):
    kind = "fake-palette"

    def __init__(
        self, *, fail_keys: Sequence[str] = (), raise_keys: Sequence[str] = (), **_: Any
    ) -> None:
        super().__init__()
        self.asked: Counter[str] = Counter()  # kind -> queries
        self.keys: Counter[str] = Counter()  # image key -> queries about it
        self.fail_keys = set(fail_keys)
        self.raise_keys = set(raise_keys)
        self._seen: dict[str, set[str]] = {}  # image key -> colours (each image read once)

    @property
    def model_id(self) -> str:
        return "fake-palette"

    async def yes_no(self, queries: Sequence[YesNoQuery]) -> list[YesNoResult]:
        from judge.errors import BackendError

        if any(q.image_key in self.raise_keys for q in queries):
            raise BackendError("the fake model is down for this frame")
        out = []
        for q in queries:
            if q.image is None:
                self.asked["prior"] += 1
                out.append(YesNoResult(0.5, 0.5))
                continue
            key = str(q.image_key)
            self.keys[key.split("#")[0]] += 1
            if any(key.startswith(k) for k in self.fail_keys):
                out.append(YesNoResult(0.0, 0.0, missing=True))
                continue
            present = self._seen.get(key)
            if present is None:
                present = self._seen[key] = colours_in(q.image)
            topic = _TOPIC.search(q.question)
            if topic:
                self.asked["relevance"] += 1
                named = {c for c in COLOURS if c in topic.group(1)}
                out.append(YesNoResult(0.9, 0.1) if named & present else YesNoResult(0.1, 0.9))
                continue
            self.asked["visibility"] += 1
            match = _STATEMENT.search(q.question)
            yes = bool(match) and match.group(1) in present
            out.append(YesNoResult(0.95, 0.05) if yes else YesNoResult(0.05, 0.95))
        return out

    async def generate(
        self, chats: Sequence[Chat], max_tokens: int, json_schema: dict[str, Any] | None = None
    ) -> list[Generation]:
        raise AssertionError("the palette back end never leaves a statement uncertain")


def frame_keys(backend: PaletteBackend) -> list[int]:
    """The frame numbers the model was asked about, sorted."""
    return sorted({int(k.split("@")[1]) for k in backend.keys if "@" in k})


def frame(*colours: str, side: int = 64) -> Image.Image:
    """A light grey frame with a square of each toy colour named (side / 4 wide)."""
    image = Image.new("RGB", (side, side), (215, 215, 215))
    block = side // 4
    for i, name in enumerate(colours):
        x = (i % 2) * (side // 2) + block // 2
        y = (i // 2) * (side // 2) + block // 2
        image.paste(COLOURS[name], (x, y, x + block, y + block))
    return image


def clip_frames(
    segments: Sequence[tuple[Sequence[str], float]], fps: int = 10, side: int = 64
) -> list[Image.Image]:
    """Frames of a clip made of (colours, seconds) segments at `fps`."""
    out: list[Image.Image] = []
    ends = 0.0
    for colours, seconds in segments:
        picture = frame(*colours, side=side)
        ends += seconds
        out += [picture] * (round(ends * fps) - len(out))
    return out


def write(path: Path, segments: Sequence[tuple[Sequence[str], float]], **kwargs: Any) -> Path:
    """Write a clip of (colours, seconds) segments (judge.toy.clips.write_clip)."""
    from judge.toy.clips import write_clip

    fps = int(kwargs.pop("fps", 10))
    return write_clip(clip_frames(segments, fps=fps, **kwargs), path, fps=fps)
