"""Run the in-process `vllm` back end on a job file and write its answers as JSON.

vLLM's engine starts worker processes, so it runs here, in a script of its own, rather
than inside pytest. Usage: python tests/_vllm_engine_job.py JOB.json OUT.json

JOB: {"model": dir, "queries": [{"instructions", "question", "image": png path | null}],
      "chats": [[{"role", "parts": [text | {"image": png path}]}]], "max_tokens": n}
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

from PIL import Image


def _load(path: str | None, cache: dict[str, Image.Image]) -> Image.Image | None:
    if path is None:
        return None
    if path not in cache:
        cache[path] = Image.open(path).convert("RGB")
    return cache[path]


async def _run(job: dict[str, Any]) -> dict[str, Any]:
    from judge.models import Message, YesNoQuery, load_backend

    started = time.monotonic()
    backend = load_backend(
        "vllm", model=job["model"], dtype="float32", max_model_len=2048, enforce_eager=True
    )
    setup = time.monotonic() - started
    images: dict[str, Image.Image] = {}
    queries = [
        YesNoQuery(q["instructions"], q["question"], _load(q["image"], images))
        for q in job["queries"]
    ]
    started = time.monotonic()
    results = await backend.yes_no(queries)
    yes_no_seconds = time.monotonic() - started
    token_ids = [backend.prompt_token_ids(q) for q in queries[:2]]  # type: ignore[attr-defined]
    chats = []
    for chat in job.get("chats", []):
        messages = []
        for m in chat:
            parts = [p if isinstance(p, str) else _load(p["image"], images) for p in m["parts"]]
            messages.append(Message(m["role"], tuple(parts)))
        chats.append(messages)
    generations = await backend.generate(chats, job.get("max_tokens", 8)) if chats else []
    await backend.aclose()
    return {
        "setup_seconds": setup,
        "yes_no_seconds": yes_no_seconds,
        "results": [
            {
                "p_yes": r.p_yes,
                "p_no": r.p_no,
                "missing": r.missing,
                "error": r.error,
                "prompt_tokens": r.prompt_tokens,
                "cached_tokens": r.cached_tokens,
            }
            for r in results
        ],
        "token_ids": token_ids,
        "generations": [{"text": g.text, "error": g.error} for g in generations],
    }


if __name__ == "__main__":
    job = json.loads(Path(sys.argv[1]).read_text())
    out = asyncio.run(_run(job))
    Path(sys.argv[2]).write_text(json.dumps(out))
