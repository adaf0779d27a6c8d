"""The judge actor of `judge batch`: one `Judge` per Ray actor, over batches of rows.

Ray Data calls `JudgeActor(spec)` once per actor (loading the model, or connecting to the
server fleet) and then `actor(batch)` for each batch. Every row comes back with an
outcome: an unreadable image, a model failure or any unexpected exception becomes that
row's error, never an exception out of `__call__` (which would abort the whole job and,
with `max_errored_blocks`, silently drop a whole block).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from judge.errors import ImageError
from judge.models.options import ModelOptions

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ActorSpec:
    """How each actor builds its `Judge`: `judge`'s options, pickled to workers.

    `lock` is the compiled constitution itself (workers need no policy file);
    `model_options` the model, back end, server (one URL or several comma-separated: a
    fleet), key, relevance scorer and locator, as for `judge`; `thresholds` already loaded.
    """

    lock: Any  # judge.constitution.schema.Lock
    model_options: ModelOptions = field(default_factory=ModelOptions)
    thresholds: Any = None  # judge.thresholds.Thresholds
    options: Any = None  # judge.engine.procedure.JudgeOptions
    store: str | None = None
    allow_unreviewed: bool = False
    concurrency: int = 8  # images in flight inside one actor
    extra: dict[str, Any] = field(default_factory=dict)


def result(
    image_id: str, sha256: str | None, outcome: str, verdict: Any, error: str | None
) -> dict[str, Any]:
    return {
        "id": image_id,
        "sha256": sha256,
        "outcome": outcome,
        "verdict": verdict.model_dump_json() if verdict is not None else None,
        "error": error,
    }


class JudgeActor:
    """Holds one `Judge`; turns a batch of loaded rows into result rows."""

    def __init__(self, spec: ActorSpec) -> None:
        from judge.engine.judge import Judge

        self.spec = spec
        self.judge = Judge(
            spec.lock,
            **spec.model_options.judge_kwargs(),
            thresholds=spec.thresholds,
            options=spec.options,
            store=spec.store,
            allow_unreviewed=spec.allow_unreviewed,
        )

    def __call__(self, batch: Any) -> dict[str, list[Any]]:
        rows = _rows(batch)
        out: list[dict[str, Any] | None] = [None] * len(rows)
        todo: list[int] = []
        for i, row in enumerate(rows):
            if row["skip"]:
                out[i] = result(row["id"], row["sha256"], "skipped", None, None)
            elif row["error"] is not None or row["data"] is None:
                reason = row["error"] or "no image bytes"
                verdict = _unreadable(row["id"], reason)
                out[i] = result(row["id"], row["sha256"], "error", verdict, reason)
            else:
                todo.append(i)
        for i, row_result in zip(todo, self._judge([rows[i] for i in todo]), strict=True):
            out[i] = row_result
        done = [r for r in out if r is not None]
        return {key: [r[key] for r in done] for key in ("id", "sha256", "outcome", "verdict",
                                                        "error")}

    def _judge(self, rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
        if not rows:
            return []
        items = [(row["id"], row["data"]) for row in rows]
        try:
            verdicts = self.judge.judge_many(items, concurrency=self.spec.concurrency)
        except Exception as error:  # one image broke the batch: judge them one by one
            log.warning("a batch failed (%s); judging its images one at a time", error)
            return [self._one(row) for row in rows]
        return [_from_verdict(row, v) for row, v in zip(rows, verdicts, strict=True)]

    def _one(self, row: dict[str, Any]) -> dict[str, Any]:
        try:
            verdict = self.judge.judge((row["id"], row["data"]))
        except Exception as error:
            reason = f"{type(error).__name__}: {error}"
            return result(row["id"], row["sha256"], "error", _unreadable(row["id"], reason),
                          reason)
        return _from_verdict(row, verdict)

    def __del__(self) -> None:
        judge = getattr(self, "judge", None)
        if judge is not None:
            # At interpreter shutdown there may be nothing left to release.
            with contextlib.suppress(Exception):
                judge.close()


def _from_verdict(row: dict[str, Any], verdict: Any) -> dict[str, Any]:
    error = verdict.error
    if error is None and verdict.outcome == "undecided":
        error = "; ".join(
            f"{r.rule_id}: {r.reason}" for r in verdict.rules if r.outcome == "undecided"
        ) or None
    return result(row["id"], row["sha256"], verdict.outcome, verdict, error)


def _unreadable(image_id: str, reason: str) -> Any:
    from judge.engine.verdict import unreadable

    return unreadable(image_id, image_id, ImageError(reason))


def _rows(batch: Any) -> list[dict[str, Any]]:
    """Ray's Arrow batch as rows of plain Python values (Arrow keeps nulls as None,
    where numpy batches would turn them into NaN)."""
    return [
        {
            "id": str(row["id"]),
            "sha256": row.get("sha256"),
            "data": row.get("data"),
            "error": row.get("error"),
            "skip": bool(row.get("skip")),
        }
        for row in batch.to_pylist()
    ]
