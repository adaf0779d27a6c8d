"""Save a build with the key names the family's real hub checkpoints use.

transformers 5 keeps some models in another layout than their published checkpoints
(`model.language_model.*` where Gemma 3's hub files say `language_model.model.*`, a
SigLIP tower without its `vision_model.` level) and converts when it loads. vLLM's model
files map only the layouts that exist on the hub, so a build saved in transformers'
internal layout can fail there; saved in the hub's layout it loads in both.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

WEIGHTS = "model.safetensors"
# The language model of most builds: as small as the families' code allows, two layers so
# that a layer's output feeds another (as in every real model).
TINY_TEXT: dict[str, Any] = {
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "num_key_value_heads": 1,
    "max_position_embeddings": 4096,
}


def seeded_model(config: Any, seed: int = 0) -> Any:
    """The family's image-text-to-text model for `config`, random weights from `seed`."""
    import torch
    from transformers import AutoModelForImageTextToText

    torch.manual_seed(seed)
    model = AutoModelForImageTextToText.from_config(  # type: ignore[no-untyped-call]
        config, dtype=torch.float32
    )
    return model.eval()


def save(
    model: Any,
    processor: Any,
    out: Path,
    renames: Sequence[tuple[str, str]] = (),
) -> None:
    """Save `model` and `processor` into `out`, the weights' keys renamed by `renames`
    (regular expressions, applied in order; the first that matches a key wins)."""
    from safetensors.torch import load_file, save_file

    model.save_pretrained(out)
    processor.save_pretrained(out)
    weights = out / WEIGHTS
    if renames:
        tensors = load_file(weights)
        renamed = {rename_key(key, renames): tensor for key, tensor in tensors.items()}
        if len(renamed) != len(tensors):
            raise RuntimeError("two weights were renamed to the same key")
        save_file(renamed, weights, metadata={"format": "pt"})
    _drop_generation_noise(out)


def rename_key(key: str, renames: Sequence[tuple[str, str]]) -> str:
    """`key` under the first of `renames` whose pattern matches it."""
    for pattern, replacement in renames:
        new, count = re.subn(pattern, replacement, key, count=1)
        if count:
            return new
    return key


def _drop_generation_noise(out: Path) -> None:
    """Greedy decoding, whatever transformers copied from the config: a random model's
    sampled answers would make a run differ from the next."""
    path = out / "generation_config.json"
    if path.is_file():
        config = json.loads(path.read_text())
        for key in ("do_sample", "temperature", "top_p", "top_k"):
            config.pop(key, None)
        path.write_text(json.dumps(config, indent=2) + "\n")


def saved_keys(folder: Path) -> list[str]:
    """The weight names in a build's checkpoint."""
    from safetensors import safe_open

    with safe_open(str(Path(folder) / WEIGHTS), "pt") as handle:
        return sorted(handle.keys())


# The LLaVA-style hub layout (Gemma 3, LLaVA-OneVision, Mistral 3 published so, before
# transformers 4.52 moved the parts under model.*): the language model with its own
# model./lm_head. levels, a SigLIP tower with its vision_model. level.
LLAVA_RENAMES: tuple[tuple[str, str], ...] = (
    (r"^model\.language_model\.", "language_model.model."),
    (r"^model\.vision_tower\.", "vision_tower."),
    (r"^model\.multi_modal_projector\.", "multi_modal_projector."),
    (r"^model\.image_newline", "image_newline"),
    (r"^lm_head\.", "language_model.lm_head."),
)
SIGLIP_RENAMES: tuple[tuple[str, str], ...] = (
    (r"^(model\.)?vision_tower\.(vision_model\.)?", "vision_tower.vision_model."),
    *LLAVA_RENAMES,
)
