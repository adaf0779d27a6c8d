"""A scripted back end for decision-table tests of the engine.

Answers are keyed by (statement, image key): the statement is read from the question's
"Statement: ..." line (a relevance question's "Topic: X" line is keyed "topic: X", so it
never answers for a visibility statement of the same words), and the image key is
`YesNoQuery.image_key` (None for the language prior). Anything asked that was not
scripted raises `UnscriptedCall` at once, so a test fails loudly when the engine makes a
call it should not; every call is recorded in `calls` so tests can also assert what was
asked, and in which batches.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from judge.models.base import Backend, Chat, Generation, YesNoQuery, YesNoResult

_STATEMENT = re.compile(r"^Statement:\s*(.*?)\s*$", re.MULTILINE)
_TOPIC = re.compile(r"^Topic:\s*(.*?)\s*$", re.MULTILINE)

Key = tuple[str, str | None]
# A scripted Yes/No answer: M itself, a full result, or None for a missing answer.
Answer = float | YesNoResult | None


class UnscriptedCall(AssertionError):
    """The engine asked the scripted back end something the test did not script."""


@dataclass
class Call:
    kind: str  # "yes_no" or "generate"
    batch: int  # which back-end request this belonged to
    statement: str
    image_key: str | None
    turn: int = 0  # generate: 1 reasoning, 2 summary (3, 4, ... retries)


def statement_of(text: str) -> str:
    """The statement a rendered question is about (its "Statement:" line), or
    "topic: X" for a relevance question about topic X."""
    match = _STATEMENT.search(text)
    if match:
        return match.group(1)
    topic = _TOPIC.search(text)
    return f"topic: {topic.group(1)}" if topic else text.strip()


def _result(answer: Answer) -> YesNoResult:
    if answer is None:
        return YesNoResult(p_yes=0.0, p_no=0.0, missing=True)
    if isinstance(answer, YesNoResult):
        return answer
    return YesNoResult(p_yes=float(answer), p_no=1.0 - float(answer))


class ScriptedBackend(Backend):
    """A fake `Backend` that answers only what it was told to.

    Args:
        yes_no: (statement, image key or None) -> M, a YesNoResult, or None (missing);
            the image key "*" answers for any image without its own entry.
        cascades: (statement, image key) -> the texts the cascade gets, in order: the
            reasoning, then the summary, then any retries. A text may be a `Generation`
            (e.g. one with an error).
        model: the model id reported.
        max_pixels: the pixel budget reported.
    """

    kind = "scripted"

    def __init__(
        self,
        yes_no: Mapping[Key, Answer] | None = None,
        cascades: Mapping[Key, Sequence[str | Generation]] | None = None,
        *,
        model: str = "scripted-model",
        max_pixels: int | None = None,
        json_schema: bool = True,
    ) -> None:
        super().__init__()
        self.answers: dict[Key, Answer] = dict(yes_no or {})
        self.cascades: dict[Key, list[str | Generation]] = {
            k: list(v) for k, v in (cascades or {}).items()
        }
        self._model = model
        self._max_pixels = max_pixels
        self._json_schema = json_schema
        self.calls: list[Call] = []
        self.batches = 0
        self._served: dict[Key, int] = {}
        self.closed = False

    @property
    def model_id(self) -> str:
        return self._model

    @property
    def supports_json_schema(self) -> bool:
        return self._json_schema

    @property
    def max_image_pixels(self) -> int | None:
        return self._max_pixels

    def script(self, answers: Mapping[Key, Answer]) -> None:
        self.answers.update(answers)

    async def yes_no(self, queries: Sequence[YesNoQuery]) -> list[YesNoResult]:
        self.batches += 1
        self.stats.requests += 1
        out: list[YesNoResult] = []
        for query in queries:
            key = (
                statement_of(query.question),
                query.image_key if query.image is not None else None,
            )
            if query.image is not None and query.image_key is None:
                raise UnscriptedCall(f"query with an image but no image_key: {key[0]!r}")
            self.calls.append(Call("yes_no", self.batches, key[0], key[1]))
            if key not in self.answers and key[1] is not None:
                key = (key[0], "*")
            if key not in self.answers:
                raise UnscriptedCall(f"unscripted yes/no query {key!r}")
            self.stats.yes_no_queries += 1
            out.append(_result(self.answers[key]))
        return out

    async def generate(
        self, chats: Sequence[Chat], max_tokens: int, json_schema: dict[str, Any] | None = None
    ) -> list[Generation]:
        self.batches += 1
        self.stats.requests += 1
        out: list[Generation] = []
        for chat in chats:
            first = chat[0]
            text = "\n".join(p for p in first.parts if isinstance(p, str))
            has_image = any(not isinstance(p, str) for p in first.parts)
            key = (statement_of(text), self._image_key(chat) if has_image else None)
            served = self._served.get(key, 0)
            script = self.cascades.get(key)
            self.calls.append(Call("generate", self.batches, key[0], key[1], turn=served + 1))
            if script is None or served >= len(script):
                raise UnscriptedCall(f"unscripted generation #{served + 1} for {key!r}")
            self._served[key] = served + 1
            self.stats.generations += 1
            item = script[served]
            out.append(item if isinstance(item, Generation) else Generation(text=item))
        return out

    def _image_key(self, chat: Chat) -> str | None:
        # Chats carry PIL images, not keys; the engine tags each image it sends with
        # `info["judge_key"]` so this fake can tell them apart.
        for message in chat:
            for part in message.parts:
                if not isinstance(part, str):
                    return str(part.info.get("judge_key"))
        return None

    def calls_of(self, kind: str) -> list[Call]:
        return [c for c in self.calls if c.kind == kind]

    def asked(self, kinds: Iterable[str] = ("yes_no", "generate")) -> list[Key]:
        return [(c.statement, c.image_key) for c in self.calls if c.kind in set(kinds)]

    async def aclose(self) -> None:
        self.closed = True
