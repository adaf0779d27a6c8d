"""SmolVLM (SmolVLM2's layout: the Idefics3 architecture with the SmolVLM processor): a
Llama-style language model, turns as `User:` / `Assistant:` (capitalised roles, so the
answer follows "Assistant:" and is " Yes" / " No"), images split into a grid of tiles
plus the whole image, each marked with <row_r_col_c> / <global-img> tokens."""

from __future__ import annotations

from pathlib import Path

from judge.models.families import _save, _tokenizer

GRID = tuple(f"<row_{row}_col_{col}>" for row in range(1, 7) for col in range(1, 7))
SPECIALS = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<fake_token_around_image>",
    "<image>",
    "<end_of_utterance>",
    "<global-img>",
    *GRID,
)
# The real template, shortened: no space after the role when the turn opens with an image.
CHAT_TEMPLATE = (
    "<|im_start|>{% for message in messages %}{{ message['role'] | capitalize }}"
    "{% if message['content'] is string %}{{ ': ' + message['content'] }}{% else %}"
    "{% if message['content'][0]['type'] == 'image' %}{{ ':' }}{% else %}{{ ': ' }}{% endif %}"
    "{% for line in message['content'] %}"
    "{% if line['type'] == 'text' %}{{ line['text'] }}"
    "{% elif line['type'] == 'image' %}{{ '<image>' }}{% endif %}{% endfor %}{% endif %}"
    "<end_of_utterance>\n{% endfor %}"
    "{% if add_generation_prompt %}{{ 'Assistant:' }}{% endif %}"
)
# SmolVLM2 was published in transformers' layout (model.text_model.*, model.vision_model.*,
# model.connector.*, lm_head): nothing to rename.
RENAMES: tuple[tuple[str, str], ...] = ()
TILE = 128  # the tower's input side: 8x8 patches of 16 pixels, shuffled 2x2: 16 tokens
PATCH = 16
SCALE = 2


def build(out: Path) -> None:
    """Write the tiny SmolVLM build into `out`."""
    from transformers import (
        SmolVLMConfig,
        SmolVLMImageProcessor,
        SmolVLMProcessor,
        SmolVLMVideoProcessor,
    )

    tokenizer = _tokenizer.small_tokenizer(
        SPECIALS,
        chat_template=CHAT_TEMPLATE,
        named={
            "bos_token": "<|im_start|>",
            "eos_token": "<end_of_utterance>",
            "pad_token": "<|im_end|>",
            "unk_token": "<|endoftext|>",
        },
        extra={
            "fake_image_token": "<fake_token_around_image>",
            "image_token": "<image>",
            "end_of_utterance_token": "<end_of_utterance>",
            "global_image_token": "<global-img>",
        },
    )
    ids = tokenizer.convert_tokens_to_ids
    config = SmolVLMConfig(
        text_config={
            "model_type": "llama",
            "vocab_size": _tokenizer.padded_vocab(tokenizer),
            **_save.TINY_TEXT,
            "bos_token_id": ids("<|im_start|>"),
            "eos_token_id": ids("<end_of_utterance>"),
            "pad_token_id": ids("<|im_end|>"),
            "tie_word_embeddings": False,
        },
        vision_config={
            "hidden_size": 64,
            "intermediate_size": 128,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "image_size": TILE,
            "patch_size": PATCH,
        },
        scale_factor=SCALE,
        image_token_id=ids("<image>"),
        pad_token_id=ids("<|im_end|>"),
        tie_word_embeddings=False,
    )
    model = _save.seeded_model(config)
    image = SmolVLMImageProcessor(
        size={"longest_edge": 2 * TILE},
        max_image_size={"longest_edge": TILE},
        do_image_splitting=True,
    )
    video = SmolVLMVideoProcessor(
        size={"longest_edge": TILE}, max_image_size={"longest_edge": TILE}
    )
    processor = SmolVLMProcessor(
        image_processor=image,
        tokenizer=tokenizer,
        video_processor=video,
        image_seq_len=(TILE // PATCH) ** 2 // SCALE**2,
        chat_template=CHAT_TEMPLATE,
    )
    _save.save(model, processor, out, RENAMES)
