"""A tiny random-weight CLIP folder, built from a config in about a second (no training,
no download): enough for tests of what happens around the relevance scan."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

BOS, EOS = 512, 513  # ids of the tiny tokenizer's special tokens


def _byte_chars() -> list[str]:
    # GPT-2/CLIP byte-to-unicode table: a vocabulary that can spell any text without merges.
    bs = [*range(33, 127), *range(161, 173), *range(174, 256)]
    cs = bs[:]
    extra = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + extra)
            extra += 1
    return [chr(c) for c in cs]


def tokenizer() -> Any:
    """A byte-level CLIP tokenizer with no merges (any text spells out)."""
    import transformers

    # Special tokens last, as in CLIP: OWLv2 treats a query whose first id is 0 as padding.
    vocab: dict[str, int] = {}
    for suffix in ("", "</w>"):
        for ch in _byte_chars():
            vocab[ch + suffix] = len(vocab)
    vocab["<|startoftext|>"] = BOS
    vocab["<|endoftext|>"] = EOS
    return transformers.CLIPTokenizer(vocab=vocab, merges=[])


def tower(hidden: int = 32, **kw: Any) -> dict[str, Any]:
    """Settings of a tiny two-layer tower."""
    return {
        "hidden_size": hidden,
        "intermediate_size": 2 * hidden,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        **kw,
    }


def text_config(vocab: int, positions: int) -> dict[str, Any]:
    """A tiny text tower for `tokenizer()`: CLIP pools the text at its end token."""
    return {
        **tower(vocab_size=vocab, max_position_embeddings=positions),
        "bos_token_id": BOS,
        "eos_token_id": EOS,
        "pad_token_id": EOS,
    }


def build_tiny_clip(folder: Path, *, threshold: float | None = None) -> Path:
    """Save a tiny CLIP (model, processor, tokenizer) in `folder`; with `threshold`, also
    the `judge-relevance.json` that makes it that model's default relevance threshold."""
    import torch
    import transformers

    tok = tokenizer()
    torch.manual_seed(0)
    model = transformers.CLIPModel(
        transformers.CLIPConfig(
            text_config=text_config(len(tok), 32),
            vision_config=tower(image_size=32, patch_size=8),
            projection_dim=16,
        )
    )
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    transformers.CLIPImageProcessor(
        size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}
    ).save_pretrained(folder)
    tok.save_pretrained(folder)
    if threshold is not None:
        body = {"threshold": threshold, "note": "tiny test CLIP"}
        (folder / "judge-relevance.json").write_text(json.dumps(body), encoding="utf-8")
    return folder
