"""Judge a set of images with two versions of a policy and list what changes.

Both versions are judged through one `SharedAnswers` back end: a question both versions
ask about an image (the same statement, image, crop or masked copy, or the same prior) is
sent to the model once. The old version is judged first, then the new one, so every
question the new one shares is already answered. `calls` says how many model calls the
two versions asked for, how many were sent, and so how many the sharing saved: judged
once each (with the same store), the two would have sent all they asked.

A rule flips on an image when its outcome differs between the versions, counting "not
violated", "irrelevant" and "absent" (the version lacks the rule, or it is disabled) as
one: not flagged. An image flips when its outcome does.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field

from judge.constitution.schema import Lock
from judge.engine.verdict import Verdict
from judge.inputs import expand_inputs
from judge.models.base import Backend
from judge.policy.shared import SharedAnswers
from judge.store import Store

if TYPE_CHECKING:
    from judge.engine.procedure import JudgeOptions

_NOT_FLAGGED = {"not_violated", "irrelevant", "absent", "skipped"}


class Flip(BaseModel):
    """One image whose outcome (of a rule, or of the whole image) differs."""

    model_config = ConfigDict(extra="forbid")

    image: str
    old: str
    new: str


class Calls(BaseModel):
    """Model calls (Yes/No queries and generations) of the two versions."""

    model_config = ConfigDict(extra="forbid")

    asked: int  # by the two versions together: what judging each once would send
    sent: int  # to the model, with the answers shared
    saved: int


class SetDiff(BaseModel):
    """The images of a set whose verdict changes from the old version to the new."""

    model_config = ConfigDict(extra="forbid")

    images: int
    rules: dict[str, list[Flip]]  # rule id -> the images it flips on (every rule listed)
    outcomes: list[Flip]  # images whose outcome changes
    calls: Calls
    old_verdicts: list[Verdict] = Field(default_factory=list, exclude=True)
    new_verdicts: list[Verdict] = Field(default_factory=list, exclude=True)

    @property
    def flipped(self) -> bool:
        """Whether any rule or image outcome changes."""
        return bool(self.outcomes) or any(self.rules.values())


def _state(outcome: str) -> str:
    return "not_violated" if outcome in _NOT_FLAGGED else outcome


def flips(
    old: Sequence[Verdict], new: Sequence[Verdict]
) -> tuple[dict[str, list[Flip]], list[Flip]]:
    """Per rule, and per image, the flips between two lists of verdicts of the same images
    (in the same order)."""
    ids: list[str] = []
    for verdict in (*old, *new):
        for rule in verdict.rules:
            if rule.rule_id not in ids:
                ids.append(rule.rule_id)
    per_rule: dict[str, list[Flip]] = {rule_id: [] for rule_id in ids}
    outcomes: list[Flip] = []
    for before, after in zip(old, new, strict=True):
        a = {r.rule_id: r.outcome for r in before.rules}
        b = {r.rule_id: r.outcome for r in after.rules}
        for rule_id in ids:
            was, now = a.get(rule_id, "absent"), b.get(rule_id, "absent")
            if _state(was) != _state(now):
                per_rule[rule_id].append(Flip(image=before.image_id, old=was, new=now))
        if before.outcome != after.outcome:
            outcomes.append(Flip(image=before.image_id, old=before.outcome, new=after.outcome))
    return per_rule, outcomes


async def adiff_on(
    old: Any,
    new: Any,
    images: Sequence[str | Path],
    *,
    model: str | None = None,
    backend: str | Backend | None = None,
    server: str | None = None,
    api_key: str | None = None,
    relevance: str | None = None,
    locator: str | None = None,
    thresholds: Any = None,
    options: JudgeOptions | None = None,
    store: str | Path | Store | None = None,
    allow_unreviewed: bool = False,
    concurrency: int = 8,
) -> SetDiff:
    """`diff_on` from async code."""
    from judge.engine.judge import Judge
    from judge.models.options import ModelOptions

    old_lock, new_lock = _lock_of(old), _lock_of(new)
    defaults = new_lock.defaults
    # One model judges both versions: the one named, else the new version's default.
    chosen = ModelOptions(
        model=model or defaults.model or old_lock.defaults.model,
        backend=backend,
        server=server,
        api_key=api_key,
        relevance=relevance,
        locator=locator,
    )
    owned = not isinstance(backend, Backend)
    inner = chosen.resolve(default_backend=defaults.backend).open(api_key) if owned else backend
    assert isinstance(inner, Backend)
    shared = SharedAnswers(inner)
    kept = store if isinstance(store, Store) else Store(store)
    judges: list[Judge] = []
    try:
        for lock in (old_lock, new_lock):
            judges.append(
                Judge(
                    lock,
                    **chosen.judge_kwargs(backend=shared),
                    thresholds=thresholds,
                    options=options,
                    store=kept,
                    allow_unreviewed=allow_unreviewed,
                )
            )
        # Files as given, folders walked, globs expanded, as `judge` reads its arguments.
        inputs = [(p, p) for p in expand_inputs([str(p) for p in images])]
        before = await judges[0].ajudge_many(inputs, concurrency=concurrency)
        after = await judges[1].ajudge_many(inputs, concurrency=concurrency)
    finally:
        for judge in judges:
            await judge.aclose()
        if owned:
            await inner.aclose()
        if kept is not store:
            kept.close()
    per_rule, outcomes = flips(before, after)
    return SetDiff(
        images=len(inputs),
        rules=per_rule,
        outcomes=outcomes,
        calls=Calls(
            asked=shared.asked, sent=shared.sent_calls, saved=shared.asked - shared.sent_calls
        ),
        old_verdicts=before,
        new_verdicts=after,
    )


def _lock_of(policy: Any) -> Lock:
    """The up-to-date lock of a policy file, a Constitution, or a Lock itself."""
    from judge.constitution import Constitution

    if isinstance(policy, Lock):
        return policy
    loaded = policy if isinstance(policy, Constitution) else Constitution.load(policy)
    return loaded.lock


def diff_on(old: Any, new: Any, images: Sequence[str | Path], **kwargs: Any) -> SetDiff:
    """Judge `images` (files, folders, globs) with policy versions `old` and `new` (files,
    Constitutions or Locks; each lock up to date), sharing the answers both ask, and list
    the flips.
    Takes `Judge`'s model options (model, backend, server, api_key, relevance, locator,
    thresholds, options, store, allow_unreviewed) and `concurrency`.

    Runs on an event loop of its own in a worker thread, so it works in a notebook too.
    """
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, adiff_on(old, new, images, **kwargs)).result()
