"""Gemma 3: turns as <start_of_turn>user / model, no system role (the template folds a
system message into the first user turn), BOS in the template, a SigLIP tower whose
16x16 patches are pooled to 64 image tokens whatever the image's size."""

from __future__ import annotations

from pathlib import Path

from judge.models.families import _save, _tokenizer

SPECIALS = (
    "<pad>",
    "<eos>",
    "<bos>",
    "<unk>",
    "<start_of_turn>",
    "<end_of_turn>",
    "<start_of_image>",
    "<end_of_image>",
    "<image_soft_token>",
)
# vLLM's Gemma 3 processor looks these up as vocabulary entries (KeyError otherwise); the
# real SentencePiece vocabulary has them.
NEWLINE_RUNS = ("\n", "\n\n", "\n\n\n", "\n\n\n\n")
# The real template, shortened.
CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% if messages[0]['role'] == 'system' %}"
    "{% if messages[0]['content'] is string %}"
    "{% set first_user_prefix = messages[0]['content'] + '\n\n' %}"
    "{% else %}{% set first_user_prefix = messages[0]['content'][0]['text'] + '\n\n' %}"
    "{% endif %}{% set loop_messages = messages[1:] %}"
    "{% else %}{% set first_user_prefix = '' %}{% set loop_messages = messages %}{% endif %}"
    "{% for message in loop_messages %}"
    "{% set role = 'model' if message['role'] == 'assistant' else message['role'] %}"
    "<start_of_turn>{{ role }}\n{{ first_user_prefix if loop.first else '' }}"
    "{% if message['content'] is string %}{{ message['content'] | trim }}"
    "{% else %}{% for item in message['content'] %}"
    "{% if item['type'] == 'image' %}<start_of_image>"
    "{% elif item['type'] == 'text' %}{{ item['text'] | trim }}{% endif %}"
    "{% endfor %}{% endif %}<end_of_turn>\n{% endfor %}"
    "{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}"
)
# Gemma 3's hub checkpoints: language_model.model.*, vision_tower.vision_model.*,
# multi_modal_projector.* (transformers 5.19 saves the tower without its vision_model
# level, which vLLM does not map; transformers loads either).
RENAMES = _save.SIGLIP_RENAMES
IMAGE_SIZE = 224
IMAGE_TOKENS = 64


def build(out: Path) -> None:
    """Write the tiny Gemma 3 build into `out`."""
    from transformers import Gemma3Config, Gemma3ImageProcessor, Gemma3Processor

    tokenizer = _tokenizer.small_tokenizer(
        SPECIALS,
        chat_template=CHAT_TEMPLATE,
        named={
            "bos_token": "<bos>",
            "eos_token": "<eos>",
            "pad_token": "<pad>",
            "unk_token": "<unk>",
        },
        extra={
            "image_token": "<image_soft_token>",
            "boi_token": "<start_of_image>",
            "eoi_token": "<end_of_image>",
        },
        bos="<bos>",
        plain_added=NEWLINE_RUNS,
    )
    ids = tokenizer.convert_tokens_to_ids
    config = Gemma3Config(
        text_config={
            "vocab_size": _tokenizer.padded_vocab(tokenizer),
            "hidden_size": 64,
            "intermediate_size": 128,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "num_key_value_heads": 1,
            "head_dim": 32,
            "query_pre_attn_scalar": 32,
            "sliding_window": 512,
            "max_position_embeddings": 4096,
            "bos_token_id": ids("<bos>"),
            "eos_token_id": [ids("<eos>"), ids("<end_of_turn>")],
            "pad_token_id": ids("<pad>"),
        },
        vision_config={
            "hidden_size": 64,
            "intermediate_size": 128,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "image_size": IMAGE_SIZE,
            "patch_size": 14,
            "vision_use_head": False,
        },
        mm_tokens_per_image=IMAGE_TOKENS,
        boi_token_index=ids("<start_of_image>"),
        eoi_token_index=ids("<end_of_image>"),
        image_token_index=ids("<image_soft_token>"),
    )
    model = _save.seeded_model(config)
    image = Gemma3ImageProcessor(
        size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}, do_pan_and_scan=False
    )
    processor = Gemma3Processor(
        image_processor=image,
        tokenizer=tokenizer,
        chat_template=CHAT_TEMPLATE,
        image_seq_length=IMAGE_TOKENS,
    )
    _save.save(model, processor, out, RENAMES)
