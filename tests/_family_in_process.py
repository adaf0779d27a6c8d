"""One family through vLLM in process (`--backend vllm`), for tests/test_family_matrix.py.

vLLM's engine starts worker processes, so this runs in a process of its own rather than
inside pytest. It runs `judge doctor`, a whole `judge` run of the toy policy, and the
plumbing checks on the back end, and writes what it saw as JSON.

Usage: python tests/_family_in_process.py FAMILY STORE OUT.json
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path


def main(family: str, store: str, out: str) -> None:
    from judge.models.families import build_family
    from judge.models.registry import load_backend
    from tests.test_family_matrix import cli, judge_run_args, yes_no_plumbing

    result: dict[str, object] = {}
    started = time.monotonic()
    result["doctor"] = cli("doctor", "--backend", "vllm", "--model", f"tiny-{family}")
    result["run"] = cli(*judge_run_args(family, ["--backend", "vllm"], Path(store)))
    backend = load_backend("vllm", model=str(build_family(family)), dtype="float32")
    result["plumbing"] = yes_no_plumbing(backend)
    result["seconds"] = round(time.monotonic() - started, 1)
    Path(out).write_text(json.dumps(result))


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    main(*sys.argv[1:4])
