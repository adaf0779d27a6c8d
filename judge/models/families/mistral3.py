"""Mistral 3 (Mistral Small 3.1's transformers layout): Mistral's real tekken vocabulary,
[INST]...[/INST] turns with the answer straight after [/INST] (no generation prompt), a
system message as [SYSTEM_PROMPT]...[/SYSTEM_PROMPT], BOS in the template, and a Pixtral
tower at the image's own aspect: rows of [IMG] tokens ended by [IMG_BREAK], the last by
[IMG_END], 2x2 patches merged into one token."""

from __future__ import annotations

from pathlib import Path

from judge.models.families import _save, _tokenizer

# The real template, shortened (no default system prompt, no tool calls).
CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% if messages[0]['role'] == 'system' %}"
    "{% if messages[0]['content'] is string %}"
    "{% set system_message = messages[0]['content'] %}"
    "{% else %}{% set system_message = messages[0]['content'][0]['text'] %}{% endif %}"
    "{{ '[SYSTEM_PROMPT]' + system_message + '[/SYSTEM_PROMPT]' }}"
    "{% set loop_messages = messages[1:] %}"
    "{% else %}{% set loop_messages = messages %}{% endif %}"
    "{% for message in loop_messages %}"
    "{% if message['role'] == 'user' %}"
    "{% if message['content'] is string %}{{ '[INST]' + message['content'] + '[/INST]' }}"
    "{% else %}{{ '[INST]' }}{% for block in message['content'] %}"
    "{% if block['type'] == 'text' %}{{ block['text'] }}"
    "{% elif block['type'] in ['image', 'image_url'] %}{{ '[IMG]' }}{% endif %}"
    "{% endfor %}{{ '[/INST]' }}{% endif %}"
    "{% elif message['role'] == 'assistant' %}"
    "{% if message['content'] is string %}{{ message['content'] + eos_token }}"
    "{% else %}{{ message['content'][0]['text'] + eos_token }}{% endif %}"
    "{% endif %}{% endfor %}"
)
# Mistral Small 3.1's hub checkpoint (transformers layout, not consolidated.safetensors):
# language_model.model.*, language_model.lm_head, vision_tower.* (Pixtral's own names,
# no vision_model level), multi_modal_projector.*.
RENAMES = _save.LLAVA_RENAMES
PATCH = 14
MERGE = 2
LONGEST_EDGE = 448


def build(out: Path) -> None:
    """Write the tiny Mistral 3 build into `out`."""
    from transformers import Mistral3Config, PixtralImageProcessor, PixtralProcessor

    tokenizer = _tokenizer.tekken_tokenizer(CHAT_TEMPLATE)
    _tokenizer.with_bos(tokenizer.backend_tokenizer, tokenizer.bos_token)
    ids = tokenizer.convert_tokens_to_ids
    config = Mistral3Config(
        text_config={
            "model_type": "mistral",
            "vocab_size": len(tokenizer),
            **_save.TINY_TEXT,
            "head_dim": 32,
            "sliding_window": None,
            "bos_token_id": ids("<s>"),
            "eos_token_id": ids("</s>"),
            "pad_token_id": ids("<pad>"),
            "tie_word_embeddings": False,
        },
        vision_config={
            "model_type": "pixtral",
            "hidden_size": 64,
            "intermediate_size": 128,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "head_dim": 32,
            "image_size": LONGEST_EDGE,
            "patch_size": PATCH,
        },
        image_token_index=ids("[IMG]"),
        spatial_merge_size=MERGE,
        multimodal_projector_bias=False,
        vision_feature_layer=-1,
        tie_word_embeddings=False,
    )
    model = _save.seeded_model(config)
    image = PixtralImageProcessor(size={"longest_edge": LONGEST_EDGE}, patch_size=PATCH)
    processor = PixtralProcessor(
        image_processor=image,
        tokenizer=tokenizer,
        patch_size=PATCH,
        spatial_merge_size=MERGE,
        chat_template=CHAT_TEMPLATE,
    )
    _save.save(model, processor, out, RENAMES)
