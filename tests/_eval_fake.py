"""A rule-following fake back end for `judge eval` tests that need no model.

It reads an image's dominant colour and answers "is <colour> visible" questions the way a
perfect model would, except that it is unsure about green (so the cascade runs) and its
cascade rationale carries an HTML payload (for the report's escaping). Every call is
appended to the file named by $JUDGE_FAKE_CALL_LOG, one line per query ("kind image-key"),
so a test in another process can count what was asked; $JUDGE_FAKE_DELAY slows each
request, so a run can be killed half-way.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
from collections.abc import Sequence
from typing import Any

from PIL import Image

from judge.models.base import Backend, Chat, Generation, YesNoQuery, YesNoResult

PAYLOAD = "<script>alert('rationale')</script>"
_STATEMENT = re.compile(r"Statement:\s*(.*)")
_COLOURS = {"red": (255, 0, 0), "blue": (0, 0, 255), "green": (0, 255, 0)}


def dominant(image: Image.Image) -> str:
    r, g, b = image.convert("RGB").resize((1, 1)).getpixel((0, 0))  # type: ignore[misc]
    return min(
        _COLOURS,
        key=lambda c: sum((x - y) ** 2 for x, y in zip(_COLOURS[c], (r, g, b), strict=True)),
    )


def visible_m(statement: str, image: Image.Image) -> float:
    colour = dominant(image)
    if colour not in statement:
        return 0.05
    return 0.7 if colour == "green" else 0.95  # green: uncertain -> cascade


class ColourBackend(Backend):
    kind = "fake-colour"

    def __init__(self, model: str = "fake-colour-model", api_key: Any = None, **_: Any) -> None:
        super().__init__()
        self._model = model
        self._log = os.environ.get("JUDGE_FAKE_CALL_LOG")
        self._delay = float(os.environ.get("JUDGE_FAKE_DELAY", "0"))

    @property
    def model_id(self) -> str:
        return self._model

    def _record(self, kind: str, key: str | None) -> None:
        if self._log:
            fd = os.open(self._log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                os.write(fd, f"{kind} {key or '-'}\n".encode())
            finally:
                os.close(fd)

    async def yes_no(self, queries: Sequence[YesNoQuery]) -> list[YesNoResult]:
        if self._delay:
            await asyncio.sleep(self._delay)
        out = []
        for q in queries:
            self.stats.yes_no_queries += 1
            self._record("yes_no", q.image_key)
            match = _STATEMENT.search(q.question)
            if q.image is None:
                m = 0.5  # the language prior
            elif match:
                m = visible_m(match.group(1), q.image)
            else:  # a baseline's generic question: "unsafe" if not green
                m = 0.2 if dominant(q.image) == "green" else 0.8
            out.append(YesNoResult(p_yes=m, p_no=1.0 - m))
        return out

    async def generate(
        self, chats: Sequence[Chat], max_tokens: int, json_schema: dict[str, Any] | None = None
    ) -> list[Generation]:
        if self._delay:
            await asyncio.sleep(self._delay)
        out = []
        for chat in chats:
            self.stats.generations += 1
            images = [p for m in chat for p in m.parts if isinstance(p, Image.Image)]
            key = images[0].info.get("judge_key") if images else None
            self._record("generate", key)
            if len(chat) == 1:
                out.append(Generation(text="I look at the colours step by step."))
                continue
            green = bool(images) and dominant(images[0]) == "green"
            rationale = f"{PAYLOAD} the colour is {'green' if green else 'not green'}"
            rating = "No" if green else "Yes"
            out.append(Generation(text=json.dumps({"rating": rating, "rationale": rationale})))
        return out
