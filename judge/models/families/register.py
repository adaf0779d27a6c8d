"""Registers each family's tiny build as a model name, `tiny-<family>`.

`--model tiny-gemma3` is then the tiny Gemma 3 build (built into the cache on first use)
with the toy CLIP and OWLv2 that ship with judge as its relevance and locator models, the
way "toy" is registered (judge.toy.register).
"""

from __future__ import annotations

from judge.models.resolve import NamedModels


def family_models(name: str) -> NamedModels:
    """The tiny build of family `name` as a registered name (see judge.models.resolve)."""
    from judge.models.families import build_family
    from judge.toy.register import toy_models

    toy = toy_models()  # found only when a stage calls its parts
    return NamedModels(
        vlm=lambda: str(build_family(name)),
        relevance=toy.relevance,
        locator=toy.locator,
        served_name=None,  # a server started on the build serves it under its own name
        max_new_tokens=48,  # random weights: longer answers are only noise
    )
