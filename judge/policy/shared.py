"""A back end that answers each question once: two policy versions judged through it
ask the model only what they do not both ask.

`SharedAnswers` wraps a back end and keeps every answer, keyed by what the model sees:
the instructions, the question and the image's pixels for a Yes/No query; every turn's
text and pixels, the token limit and the schema for a generation. A question asked again
(by the other version, about the same image, crop or masked copy) is answered from the
kept answer, never sent twice. Failed answers are not kept, so a failure is asked again.

Its `stats` count what the judges asked; `sent` counts what went to the model. Judged
once each with plain back ends, the two versions would have sent what they asked.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from typing import Any

from PIL import Image

from judge.models.base import (
    Backend,
    CallStats,
    Chat,
    Generation,
    WrappedBackend,
    YesNoQuery,
    YesNoResult,
)


def _pixels(image: Image.Image | None) -> str | None:
    if image is None:
        return None
    digest = hashlib.blake2b(digest_size=16)
    digest.update(f"{image.mode}:{image.size}".encode())
    digest.update(image.tobytes())
    return digest.hexdigest()


def _chat_key(chat: Chat) -> tuple[Any, ...]:
    return tuple(
        (m.role, tuple(p if isinstance(p, str) else _pixels(p) for p in m.parts)) for m in chat
    )


class SharedAnswers(WrappedBackend):
    """`inner`, with every answer kept and reused (see the module docstring)."""

    def __init__(self, inner: Backend) -> None:
        super().__init__(inner)
        self.sent = CallStats()
        self._yes_no: dict[tuple[str, str, str | None], YesNoResult] = {}
        self._generated: dict[tuple[Any, ...], Generation] = {}

    async def yes_no(self, queries: Sequence[YesNoQuery]) -> list[YesNoResult]:
        keys = [(q.instructions, q.question, _pixels(q.image)) for q in queries]
        todo: dict[tuple[str, str, str | None], YesNoQuery] = {}
        for key, query in zip(keys, queries, strict=True):
            if key not in self._yes_no:
                todo.setdefault(key, query)
        fresh: dict[tuple[str, str, str | None], YesNoResult] = {}
        if todo:
            answers = await self.inner.yes_no(list(todo.values()))
            self.sent.count_yes_no(answers)
            fresh = dict(zip(todo, answers, strict=True))
            self._yes_no.update({k: a for k, a in fresh.items() if a.m is not None})
        out = [fresh[k] if k in fresh else self._yes_no[k] for k in keys]
        self.stats.yes_no_queries += len(out)
        return out

    async def generate(
        self, chats: Sequence[Chat], max_tokens: int, json_schema: dict[str, Any] | None = None
    ) -> list[Generation]:
        schema = json.dumps(json_schema, sort_keys=True) if json_schema is not None else None
        keys = [(_chat_key(chat), max_tokens, schema) for chat in chats]
        todo: dict[tuple[Any, ...], Chat] = {}
        for key, chat in zip(keys, chats, strict=True):
            if key not in self._generated:
                todo.setdefault(key, chat)
        fresh: dict[tuple[Any, ...], Generation] = {}
        if todo:
            texts = await self.inner.generate(list(todo.values()), max_tokens, json_schema)
            self.sent.count_generations(texts)
            fresh = dict(zip(todo, texts, strict=True))
            self._generated.update({k: g for k, g in fresh.items() if g.error is None})
        out = [fresh[k] if k in fresh else self._generated[k] for k in keys]
        self.stats.generations += len(out)
        return out

    @property
    def asked(self) -> int:
        """Model calls the judges asked for (Yes/No queries and generations)."""
        return self.stats.yes_no_queries + self.stats.generations

    @property
    def sent_calls(self) -> int:
        """Model calls that went to the model."""
        return self.sent.yes_no_queries + self.sent.generations

