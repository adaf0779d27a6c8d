"""Qwen3-VL: Qwen's special tokens on a small BPE (its vocabulary is Qwen2.5's ranks, which
the Qwen2.5-VL build already carries: a second copy would only double a slow server start),
ChatML turns without a default system prompt,
interleaved M-RoPE, DeepStack features from the ViT, 16-pixel patches merged 2x2
(49 image tokens at 224x224)."""

from __future__ import annotations

from pathlib import Path

from judge.models.families import _save, _tokenizer
from judge.models.families.qwen2_5_vl import MAX_PIXELS, MIN_PIXELS

# The real (Instruct) template, shortened: ChatML, no default system prompt, each image as
# <|vision_start|><|image_pad|><|vision_end|>.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' or 'video' in content %}"
    "<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}"
    "{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
# Qwen3-VL was published in transformers' own layout (model.language_model.*,
# model.visual.*, lm_head): nothing to rename.
RENAMES: tuple[tuple[str, str], ...] = ()


def build(out: Path) -> None:
    """Write the tiny Qwen3-VL build into `out`."""
    from transformers import (
        Qwen2VLImageProcessor,
        Qwen3VLConfig,
        Qwen3VLProcessor,
        Qwen3VLVideoProcessor,
    )

    tokenizer = _tokenizer.small_tokenizer(
        (*_tokenizer.QWEN_SPECIALS, *_tokenizer.QWEN_TOOL_TOKENS),
        chat_template=CHAT_TEMPLATE,
        named={"eos_token": "<|im_end|>", "pad_token": "<|endoftext|>"},
        plain_added=_tokenizer.QWEN3_EXTRA,
    )
    ids = tokenizer.convert_tokens_to_ids
    config = Qwen3VLConfig(
        text_config={
            "vocab_size": _tokenizer.padded_vocab(tokenizer),
            **_save.TINY_TEXT,
            "head_dim": 64,
            "rope_parameters": {
                "rope_type": "default",
                "rope_theta": 5000000.0,
                "mrope_section": [12, 10, 10],
                "mrope_interleaved": True,
            },
            "bos_token_id": ids("<|endoftext|>"),
            "eos_token_id": ids("<|im_end|>"),
            "pad_token_id": ids("<|endoftext|>"),
            "tie_word_embeddings": True,
        },
        vision_config={
            "depth": 2,
            "hidden_size": 64,
            "intermediate_size": 128,
            "num_heads": 2,
            "out_hidden_size": 64,
            "patch_size": 16,
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
            "num_position_embeddings": 256,
            "deepstack_visual_indexes": [0],
        },
        image_token_id=ids("<|image_pad|>"),
        video_token_id=ids("<|video_pad|>"),
        vision_start_token_id=ids("<|vision_start|>"),
        vision_end_token_id=ids("<|vision_end|>"),
        tie_word_embeddings=True,
    )
    model = _save.seeded_model(config)
    size = {"shortest_edge": MIN_PIXELS, "longest_edge": MAX_PIXELS}
    processor = Qwen3VLProcessor(  # type: ignore[no-untyped-call]
        image_processor=Qwen2VLImageProcessor(size=size, patch_size=16, merge_size=2),
        tokenizer=tokenizer,
        video_processor=Qwen3VLVideoProcessor(size=size, patch_size=16, merge_size=2),
        chat_template=CHAT_TEMPLATE,
    )
    _save.save(model, processor, out, RENAMES)
