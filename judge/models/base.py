"""The one model interface every stage of judge uses.

A back end answers two kinds of request:

* `yes_no(queries)`: for each query, the probabilities of "Yes" and "No" as the next
  token, each summed over spelling variants ("Yes", " Yes", "yes", "YES", ...). The prompt
  is one user turn laid out [instructions][image][question], so a prefix cache serves
  the instructions and the image's tokens to every question about the same image. A
  query with `image=None` carries no image tokens at all (the language prior).
* `generate(chats, max_tokens, json_schema)`: text for multi-turn chats whose user turns
  may hold an image, with JSON-schema constrained output where the back end supports it.

Both are async so one event loop can keep many requests in flight; in-process back ends
run their batched forward passes in a worker thread.
"""

from __future__ import annotations

import abc
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from PIL import Image

# The spellings of each label whose probabilities are summed.
YES_VARIANTS: tuple[str, ...] = ("Yes", " Yes", "yes", " yes", "YES", " YES")
NO_VARIANTS: tuple[str, ...] = ("No", " No", "no", " no", "NO", " NO")


@dataclass(frozen=True)
class YesNoQuery:
    """One Yes/No question: [instructions][image or nothing][question]."""

    instructions: str
    question: str
    image: Image.Image | None = None
    # Optional name of the image, so back ends and logs can tell queries apart cheaply.
    image_key: str | None = None


@dataclass(frozen=True)
class YesNoResult:
    """P(Yes) and P(No) for one query.

    `m` is P(Yes) / (P(Yes) + P(No)). When neither label was among the returned
    probabilities, or the request failed, `m` is None and `missing`/`error` say why:
    a missing answer is never turned into 0.5.
    """

    p_yes: float
    p_no: float
    missing: bool = False
    error: str | None = None
    prompt_tokens: int = 0
    cached_tokens: int = 0

    @property
    def m(self) -> float | None:
        total = self.p_yes + self.p_no
        if self.error is not None or self.missing or total <= 0.0 or math.isnan(total):
            return None
        return self.p_yes / total

    @classmethod
    def failed(cls, error: str) -> YesNoResult:
        return cls(p_yes=0.0, p_no=0.0, missing=True, error=error)


Role = Literal["system", "user", "assistant"]


@dataclass(frozen=True)
class Message:
    """One chat turn; `parts` are text and images in order."""

    role: Role
    parts: tuple[str | Image.Image, ...]

    @classmethod
    def user(cls, *parts: str | Image.Image) -> Message:
        return cls("user", tuple(parts))

    @classmethod
    def assistant(cls, text: str) -> Message:
        return cls("assistant", (text,))


Chat = Sequence[Message]


@dataclass(frozen=True)
class Generation:
    """Text generated for one chat, or the error that stopped it."""

    text: str
    error: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0


@dataclass
class CallStats:
    """Counters a back end keeps, read by verdicts and the benchmark."""

    yes_no_queries: int = 0
    generations: int = 0
    requests: int = 0
    retries: int = 0
    failures: int = 0
    prompt_tokens: int = 0
    cached_tokens: int = 0
    completion_tokens: int = 0
    extra: dict[str, float] = field(default_factory=dict)

    def count_yes_no(self, results: Sequence[YesNoResult]) -> None:
        self.yes_no_queries += len(results)
        for r in results:
            self.failures += r.error is not None
            self.prompt_tokens += r.prompt_tokens
            self.cached_tokens += r.cached_tokens

    def count_generations(self, results: Sequence[Generation]) -> None:
        self.generations += len(results)
        for g in results:
            self.failures += g.error is not None
            self.prompt_tokens += g.prompt_tokens
            self.completion_tokens += g.completion_tokens

    def snapshot(self) -> dict[str, Any]:
        data = {k: v for k, v in vars(self).items() if k != "extra"}
        data.update(self.extra)
        return data


class Backend(abc.ABC):
    """A multimodal model judge can query. Subclasses: one per back end."""

    #: registry name, e.g. "vllm-server", "vllm", "hf"
    kind: str = ""

    def __init__(self) -> None:
        self.stats = CallStats()

    @property
    @abc.abstractmethod
    def model_id(self) -> str:
        """The model's name or path, as recorded in verdicts."""

    @abc.abstractmethod
    async def yes_no(self, queries: Sequence[YesNoQuery]) -> list[YesNoResult]:
        """P(Yes)/P(No) for each query, in order. Per-query failures come back as
        `YesNoResult.failed`; only a failure of the whole back end raises BackendError."""

    @abc.abstractmethod
    async def generate(
        self,
        chats: Sequence[Chat],
        max_tokens: int,
        json_schema: dict[str, Any] | None = None,
    ) -> list[Generation]:
        """Greedy (temperature 0) text for each chat, in order."""

    @property
    def supports_json_schema(self) -> bool:
        """True when `generate` enforces `json_schema` (constrained decoding)."""
        return False

    @property
    def max_image_pixels(self) -> int | None:
        """The model's pixel budget: images are resized once to fit it before sending."""
        return None

    async def check(self) -> list[tuple[str, bool, str]]:
        """Self-test for `judge doctor`: (check, passed, detail or fix) rows."""
        return []

    async def aclose(self) -> None:  # noqa: B027 - optional hook, most back ends hold nothing
        """Release connections, engines and threads."""


class WrappedBackend(Backend):
    """A back end in front of another (`inner`): it answers as `inner` does, in its name,
    for what it does not override. Subclasses wrap the queries (record them, share
    answers)."""

    def __init__(self, inner: Backend) -> None:
        super().__init__()
        self.inner = inner
        self.kind = inner.kind  # verdicts record the real back end

    @property
    def model_id(self) -> str:
        return self.inner.model_id

    @property
    def supports_json_schema(self) -> bool:
        return self.inner.supports_json_schema

    @property
    def max_image_pixels(self) -> int | None:
        return self.inner.max_image_pixels

    async def yes_no(self, queries: Sequence[YesNoQuery]) -> list[YesNoResult]:
        return await self.inner.yes_no(queries)

    async def generate(
        self,
        chats: Sequence[Chat],
        max_tokens: int,
        json_schema: dict[str, Any] | None = None,
    ) -> list[Generation]:
        return await self.inner.generate(chats, max_tokens, json_schema)

    async def check(self) -> list[tuple[str, bool, str]]:
        return await self.inner.check()

    async def aclose(self) -> None:
        await self.inner.aclose()
