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
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from judge.errors import InputError

LOCK_KEY = b"judge.lock_hash"
RULES_KEY = b"judge.rules"
RULE_PREFIX = "rule:"


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


@dataclass
class Done:
    """What an output folder already holds."""

    sha256: set[str] = field(default_factory=set)
    unreadable_ids: set[str] = field(default_factory=set)  # rows with no sha256
    rows: int = 0


def parts(out: Path) -> list[Path]:
    return sorted(p for p in out.glob("part-*.parquet") if p.is_file())


def read_done(out: Path, lock_hash: str) -> Done:
    """The images already in `out` (none if it does not exist); stale temporary files of
    a killed run are removed.

    Raises:
        InputError: `out` is not a folder of judge batch parts, or was written under
            another constitution.
    """
    import pyarrow.parquet as pq

    done = Done()
    if not out.exists():
        return done
    if not out.is_dir():
        raise InputError(f"{out}: exists and is not a folder of judge batch output")
    for stale in out.glob(".part-*.tmp"):
        stale.unlink(missing_ok=True)
    for part in parts(out):
        try:
            meta = pq.read_schema(part).metadata or {}
            table = pq.read_table(part, columns=["id", "sha256"])
        except Exception as error:  # pyarrow raises many types for a bad file
            raise InputError(f"{part}: not a readable part of batch output: {error}") from None
        if meta.get(LOCK_KEY, b"").decode() != lock_hash:
            raise InputError(
                f"{out} was written with another constitution or lock (lock hash "
                f"{meta.get(LOCK_KEY, b'?').decode()[:12]}, now {lock_hash[:12]}); "
                "choose another --out, or move it away"
            )
        for image_id, sha in zip(
            table.column("id").to_pylist(), table.column("sha256").to_pylist(), strict=True
        ):
            if sha is None:
                done.unreadable_ids.add(image_id)
            else:
                done.sha256.add(sha)
        done.rows += table.num_rows
    return done


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
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, self.out / name)
        _fsync_dir(self.out)
        self.written += len(rows)
        self.parts += 1


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
