"""Shared test set-up: offline caches in one place, and the session fixtures.

Fixtures that build models or start servers live in tests/_toy.py and tests/_servers.py;
they are imported here so every test module can ask for them by name.
"""

from __future__ import annotations

import os
from pathlib import Path

# No test may reach a hub; caches go to one persistent folder so CI reuses trained models.
_CACHE = Path(os.environ.setdefault("JUDGE_CACHE", str(Path.home() / ".cache" / "judge")))
for var, sub in (
    ("HF_HOME", "hf"),
    ("VLLM_CACHE_ROOT", "vllm"),
    ("TORCHINDUCTOR_CACHE_DIR", "inductor"),
):
    os.environ.setdefault(var, str(_CACHE / sub))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("VLLM_NO_USAGE_STATS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

pytest_plugins = ["tests._toy", "tests._servers"]
