"""What the two in-process back ends (transformers, the vLLM engine) share.

Both hold one model in this process: its Yes/No label tokens found with its own tokenizer,
one lock so a single forward pass runs at a time, and coalescers that gather the queries of
concurrent callers into batches run in a worker thread (the event loop stays free). A
subclass supplies the batch functions and `prompt_token_ids`.
"""

from __future__ import annotations

import abc
import threading
from collections.abc import Callable, Sequence
from typing import Any

from judge.models._batch import Coalescer
from judge.models._labels import LabelTokens, find_label_tokens
from judge.models.base import Backend, Chat, Generation, YesNoQuery, YesNoResult

# One generation request: the chat, its token budget and the JSON schema to enforce.
GenRequest = tuple[Chat, int, "dict[str, Any] | None"]


class InProcessBackend(Backend):
    def __init__(self, model: str, encode: Callable[[str], list[int]], max_batch: int) -> None:
        super().__init__()
        self._model_name = model
        self.labels: LabelTokens = find_label_tokens(encode, where=model)
        self._lock = threading.Lock()
        self._yes_no_batches: Coalescer[YesNoQuery, YesNoResult] = Coalescer(
            self._yes_no_batch, max_batch
        )
        self._gen_batches: Coalescer[GenRequest, Generation] = Coalescer(
            self._generate_batch, max_batch
        )

    @property
    def model_id(self) -> str:
        return self._model_name

    @abc.abstractmethod
    def _yes_no_batch(self, queries: list[YesNoQuery]) -> list[YesNoResult]:
        """One batch of Yes/No queries (blocking; a failed query comes back failed)."""

    @abc.abstractmethod
    def _generate_batch(self, requests: list[GenRequest]) -> list[Generation]:
        """One batch of greedy generations (blocking)."""

    @abc.abstractmethod
    def prompt_token_ids(self, query: YesNoQuery) -> list[int]:
        """The token ids the model sees for `query` (for tests and `judge doctor`)."""

    async def yes_no(self, queries: Sequence[YesNoQuery]) -> list[YesNoResult]:
        results = await self._yes_no_batches.submit(queries)
        self.stats.requests += 1
        self.stats.count_yes_no(results)
        return results

    async def generate(
        self,
        chats: Sequence[Chat],
        max_tokens: int,
        json_schema: dict[str, Any] | None = None,
    ) -> list[Generation]:
        results = await self._gen_batches.submit([(c, max_tokens, json_schema) for c in chats])
        self.stats.requests += 1
        self.stats.count_generations(results)
        return results

    def _checks(self, model: str, logprobs: str) -> list[tuple[str, bool, str]]:
        """`judge doctor` rows: the model, its label tokens, how label probabilities are
        read, and whether an image really adds tokens (a processor may drop it)."""
        from PIL import Image

        found = ", ".join(f"{s!r}={i}" for i, s in {**self.labels.yes, **self.labels.no}.items())
        # An ordinary 224-pixel image: a smaller one than a family's tile can fail where
        # real images pass (Llama 4 on vLLM's CPU build kills its engine on one).
        image = Image.new("RGB", (224, 224), (200, 30, 30))
        a = self.prompt_token_ids(YesNoQuery("Answer Yes or No.", "Is it red?", image))
        b = self.prompt_token_ids(YesNoQuery("Answer Yes or No.", "Is it red?"))
        vision = (
            f"an image adds {len(a) - len(b)} prompt tokens"
            if len(a) > len(b)
            else "the image added no tokens: the processor drops images"
        )
        return [
            ("model", True, model),
            ("labels", True, f"single tokens: {found}"),
            ("logprobs", True, logprobs),
            ("vision", len(a) > len(b), vision),
        ]
