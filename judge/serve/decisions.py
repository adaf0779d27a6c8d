"""The service's decision log: one row per judged image in the judge Store (SQLite).

Who asked (the token's name, never the token), what was judged (the image's sha256; its
bytes only with `--log-images`), under which policy (the lock hash), what came out (the
outcome, flagged or not and why), and how long each stage took. The Judge also writes
its full verdict to the store's `decisions` table under the same image id, so the two
join. That id is always the service's own, `<request id>/<index>`; the name a caller gave
an image goes into its own column, `caller_image_id`, so no caller can make a row look
like, or join with, another request's image. Each row also says what made the decision:
the lock hash, the model id and back end, and the version of every prompt template
(`prompt_versions`, JSON), as the verdict's `run` has them.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

_MIGRATIONS = (
    """
    CREATE TABLE serve_decisions (
        id TEXT PRIMARY KEY,
        created_at REAL NOT NULL,
        request_id TEXT NOT NULL,
        image_id TEXT NOT NULL,
        endpoint TEXT NOT NULL,
        token_name TEXT,
        image_sha256 TEXT NOT NULL,
        lock_hash TEXT NOT NULL,
        outcome TEXT NOT NULL,
        flagged INTEGER NOT NULL,
        reason TEXT,
        violated TEXT NOT NULL,
        undecided TEXT NOT NULL,
        timings TEXT NOT NULL,
        image BLOB
    );
    CREATE INDEX serve_decisions_sha ON serve_decisions (image_sha256);
    CREATE INDEX serve_decisions_request ON serve_decisions (request_id);
    """,
    # 2: the caller's name for an image, apart from the service's id.
    "ALTER TABLE serve_decisions ADD COLUMN caller_image_id TEXT;",
    # 3: what made the decision, beside the lock hash.
    """
    ALTER TABLE serve_decisions ADD COLUMN model_id TEXT;
    ALTER TABLE serve_decisions ADD COLUMN backend TEXT;
    ALTER TABLE serve_decisions ADD COLUMN prompt_versions TEXT;
    """,
)
_COLUMNS = ("id", "created_at", "request_id", "image_id", "caller_image_id", "endpoint",
            "token_name", "image_sha256", "lock_hash", "model_id", "backend",
            "prompt_versions", "outcome", "flagged", "reason", "violated", "undecided",
            "timings")
_JSON = ("prompt_versions", "violated", "undecided", "timings")


class DecisionLog:
    def __init__(self, store: Any, keep_images: bool = False) -> None:
        self.store = store
        self.keep_images = keep_images
        store.ensure_schema("serve", _MIGRATIONS)

    def record(
        self,
        *,
        request_id: str,
        image_id: str,
        caller_image_id: str | None = None,
        endpoint: str,
        token_name: str | None,
        sha256: str,
        lock_hash: str,
        verdict: Any,
        flagged: bool,
        reason: str | None,
        timings: dict[str, float],
        image: bytes | None = None,
    ) -> str:
        """Write one row (blocking: call it from a worker thread); returns its id."""
        decision_id = uuid.uuid4().hex
        run = getattr(verdict, "run", None)  # None for an image that could not be read
        values = (
            decision_id, time.time(), request_id, image_id, caller_image_id, endpoint,
            token_name, sha256, lock_hash, run.model_id if run else None,
            run.backend if run else None,
            json.dumps(dict(run.prompt_versions) if run else {}, sort_keys=True),
            verdict.outcome, int(flagged), reason, json.dumps(list(verdict.violated)),
            json.dumps(list(verdict.undecided)), json.dumps(timings, sort_keys=True),
        )
        with self.store.transaction() as db:
            db.execute(
                f"INSERT INTO serve_decisions ({', '.join(_COLUMNS)}, image) "
                f"VALUES ({', '.join('?' * (len(_COLUMNS) + 1))})",
                (*values, image if self.keep_images else None),
            )
        return decision_id

    def recent(self, limit: int = 100) -> list[dict[str, Any]]:
        rows = self.store.query(
            f"SELECT {', '.join(_COLUMNS)}, image IS NOT NULL FROM serve_decisions "
            "ORDER BY created_at DESC LIMIT ?",
            (limit,),
        )
        out = []
        for row in rows:
            item = dict(zip((*_COLUMNS, "has_image"), row, strict=True))
            for key in _JSON:
                item[key] = json.loads(item[key] or "{}")
            item["flagged"], item["has_image"] = bool(item["flagged"]), bool(item["has_image"])
            out.append(item)
        return out
