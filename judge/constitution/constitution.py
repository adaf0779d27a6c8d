"""`Constitution`: a validated policy file together with its lock."""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path
from typing import Any

import yaml

from judge.constitution import lockfile
from judge.constitution.compiler import CompileOptions, CompileReport, compile_spec, plan
from judge.constitution.loader import load_spec, parse_spec
from judge.constitution.schema import ConstitutionSpec, Lock, RuleSpec
from judge.errors import LockError
from judge.models.base import Backend


class Constitution:
    """A constitution (the authored rules) and, when compiled, its lock.

    >>> policy = Constitution.load("constitutions/clue.yaml")
    >>> policy.lock.rules[0].preconditions          # raises LockError if missing or stale
    """

    def __init__(
        self,
        spec: ConstitutionSpec,
        *,
        path: Path | None = None,
        source_sha256: str | None = None,
        lock: Lock | None = None,
    ) -> None:
        self.spec = spec
        self.path = path
        # Without a file, the hash of the spec's own YAML stands in for the source's.
        self.source_sha256 = (
            source_sha256 or hashlib.sha256(_dump_spec(spec).encode("utf-8")).hexdigest()
        )
        self._lock = lock
        self.last_report: CompileReport | None = None

    # ---- loading ---------------------------------------------------------------------

    @classmethod
    def load(cls, path: str | Path) -> Constitution:
        """Load a constitution file and its lock (`NAME.lock.yaml` next to it) if present.

        A lock file's path is accepted too: its source is found through the lock.
        """
        path = Path(path)
        if lockfile.is_lock_path(path):
            lock = lockfile.load_lock(path)
            path = path.with_name(lock.source)
        spec, sha = load_spec(path)
        lock_path = lockfile.lock_path_for(path)
        found = lockfile.load_lock(lock_path) if lock_path.exists() else None
        return cls(spec, path=path, source_sha256=sha, lock=found)

    @classmethod
    def from_yaml(cls, text: str, *, name: str = "<constitution>") -> Constitution:
        """A constitution from YAML text (no file, so no lock until compiled)."""
        data = text.encode("utf-8")
        return cls(parse_spec(data, name), source_sha256=hashlib.sha256(data).hexdigest())

    # ---- the lock --------------------------------------------------------------------

    @property
    def source_name(self) -> str:
        return self.path.name if self.path else f"{self.spec.name}.yaml"

    @property
    def lock_path(self) -> Path | None:
        return lockfile.lock_path_for(self.path) if self.path else None

    @property
    def lock(self) -> Lock:
        """The lock, checked against the source: LockError if it is missing or stale."""
        shown = str(self.path) if self.path else self.spec.name
        if self._lock is None:
            raise LockError(f"{shown} has no lock; run `judge compile {shown}` (or pass --compile)")
        lockfile.check_fresh(self._lock, self.spec, self.source_sha256, shown)
        return self._lock

    @property
    def has_lock(self) -> bool:
        return self._lock is not None

    def lock_status(self) -> tuple[str, str]:
        """("fresh" | "stale" | "missing", reason)."""
        if self._lock is None:
            return "missing", "no lock"
        try:
            self.lock  # noqa: B018 - evaluated for its check
        except LockError as error:
            return "stale", str(error)
        return "fresh", "up to date"

    def save_lock(self, path: str | Path | None = None) -> Path:
        """Write the current lock (next to the source unless `path` is given)."""
        target = Path(path) if path else self.lock_path
        if target is None:
            raise LockError("this constitution has no file; give the lock's path")
        if self._lock is None:
            raise LockError("nothing to write: compile the constitution first")
        return lockfile.write_lock(self._lock, target)

    # ---- compiling -------------------------------------------------------------------

    def pending(self, *, force: bool = False) -> list[RuleSpec]:
        """The rules a compile would send to the model (changed since the lock)."""
        todo, _ = plan(self.spec, self._lock, force=force)
        return todo

    async def acompile(
        self,
        backend: Backend | None,
        *,
        concurrency: int = 8,
        force: bool = False,
        options: CompileOptions | None = None,
    ) -> Lock:
        """Compile the rules that changed since the lock (all with `force`); returns the
        new lock, which also becomes `self.lock`. `self.last_report` says what happened.
        `backend=None` compiles hand-written preconditions without a model."""
        base = options or CompileOptions()
        options = CompileOptions(**{**base.__dict__, "concurrency": concurrency})
        report = await compile_spec(
            self.spec,
            backend,
            source=self.source_name,
            source_sha256=self.source_sha256,
            previous=self._lock,
            force=force,
            options=options,
        )
        self._lock = report.lock
        self.last_report = report
        return report.lock

    def compile(
        self,
        backend: Backend | None,
        *,
        concurrency: int = 8,
        force: bool = False,
        options: CompileOptions | None = None,
    ) -> Lock:
        """Synchronous `acompile` (not from inside a running event loop)."""
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return asyncio.run(
                self.acompile(backend, concurrency=concurrency, force=force, options=options)
            )
        raise RuntimeError("Constitution.compile() called inside an event loop; await acompile()")

    # ---- writing ---------------------------------------------------------------------

    def to_yaml(self) -> str:
        """The constitution as YAML that loads back to an equal spec."""
        return _dump_spec(self.spec)

    def __repr__(self) -> str:
        where = f" from {self.path}" if self.path else ""
        return f"<Constitution {self.spec.name!r}: {len(self.spec.rules)} rules{where}>"


def _dump_spec(spec: ConstitutionSpec) -> str:
    body: dict[str, Any] = spec.model_dump(mode="json", exclude_defaults=True)
    body.setdefault("name", spec.name)
    text: str = yaml.safe_dump(
        body, sort_keys=False, allow_unicode=True, width=100, default_flow_style=False
    )
    return text
