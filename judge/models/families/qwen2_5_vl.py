"""Qwen2.5-VL: Qwen's real vocabulary, ChatML turns, a default system prompt, and a
windowed ViT whose 2x2-merged 14-pixel patches give 64 image tokens at 224x224."""

from __future__ import annotations

from pathlib import Path

from judge.models.families import _save, _tokenizer

# The real template, shortened: ChatML, the default system prompt when none is given,
# each image as <|vision_start|><|image_pad|><|vision_end|> where it stands in the turn.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' or 'video' in content %}"
    "<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}"
    "{% endfor %}<|im_end|>\n{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
# What a Qwen2.5-VL checkpoint on the hub calls its weights (transformers 5 keeps the
# language model under model.language_model and the ViT under model.visual).
RENAMES = (
    (r"^model\.language_model\.", "model."),
    (r"^model\.visual\.", "visual."),
)
VOCAB_SIZE = 151936  # the real config's: the 151,665 tokens padded for the embedding
MIN_PIXELS = 56 * 56
MAX_PIXELS = 448 * 448


def qwen_processor(processor_class: type, tokenizer: object, patch_size: int) -> object:
    """A Qwen2-VL-style processor (image and video) with small pixel budgets."""
    from transformers import Qwen2VLImageProcessor, Qwen2VLVideoProcessor

    size = {"shortest_edge": MIN_PIXELS, "longest_edge": MAX_PIXELS}
    image = Qwen2VLImageProcessor(size=size, patch_size=patch_size, merge_size=2)
    video = Qwen2VLVideoProcessor(size=size, patch_size=patch_size, merge_size=2)
    return processor_class(
        image_processor=image,
        tokenizer=tokenizer,
        video_processor=video,
        chat_template=CHAT_TEMPLATE,
    )


def build(out: Path) -> None:
    """Write the tiny Qwen2.5-VL build into `out`."""
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLProcessor

    core = _tokenizer.qwen_tokenizer()
    tokenizer = _tokenizer.wrap(
        core,
        chat_template=CHAT_TEMPLATE,
        named={"eos_token": "<|im_end|>", "pad_token": "<|endoftext|>"},
        errors="replace",
    )
    ids = tokenizer.convert_tokens_to_ids
    config = Qwen2_5_VLConfig(
        text_config={
            "vocab_size": VOCAB_SIZE,
            **_save.TINY_TEXT,
            "rope_parameters": {
                "rope_type": "default",
                "rope_theta": 1000000.0,
                "mrope_section": [4, 6, 6],
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
            "patch_size": 14,
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
            "window_size": 112,
            "fullatt_block_indexes": [1],
        },
        image_token_id=ids("<|image_pad|>"),
        video_token_id=ids("<|video_pad|>"),
        vision_start_token_id=ids("<|vision_start|>"),
        vision_end_token_id=ids("<|vision_end|>"),
        tie_word_embeddings=True,
    )
    model = _save.seeded_model(config)
    processor = qwen_processor(Qwen2_5_VLProcessor, tokenizer, patch_size=14)
    _save.save(model, processor, out, RENAMES)
