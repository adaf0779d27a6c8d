"""SQLite store: the cache of language priors, and the decision (audit) log.

One file, in WAL mode, so one writer and any number of readers work at once and a
process killed mid-write (SIGKILL included) leaves the database as of its last commit:
every write is one transaction. Schemas are versioned per *namespace*: each module that
keeps tables here (the engine's "core", the evaluator's runs, ...) passes its ordered list
of migrations to `Store.ensure_schema`, and the store applies the ones not yet applied,
each in its own transaction, recording the version in the `schema_versions` table.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from judge.errors import InputError
from judge.resources import cache_dir

# A migration is SQL (one or more statements) or a function that gets the connection.
Migration = str | Any

_CORE_MIGRATIONS: tuple[Migration, ...] = (
    """
    CREATE TABLE priors (
        model TEXT NOT NULL,
        prompt_version TEXT NOT NULL,
        statement TEXT NOT NULL,
        m REAL NOT NULL,
        p_yes REAL NOT NULL,
        p_no REAL NOT NULL,
        created_at REAL NOT NULL,
        PRIMARY KEY (model, prompt_version, statement)
    );
    CREATE TABLE decisions (
        id TEXT PRIMARY KEY,
        created_at REAL NOT NULL,
        image_id TEXT NOT NULL,
        input_sha256 TEXT,
        lock_hash TEXT NOT NULL,
        model TEXT NOT NULL,
        outcome TEXT NOT NULL,
        verdict TEXT NOT NULL
    );
    CREATE INDEX decisions_sha ON decisions (input_sha256);
    """,
)


def default_path() -> Path:
    """Where the store lives unless told otherwise: `<cache_dir>/judge.sqlite3`."""
    return cache_dir() / "judge.sqlite3"


class Store:
    """The judge's SQLite database. Thread-safe; usable as a context manager.

    Args:
        path: the database file, or ":memory:" for a private in-memory store.
    """

    def __init__(self, path: str | Path | None = None) -> None:
        self.path = str(path) if path is not None else str(default_path())
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        try:
            # isolation_level=None: we issue BEGIN/COMMIT ourselves, so a transaction is
            # exactly what `transaction()` wraps.
            self._db = sqlite3.connect(
                self.path, timeout=30.0, isolation_level=None, check_same_thread=False
            )
            self._db.execute("PRAGMA journal_mode=WAL")
            # NORMAL is durable against process crashes in WAL mode; only an OS crash can
            # lose the last commits, and even then the file stays consistent.
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute("PRAGMA foreign_keys=ON")
            self._db.execute("PRAGMA busy_timeout=30000")
        except sqlite3.DatabaseError as error:
            raise InputError(f"cannot open the judge store {self.path}: {error}") from error
        self._lock = threading.RLock()
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS schema_versions "
            "(namespace TEXT PRIMARY KEY, version INTEGER NOT NULL)"
        )
        self.ensure_schema("core", _CORE_MIGRATIONS)

    # ---- plumbing ---------------------------------------------------------------

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One write transaction (BEGIN IMMEDIATE ... COMMIT, or ROLLBACK on error)."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def query(self, sql: str, params: Sequence[Any] | Mapping[str, Any] = ()) -> list[Any]:
        """Rows of a read-only query."""
        with self._lock:
            return self._db.execute(sql, params).fetchall()

    def schema_version(self, namespace: str) -> int:
        rows = self.query("SELECT version FROM schema_versions WHERE namespace = ?", (namespace,))
        return int(rows[0][0]) if rows else 0

    def ensure_schema(self, namespace: str, migrations: Sequence[Migration]) -> int:
        """Apply the migrations of `namespace` not yet applied, in order.

        Args:
            namespace: the owner of the tables, e.g. "eval".
            migrations: ordered; migration i (0-based) brings the schema to version i+1.
                Each is SQL text or a callable taking the sqlite3 connection. Never edit
                or reorder a published migration: append a new one.

        Returns:
            The schema version now in place.
        """
        with self._lock:
            current = self.schema_version(namespace)
            if current > len(migrations):
                raise InputError(
                    f"the judge store {self.path} has schema '{namespace}' version {current}, "
                    f"newer than this judge knows ({len(migrations)}): upgrade judge"
                )
            for index in range(current, len(migrations)):
                with self.transaction() as db:
                    # Re-read inside the write lock: another process may have migrated.
                    row = db.execute(
                        "SELECT version FROM schema_versions WHERE namespace = ?", (namespace,)
                    ).fetchone()
                    if row is not None and int(row[0]) > index:
                        continue
                    step = migrations[index]
                    if isinstance(step, str):
                        for statement in _split_sql(step):
                            db.execute(statement)
                    else:
                        step(db)
                    db.execute(
                        "INSERT INTO schema_versions (namespace, version) VALUES (?, ?) "
                        "ON CONFLICT(namespace) DO UPDATE SET version = excluded.version",
                        (namespace, index + 1),
                    )
            return self.schema_version(namespace)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- the prior cache --------------------------------------------------------

    def get_priors(
        self, model: str, prompt_version: str, statements: Iterable[str]
    ) -> dict[str, float]:
        """Cached M(None, c) for those statements that have one."""
        wanted = list(dict.fromkeys(statements))
        out: dict[str, float] = {}
        # SQLite limits bound parameters; 500 at a time stays far below every limit.
        for start in range(0, len(wanted), 500):
            chunk = wanted[start : start + 500]
            marks = ",".join("?" * len(chunk))
            rows = self.query(
                f"SELECT statement, m FROM priors WHERE model = ? AND prompt_version = ? "
                f"AND statement IN ({marks})",
                (model, prompt_version, *chunk),
            )
            out.update({str(s): float(m) for s, m in rows})
        return out

    def put_priors(
        self, model: str, prompt_version: str, priors: Mapping[str, tuple[float, float, float]]
    ) -> None:
        """Store priors: statement -> (m, p_yes, p_no)."""
        if not priors:
            return
        now = time.time()
        with self.transaction() as db:
            db.executemany(
                "INSERT OR REPLACE INTO priors "
                "(model, prompt_version, statement, m, p_yes, p_no, created_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                [(model, prompt_version, s, m, y, n, now) for s, (m, y, n) in priors.items()],
            )

    # ---- the decision log -------------------------------------------------------

    def log_decision(self, verdict: Any) -> str:
        """Record a verdict (a `judge.engine.verdict.Verdict`); returns its decision id."""
        decision_id = uuid.uuid4().hex
        run = verdict.run
        with self.transaction() as db:
            db.execute(
                "INSERT INTO decisions "
                "(id, created_at, image_id, input_sha256, lock_hash, model, outcome, verdict) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    decision_id,
                    time.time(),
                    verdict.image_id,
                    verdict.sha256,
                    run.lock_hash if run else "",
                    run.model_id if run else "",
                    verdict.outcome,
                    verdict.model_dump_json(),
                ),
            )
        return decision_id

    def decisions(self, *, sha256: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        """The most recent logged decisions, newest first, optionally for one input."""
        where, params = ("WHERE input_sha256 = ?", [sha256]) if sha256 else ("", [])
        rows = self.query(
            f"SELECT id, created_at, image_id, input_sha256, lock_hash, model, outcome, verdict "
            f"FROM decisions {where} ORDER BY created_at DESC LIMIT ?",
            (*params, limit),
        )
        keys = ("id", "created_at", "image_id", "sha256", "lock_hash", "model", "outcome")
        return [
            {**dict(zip(keys, row[:7], strict=True)), "verdict": json.loads(row[7])} for row in rows
        ]


def _split_sql(script: str) -> list[str]:
    """Statements of a migration script. Cut at each ';' and let
    `sqlite3.complete_statement` say whether the piece so far is whole (it is not while a
    ';' sits inside a string or a trigger body)."""
    statements: list[str] = []
    buffer = ""
    for piece in script.split(";"):
        buffer += piece + ";"
        if sqlite3.complete_statement(buffer):
            if buffer.strip(" \t\r\n;"):
                statements.append(buffer.strip())
            buffer = ""
    if buffer.strip(" \t\r\n;"):
        statements.append(buffer.strip())
    return statements
