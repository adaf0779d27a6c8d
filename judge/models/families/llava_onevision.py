"""LLaVA-OneVision: a Qwen2 language model in ChatML turns that put every image before the
text (`<|im_start|>user <image>\\n...`), a SigLIP tower, and "anyres" tiling: the whole image
plus a grid of tiles, each row of tile features ended by an image-newline token."""

from __future__ import annotations

from pathlib import Path

from judge.models.families import _save, _tokenizer

SPECIALS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<image>", "<video>")
# The real template, shortened: images, then videos, then the text, in each turn.
CHAT_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + ' ' }}"
    "{% if message['content'] is string %}{{ '\n' + message['content'] }}{% else %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'image') %}"
    "{{ '<image>' }}{% endfor %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'video') %}"
    "{{ '<video>' }}{% endfor %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}"
    "{{ '\n' + content['text'] }}{% endfor %}{% endif %}"
    "{{ '<|im_end|>' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
# The tower's input side and patch: 4x4 patches of 28 pixels, so a tile is 16 tokens and a
# 224x224 image (2x2 tiles and the whole) under a hundred; grids up to 4x4 tiles.
TILE = 112
PATCH = 28
PINPOINTS = [[TILE * rows, TILE * cols] for rows in range(1, 5) for cols in range(1, 5)]
RENAMES = _save.SIGLIP_RENAMES


def build(out: Path) -> None:
    """Write the tiny LLaVA-OneVision build into `out`."""
    from transformers import (
        LlavaOnevisionConfig,
        LlavaOnevisionImageProcessor,
        LlavaOnevisionProcessor,
        LlavaOnevisionVideoProcessor,
    )

    tokenizer = _tokenizer.small_tokenizer(
        SPECIALS,
        chat_template=CHAT_TEMPLATE,
        named={"eos_token": "<|im_end|>", "pad_token": "<|endoftext|>"},
        extra={"image_token": "<image>", "video_token": "<video>"},
    )
    ids = tokenizer.convert_tokens_to_ids
    config = LlavaOnevisionConfig(
        text_config={
            "model_type": "qwen2",
            "vocab_size": _tokenizer.padded_vocab(tokenizer),
            **_save.TINY_TEXT,
            "bos_token_id": ids("<|endoftext|>"),
            "eos_token_id": ids("<|im_end|>"),
            "pad_token_id": ids("<|endoftext|>"),
            "tie_word_embeddings": False,
        },
        vision_config={
            "model_type": "siglip_vision_model",
            "hidden_size": 64,
            "intermediate_size": 128,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "image_size": TILE,
            "patch_size": PATCH,
            "vision_use_head": False,
        },
        image_token_index=ids("<image>"),
        video_token_index=ids("<video>"),
        image_grid_pinpoints=PINPOINTS,
        vision_feature_select_strategy="full",
        vision_feature_layer=-1,
        vision_aspect_ratio="anyres_max_9",
        tie_word_embeddings=False,
    )
    model = _save.seeded_model(config)
    size = {"height": TILE, "width": TILE}
    processor = LlavaOnevisionProcessor(  # type: ignore[no-untyped-call]
        image_processor=LlavaOnevisionImageProcessor(size=size, image_grid_pinpoints=PINPOINTS),
        tokenizer=tokenizer,
        video_processor=LlavaOnevisionVideoProcessor(size=size),
        num_image_tokens=(TILE // PATCH) ** 2,
        vision_feature_select_strategy="full",
        chat_template=CHAT_TEMPLATE,
        vision_aspect_ratio="anyres_max_9",
    )
    _save.save(model, processor, out, RENAMES)
