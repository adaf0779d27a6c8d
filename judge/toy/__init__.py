"""The toy world and its tiny trained models (VLM, CLIP, OWLv2) for tests and demos.

    from judge.toy import ensure_toy_models
    models = ensure_toy_models()      # seed 0's models, shipped with judge and checked
    models.vlm, models.clip, models.owlv2

Heavy libraries (torch, transformers) are imported only when a model is built or loaded.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from judge.toy.build import ToyModels

__all__ = ["ToyModels", "build_toy", "ensure_toy_models"]


def ensure_toy_models() -> ToyModels:
    """The shipped toy models' folders, each file checked (see judge.toy.build)."""
    from judge.toy.build import ensure_toy_models as _ensure

    return _ensure()


def build_toy(out_dir: Any, n_images: int = 200) -> Any:
    from judge.toy.build import build_toy as _build

    return _build(out_dir, n_images=n_images)


def __getattr__(name: str) -> Any:
    if name == "ToyModels":
        from judge.toy.build import ToyModels

        return ToyModels
    raise AttributeError(name)
