"""InternVL (the transformers-native InternVL 3 layout, model_type internvl): a Qwen2
language model in ChatML turns, an InternViT tower whose features are pixel-shuffled
(downsample ratio 0.5), and images cut into up to 4 tiles plus a thumbnail, each tile
written as <img><IMG_CONTEXT>*64</img>. vLLM serves it with its InternS1 code."""

from __future__ import annotations

from pathlib import Path

from judge.models.families import _save, _tokenizer

SPECIALS = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<img>",
    "</img>",
    "<IMG_CONTEXT>",
    "<video>",
)
# The real template, shortened: ChatML, each image as "<IMG_CONTEXT>\n" where it stands
# (the processor wraps it in <img>...</img> and repeats it per token).
CHAT_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' }}"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{% for content in message['content'] %}"
    "{% if content['type'] == 'image' %}{{ '<IMG_CONTEXT>\n' }}"
    "{% elif content['type'] == 'video' %}{{ '<video>\n' }}"
    "{% elif content['type'] == 'text' %}{{ content['text'] }}{% endif %}"
    "{% endfor %}{% endif %}{{ '<|im_end|>\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
# The -hf checkpoints on the hub are in transformers' layout (model.language_model.*,
# model.vision_tower.*, model.multi_modal_projector.*, lm_head); transformers 5.19 saves
# the older LLaVA layout for this model type, so the names go back.
RENAMES = (
    (r"^language_model\.model\.", "model.language_model."),
    (r"^language_model\.lm_head\.", "lm_head."),
    (r"^vision_tower\.", "model.vision_tower."),
    (r"^multi_modal_projector\.", "model.multi_modal_projector."),
)
TILE = 224  # the tower's input side: 16x16 patches of 14 pixels, shuffled to 64 tokens
PATCH = 14
DOWNSAMPLE = 0.5
IMAGE_TOKENS = int((TILE // PATCH) ** 2 * DOWNSAMPLE**2)


def build(out: Path) -> None:
    """Write the tiny InternVL build into `out`."""
    from transformers import (
        GotOcr2ImageProcessor,
        InternVLConfig,
        InternVLProcessor,
        InternVLVideoProcessor,
    )

    tokenizer = _tokenizer.small_tokenizer(
        SPECIALS,
        chat_template=CHAT_TEMPLATE,
        named={"eos_token": "<|im_end|>", "pad_token": "<|endoftext|>"},
        extra={
            "start_image_token": "<img>",
            "end_image_token": "</img>",
            "context_image_token": "<IMG_CONTEXT>",
            "video_token": "<video>",
        },
    )
    ids = tokenizer.convert_tokens_to_ids
    config = InternVLConfig(
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
            "hidden_size": 64,
            "intermediate_size": 128,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "image_size": [TILE, TILE],
            "patch_size": [PATCH, PATCH],
        },
        image_token_id=ids("<IMG_CONTEXT>"),
        image_seq_length=IMAGE_TOKENS,
        downsample_ratio=DOWNSAMPLE,
        tie_word_embeddings=False,
    )
    model = _save.seeded_model(config)
    size = {"height": TILE, "width": TILE}
    processor = InternVLProcessor(  # type: ignore[no-untyped-call]
        image_processor=GotOcr2ImageProcessor(
            size=size, crop_to_patches=True, min_patches=1, max_patches=4
        ),
        tokenizer=tokenizer,
        video_processor=InternVLVideoProcessor(size=size),
        image_seq_length=IMAGE_TOKENS,
        chat_template=CHAT_TEMPLATE,
    )
    _save.save(model, processor, out, RENAMES)
