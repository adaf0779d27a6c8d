"""The output of `judge batch`: a folder of Parquet parts, one row per image.

    OUT.parquet/part-<time>-<id>.parquet     read with pyarrow.parquet.read_table(OUT)

Columns: `id`, `sha256`, `outcome` (safe, unsafe, undecided, error), one boolean column
`rule:<rule id>` per rule (true violated, false not violated or irrelevant, null when it
was not decided: undecided, skipped, or an image that could not be read), `verdict` (the
verdict as JSON) and `error`.

Each part is written to a hidden temporary file, fsynced, then renamed into place, so a
part is either whole or absent: after a SIGKILL the images of the lost part are simply
not there, and the resume judges them (once). Readers skip hidden files. Every part
records the lock's hash: resuming into a folder written under another constitution is
refused.

Rows are keyed by (id, sha256): a rerun skips the keys already there (except the outcomes
it retries, `judge batch --retry`), and a re-judged row replaces the old one. Parts are
immutable until `compact` rewrites one without its superseded rows (atomically, under the
same name); until then, as after a kill mid-run, readers here take the latest row of a key.
A row is superseded by a later row of the same key, and an unreadable row (no sha256) by
any later row of its id. One run at a time: `lock_output` holds an exclusive lock on the
folder while a run reads and writes it.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
import uuid
from collections import Counter
from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from judge.errors import InputError

LOCK_KEY = b"judge.lock_hash"
RULES_KEY = b"judge.rules"
RULE_PREFIX = "rule:"
LOCK_NAME = ".lock"  # hidden: Parquet readers skip it


def schema(rule_ids: Sequence[str], lock_hash: str) -> Any:
    import pyarrow as pa

    fields = [
        pa.field("id", pa.string(), nullable=False),
        pa.field("sha256", pa.string()),
        pa.field("outcome", pa.string(), nullable=False),
        *(pa.field(RULE_PREFIX + r, pa.bool_()) for r in rule_ids),
        pa.field("verdict", pa.string()),
        pa.field("error", pa.string()),
    ]
    meta = {LOCK_KEY: lock_hash.encode(), RULES_KEY: json.dumps(list(rule_ids)).encode()}
    return pa.schema(fields, metadata=meta)


def rule_columns(verdict: dict[str, Any] | None, rule_ids: Sequence[str]) -> dict[str, Any]:
    """`rule:<id>` -> True / False / None from a verdict (as a dict)."""
    found = {r["rule_id"]: r["outcome"] for r in (verdict or {}).get("rules", [])}
    value = {"violated": True, "not_violated": False, "irrelevant": False}
    return {RULE_PREFIX + r: value.get(found.get(r, "")) for r in rule_ids}


def output_row(result: dict[str, Any], rule_ids: Sequence[str]) -> dict[str, Any]:
    """The output row of one actor result {id, sha256, outcome, verdict, error}."""
    verdict = json.loads(result["verdict"]) if result.get("verdict") else None
    return {
        "id": str(result["id"]),
        "sha256": result.get("sha256"),
        "outcome": str(result["outcome"]),
        **rule_columns(verdict, rule_ids),
        "verdict": result.get("verdict"),
        "error": result.get("error"),
    }


Key = tuple[str, str | None]  # (id, sha256); sha256 None: the image could not be read


@dataclass
class Done:
    """What an output folder already holds: the outcome of the latest row of each key."""

    outcomes: dict[Key, str] = field(default_factory=dict)
    rows: int = 0  # rows in the parts (a retried key killed before `compact` counts twice)

    def skip(self, retry: Collection[str]) -> frozenset[Key]:
        """The keys a rerun skips: all but those whose outcome is retried."""
        return frozenset(k for k, outcome in self.outcomes.items() if outcome not in retry)


def parts(out: Path) -> list[Path]:
    """The parts of `out`, oldest first (their names start with the time they were written)."""
    return sorted(p for p in out.glob("part-*.parquet") if p.is_file())


def _keys(part: Path, lock_hash: str | None) -> Any:
    """A part's id, sha256 and outcome columns, checked against `lock_hash`."""
    import pyarrow.parquet as pq

    try:
        meta = pq.read_schema(part).metadata or {}
        table = pq.read_table(part, columns=["id", "sha256", "outcome"])
    except Exception as error:  # pyarrow raises many types for a bad file
        raise InputError(f"{part}: not a readable part of batch output: {error}") from None
    found = meta.get(LOCK_KEY, b"?").decode()
    if lock_hash is not None and found != lock_hash:
        raise InputError(
            f"{part.parent} was written with another constitution or lock (lock hash "
            f"{found[:12]}, now {lock_hash[:12]}); choose another --out, or move it away"
        )
    return table


def read_done(out: Path, lock_hash: str) -> Done:
    """The images already in `out` (none if it does not exist); stale temporary files of
    a killed run are removed (call it under `lock_output`, or they may be another run's).

    Raises:
        InputError: `out` is not a folder of judge batch parts, or was written under
            another constitution.
    """
    done = Done()
    if not out.exists():
        return done
    if not out.is_dir():
        raise InputError(f"{out}: exists and is not a folder of judge batch output")
    for stale in out.glob(".part-*.tmp"):
        stale.unlink(missing_ok=True)
    for part in parts(out):
        table = _keys(part, lock_hash)
        ids, shas, outcomes = (table.column(c).to_pylist() for c in ("id", "sha256", "outcome"))
        for key, outcome in zip(zip(ids, shas, strict=True), outcomes, strict=True):
            done.outcomes[key] = outcome  # the latest row of a key wins
        done.rows += table.num_rows
    return done


def compact(out: Path) -> Counter[str]:
    """Drop superseded rows from `out` (a part with any is rewritten atomically under its
    own name, or removed when none is left); the outcomes of the rows that remain."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    tables = [(part, _keys(part, None)) for part in parts(out)]
    later_keys: set[Key] = set()
    later_ids: set[str] = set()
    totals: Counter[str] = Counter()
    # Newest first: a row is kept unless a later row has its key (or, unreadable, its id).
    for part, table in reversed(tables):
        ids, shas, outcomes = (table.column(c).to_pylist() for c in ("id", "sha256", "outcome"))
        keep = [True] * table.num_rows
        for i in reversed(range(table.num_rows)):
            key = (ids[i], shas[i])
            if key in later_keys or (shas[i] is None and ids[i] in later_ids):
                keep[i] = False
                continue
            later_keys.add(key)
            later_ids.add(ids[i])
            totals[outcomes[i]] += 1
        if all(keep):
            continue
        if any(keep):
            tmp = out / f".{part.name}.tmp"
            pq.write_table(pq.read_table(part).filter(pa.array(keep)), tmp)  # keeps the metadata
            _fsync(tmp)
            os.replace(tmp, part)
        else:
            part.unlink()
        _fsync_dir(out)
    return totals


@contextlib.contextmanager
def lock_output(out: Path) -> Iterator[None]:
    """Hold an exclusive lock on the output folder `out` (created if need be) for one run.

    Raises:
        InputError: another run holds it (its temporary parts are left alone).
    """
    import fcntl

    if out.exists() and not out.is_dir():
        raise InputError(f"{out}: exists and is not a folder of judge batch output")
    out.mkdir(parents=True, exist_ok=True)
    # The lock file stays: removing it would let a third run lock a new file while the
    # second still holds the old one.
    handle = open(out / LOCK_NAME, "a+", encoding="utf-8")  # noqa: SIM115  # held till exit
    try:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            raise InputError(
                f"{out} is in use by another judge batch run ({holder}); wait for it to "
                "finish, or choose another --out"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()} on {socket.gethostname()}\n")
        handle.flush()
        yield
    finally:
        handle.close()  # releases the lock


class PartWriter:
    """Writes rows as atomic parts into `out`."""

    def __init__(self, out: Path, rule_ids: Sequence[str], lock_hash: str) -> None:
        out.mkdir(parents=True, exist_ok=True)
        self.out, self.rule_ids = out, list(rule_ids)
        self.schema = schema(self.rule_ids, lock_hash)
        self.written = 0
        self.parts = 0

    def write(self, rows: Sequence[dict[str, Any]]) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        if not rows:
            return
        table = pa.Table.from_pylist([output_row(r, self.rule_ids) for r in rows], self.schema)
        name = f"part-{time.time_ns():020d}-{uuid.uuid4().hex[:8]}.parquet"
        tmp = self.out / f".{name}.tmp"
        pq.write_table(table, tmp)
        _fsync(tmp)
        os.replace(tmp, self.out / name)
        _fsync_dir(self.out)
        self.written += len(rows)
        self.parts += 1


def _fsync(path: Path) -> None:
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
