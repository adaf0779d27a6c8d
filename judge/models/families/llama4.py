"""Llama 4: <|header_start|>role<|header_end|> turns ended by <|eot|>, BOS in the template,
a mixture-of-experts language model (a dense layer, then a routed one), and a vision
tower that cuts an image into tiles (plus a global view when there are several), each
tile's features pixel-shuffled to 16 <|patch|> tokens between <|image_start|> and
<|image_end|>."""

from __future__ import annotations

from pathlib import Path

from judge.models.families import _save, _tokenizer

SPECIALS = (
    "<|begin_of_text|>",
    "<|end_of_text|>",
    "<|header_start|>",
    "<|header_end|>",
    "<|eot|>",
    "<|eom|>",
    "<|finetune_right_pad|>",
    "<|image_start|>",
    "<|image_end|>",
    "<|image|>",
    "<|patch|>",
    "<|tile_x_separator|>",
    "<|tile_y_separator|>",
)
# The real template, shortened (no tools).
CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{{ '<|header_start|>' + message['role'] + '<|header_end|>\n\n' }}"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{% for content in message['content'] %}"
    "{% if content['type'] == 'image' %}{{ '<|image|>' }}"
    "{% elif content['type'] == 'text' %}{{ content['text'] }}{% endif %}"
    "{% endfor %}{% endif %}{{ '<|eot|>' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|header_start|>assistant<|header_end|>\n\n' }}"
    "{% endif %}"
)
# Llama 4's hub checkpoints and transformers share one layout (language_model.model.*,
# language_model.lm_head, vision_model.*, multi_modal_projector.*): nothing to rename.
RENAMES: tuple[tuple[str, str], ...] = ()
TILE = 112  # the tower's input side: 8x8 patches of 14 pixels, shuffled 2x2: 16 tokens
PATCH = 14
SHUFFLE = 0.5


def build(out: Path) -> None:
    """Write the tiny Llama 4 build into `out`."""
    from transformers import Llama4Config, Llama4ImageProcessor, Llama4Processor

    tokenizer = _tokenizer.small_tokenizer(
        SPECIALS,
        chat_template=CHAT_TEMPLATE,
        named={
            "bos_token": "<|begin_of_text|>",
            "eos_token": "<|eot|>",
            "pad_token": "<|finetune_right_pad|>",
        },
        bos="<|begin_of_text|>",
    )
    ids = tokenizer.convert_tokens_to_ids
    config = Llama4Config(
        text_config={
            "vocab_size": _tokenizer.padded_vocab(tokenizer),
            "hidden_size": 64,
            "intermediate_size": 128,
            "intermediate_size_mlp": 128,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "num_key_value_heads": 1,
            "head_dim": 32,
            "num_local_experts": 2,
            "num_experts_per_tok": 1,
            "interleave_moe_layer_step": 2,
            "max_position_embeddings": 4096,
            "bos_token_id": ids("<|begin_of_text|>"),
            "eos_token_id": [ids("<|end_of_text|>"), ids("<|eot|>"), ids("<|eom|>")],
            "pad_token_id": ids("<|finetune_right_pad|>"),
        },
        vision_config={
            "hidden_size": 64,
            # The pixel shuffle makes 4x the hidden size; the adapter's MLP takes that.
            "intermediate_size": 256,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "image_size": TILE,
            "patch_size": PATCH,
            "pixel_shuffle_ratio": SHUFFLE,
            "vision_output_dim": 64,
            "projector_input_dim": 64,
            "projector_output_dim": 64,
        },
        boi_token_index=ids("<|image_start|>"),
        eoi_token_index=ids("<|image_end|>"),
        image_token_index=ids("<|patch|>"),
    )
    model = _save.seeded_model(config)
    image = Llama4ImageProcessor(size={"height": TILE, "width": TILE}, max_patches=9)
    processor = Llama4Processor(
        image_processor=image,
        tokenizer=tokenizer,
        patch_size=PATCH,
        pixel_shuffle_ratio=SHUFFLE,
        chat_template=CHAT_TEMPLATE,
    )
    _save.save(model, processor, out, RENAMES)
