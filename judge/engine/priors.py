"""The language prior M(None, c): computed once per (model, prompt version, statement).

It depends only on the model, the prompt and the statement, never on the image, so it is
kept in memory and in the SQLite store, and a statement asked by many images at once
is sent to the model once (the others wait on the same future). Failed answers are not
cached: the next image asks again.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import dataclass

from judge import queries
from judge.models.base import Backend
from judge.store import Store


@dataclass(frozen=True)
class Prior:
    m: float | None
    error: str | None = None


def prompt_version() -> str:
    """The prompt versions a prior depends on, as stored with it."""
    v = queries.visibility_versions()
    return "+".join(f"{name}@{number}" for name, number in sorted(v.items()))


class PriorCache:
    """M(None, c) for statements, from memory, the store, or one batched model call."""

    def __init__(self, backend: Backend, store: Store | None) -> None:
        self.backend = backend
        self.store = store
        self.version = prompt_version()
        self._known: dict[str, float] = {}
        self._pending: dict[str, asyncio.Future[Prior]] = {}

    async def get(self, statements: Iterable[str]) -> tuple[dict[str, Prior], int]:
        """Priors for `statements`, and how many model queries this call made."""
        wanted = list(dict.fromkeys(statements))
        # Futures of statements another image is already asking about, taken now so
        # their results are seen even after that image removes them from `_pending`.
        waiting = {s: self._pending[s] for s in wanted if s in self._pending}
        missing = [s for s in wanted if s not in self._known and s not in waiting]
        if missing and self.store is not None:
            found = self.store.get_priors(self.backend.model_id, self.version, missing)
            self._known.update(found)
            missing = [s for s in missing if s not in found]
        if missing:
            loop = asyncio.get_running_loop()
            mine = {s: loop.create_future() for s in missing}
            self._pending.update(mine)
            waiting.update(mine)
            try:
                await self._ask(missing, mine)
            finally:
                for s in missing:
                    self._pending.pop(s, None)
        out: dict[str, Prior] = {}
        for s in wanted:
            if s in self._known:
                out[s] = Prior(self._known[s])
            else:
                out[s] = await waiting[s]
        return out, len(missing)

    async def _ask(self, statements: list[str], futures: dict[str, asyncio.Future[Prior]]) -> None:
        try:
            results = await self.backend.yes_no([queries.visibility_query(s) for s in statements])
        except BaseException as error:
            for future in futures.values():
                if not future.done():
                    future.set_result(Prior(None, f"prior failed: {error}"))
            raise
        fresh: dict[str, tuple[float, float, float]] = {}
        for s, result in zip(statements, results, strict=True):
            m = result.m
            if m is None:
                why = result.error or "neither Yes nor No among the returned probabilities"
                futures[s].set_result(Prior(None, f"prior unavailable: {why}"))
            else:
                self._known[s] = m
                fresh[s] = (m, result.p_yes, result.p_no)
                futures[s].set_result(Prior(m))
        if fresh and self.store is not None:
            self.store.put_priors(self.backend.model_id, self.version, fresh)
