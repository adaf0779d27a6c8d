"""One family through vLLM in process (`--backend vllm`), for tests/test_family_matrix.py.

vLLM's engine starts worker processes, so this runs in a process of its own rather than
inside pytest. One engine serves all three parts, as one `Judge` would: the checks
`judge doctor` runs (`Backend.check`), a whole run of the toy policy through the Python
API with every stage on, and the plumbing checks. What it saw is written as JSON.

Usage: python tests/_family_in_process.py FAMILY STORE OUT.json
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path


def main(family: str, store: str, out: str) -> None:
    from judge.engine import Judge
    from judge.models.families import build_family
    from judge.models.registry import load_backend
    from tests.test_family_matrix import IMAGES, POLICY, yes_no_plumbing

    started = time.monotonic()
    backend = load_backend("vllm", model=str(build_family(family)), dtype="float32")
    doctor = asyncio.run(backend.check())
    with Judge(POLICY, model=f"tiny-{family}", backend=backend, store=store) as judge:
        verdicts = judge.judge_many([str(p) for p in IMAGES])
    result = {
        "doctor": doctor,
        "run": {"verdicts": [v.model_dump(mode="json") for v in verdicts]},
        "plumbing": yes_no_plumbing(backend),  # closes the back end
        "seconds": round(time.monotonic() - started, 1),
    }
    Path(out).write_text(json.dumps(result))


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    main(*sys.argv[1:4])
