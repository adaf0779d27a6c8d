"""The active policy, and reloading it without dropping a request.

The service holds one `ActivePolicy` at a time: a checked lock and a `Judge` built on it.
A request takes the active policy once, at its start, and keeps it to its end; a reload
builds the next policy completely (the lock read and checked, the Judge and its relevance
and locator models loaded) before it replaces the active one in a single assignment. So a
request in flight finishes on the policy it started with, a new request never sees a
half-built one, and a policy that fails any check is refused while the old one stays.

The model back end is opened once and shared by every policy the service loads: a reload
changes the rules, not the model, and must not load a 7B model a second time.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from judge.errors import InputError, JudgeError
from judge.models import options as models


@dataclass(frozen=True)
class ModelOptions(models.ModelOptions):
    """`judge serve`'s options: the model options every command shares
    (`judge.models.options.ModelOptions`), and how each request is judged."""

    thresholds: Path | None = None
    allow_unreviewed: bool = False
    no_relevance: bool = False
    no_center: bool = False
    no_cascade: bool = False
    fill: str = "mean"


@dataclass
class ActivePolicy:
    """One loaded policy. `in_flight` counts the requests that hold it."""

    judge: Any  # judge.Judge
    lock: Any  # judge.Lock
    path: Path
    lock_hash: str
    loaded_at: float
    generation: int
    in_flight: int = 0
    rule_ids: list[str] = field(default_factory=list)

    def describe(self) -> dict[str, Any]:
        lock = self.lock
        return {
            "name": lock.name,
            "source": str(self.path.name),
            "source_sha256": lock.source_sha256,
            "lock_hash": self.lock_hash,
            "compiler_model": lock.compiler_model,
            "prompt_versions": dict(lock.prompt_versions),
            "loaded_at": self.loaded_at,
            "generation": self.generation,
            "needs_review": list(getattr(self.judge, "needs_review", [])),
            "rules": [
                {
                    "id": rule.id,
                    "text": rule.source_text,
                    "objectified": rule.text,
                    "category": rule.category,
                    "severity": rule.severity,
                    "enabled": rule.enabled,
                    "preconditions": [list(pre.any_of) for pre in rule.preconditions],
                }
                for rule in lock.rules
            ],
        }


class PolicyHolder:
    """Loads, holds and reloads the active policy over one shared back end.

    Args:
        path: the constitution (or its lock), re-read on every reload.
        options: the model options.
        backend: the shared back end (opened by the caller, closed by the caller).
        store: the shared judge Store.
    """

    def __init__(self, path: Path, options: ModelOptions, backend: Any, store: Any) -> None:
        self.path = path
        self.options = options
        self.backend = backend
        self.store = store
        self.active: ActivePolicy | None = None
        self._generation = 0
        self._reloading = asyncio.Lock()
        self.last_error: str | None = None

    def build(self) -> ActivePolicy:
        """Load and check the policy and build its Judge (blocking: run it in a thread).

        Raises:
            JudgeError: a missing, malformed or stale policy, rules needing review, a
                relevance or locator model that cannot be found.
        """
        from judge import Constitution, Judge, JudgeOptions

        constitution = Constitution.load(self.path)
        lock = constitution.lock  # LockError when missing or stale: compile it first
        opts = self.options
        judge = Judge(
            lock,
            **opts.judge_kwargs(backend=self.backend),
            thresholds=opts.thresholds,
            options=JudgeOptions(
                relevance=not opts.no_relevance,
                center=not opts.no_center,
                cascade=not opts.no_cascade,
                fill=opts.fill,  # type: ignore[arg-type]  # JudgeOptions checks the name
            ),
            store=self.store,
            allow_unreviewed=opts.allow_unreviewed,
        )
        self._generation += 1
        return ActivePolicy(
            judge=judge,
            lock=lock,
            path=constitution.path or self.path,
            lock_hash=lock.lock_hash(),
            loaded_at=time.time(),
            generation=self._generation,
            rule_ids=[r.id for r in lock.enabled_rules()],
        )

    async def reload(self) -> tuple[bool, str, ActivePolicy | None]:
        """Build the policy anew and swap it in; (changed, message, the active policy).

        A failure leaves the active policy as it was and is reported, never raised: a
        reload triggered by SIGHUP has no caller to raise to.
        """
        async with self._reloading:
            try:
                fresh = await asyncio.to_thread(self.build)
            except JudgeError as error:
                self.last_error = str(error)
                return False, f"policy refused, the old one stays: {error}", self.active
            except Exception as error:  # a reload must never take the service down
                self.last_error = f"{type(error).__name__}: {error}"
                return False, f"policy refused, the old one stays: {self.last_error}", self.active
            old, self.active = self.active, fresh  # the swap: one assignment
            self.last_error = None
            if old is not None and old.lock_hash == fresh.lock_hash:
                return True, f"policy reloaded (unchanged, lock {fresh.lock_hash})", fresh
            shown = f"{old.lock_hash} -> " if old else ""
            return True, f"policy loaded (lock {shown}{fresh.lock_hash})", fresh

    def load_first(self) -> ActivePolicy:
        """Build the first policy now (blocking), so a problem with it is an error of the
        command that starts the service, not of a server that already listens."""
        self.active = self.build()
        return self.active

    def current(self) -> ActivePolicy:
        if self.active is None:
            raise InputError("no policy is loaded")
        return self.active
