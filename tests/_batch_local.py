"""`judge batch` without Ray, for the fast tests: the same steps in this process.

`local_pipeline` stands in for `judge.batch.run._pipeline`: it loads each source with the
runner's own `_load` (the resume decision), judges batches with a real `JudgeActor`, and
yields its rows as Ray Data would. Run as a module, this file is a `judge batch` command
line whose pipeline yields the first batch, then writes `<out>.ready` and waits to be
stopped by a signal (the SIGINT / SIGTERM tests).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa

from judge.batch import run
from judge.batch.actor import JudgeActor, result


def local_pipeline(
    ray: Any, opts: Any, sources: list[dict[str, Any]], skip: frozenset[Any]
) -> Iterator[list[dict[str, Any]]]:
    actor = JudgeActor(opts.spec)
    rows = [row for source in sources for row in run._load(source, skip)]
    for start in range(0, len(rows), opts.batch_size):
        out = actor(pa.Table.from_pylist(rows[start : start + opts.batch_size]))
        yield [dict(zip(out, values, strict=True)) for values in zip(*out.values(), strict=True)]


def use_local_pipeline(monkeypatch: Any) -> None:
    """No Ray: `run_batch` runs `local_pipeline`."""
    monkeypatch.setattr(run, "connect", lambda address: None)
    monkeypatch.setattr(run, "_pipeline", local_pipeline)


def _stalls(
    ray: Any, opts: Any, sources: list[dict[str, Any]], skip: frozenset[Any]
) -> Iterator[list[dict[str, Any]]]:
    """Every image judged "safe" in one batch, then a wait for a signal."""
    rows = [row for source in sources for row in run._load(source, skip)]
    yield [result(r["id"], r["sha256"], "safe", None, None) for r in rows]
    Path(f"{opts.out}.ready").write_text("judged\n")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        time.sleep(0.05)


if __name__ == "__main__":
    from judge.cli import main

    run.connect = lambda address: None  # type: ignore[assignment]
    run._pipeline = _stalls  # type: ignore[assignment]
    main(["batch", *sys.argv[1:]])
