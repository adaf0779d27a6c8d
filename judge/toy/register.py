"""Registers "toy" as a model name: the toy VLM with its own CLIP and OWLv2.

`--model toy` (and `Judge(model="toy")`) then means the same in every command. Each part
is found only when a stage needs it: the seed-0 models that ship with judge, their files
checked against the recorded sha256 once per process (see judge.toy.build).
"""

from __future__ import annotations

import functools
from typing import Any

from judge.models.resolve import NamedModels


@functools.cache
def _models() -> Any:
    from judge.toy.build import ensure_toy_models

    return ensure_toy_models()


def toy_models() -> NamedModels:
    """The toy models as a registered name (see judge.models.resolve)."""
    return NamedModels(
        vlm=lambda: str(_models().vlm),
        relevance=lambda: f"clip:{_models().clip}",
        locator=lambda: str(_models().owlv2),
        served_name=None,  # a server started on the toy VLM serves it under its own name
        max_new_tokens=32,  # what it was taught to write is short: more only times noise
    )
