"""The tiny Qwen2.5-VL-architecture VLM of the toy world: tokenizer, chat template, config.

`build_vlm(out_dir)` writes an untrained model folder that loads through the ordinary code
paths (`AutoModelForImageTextToText`, `AutoProcessor`) and that vLLM can serve:

* a byte-level BPE tokenizer trained with `tokenizers` on the judge's own prompt texts and
  the toy world's words, so prompts are short; Qwen's special tokens; and "Yes", "No",
  " Yes", " No", "yes", "no" each a single token, because the judge reads the probability
  of exactly those tokens;
* a Qwen2-VL chat template (`<|vision_start|><|image_pad|><|vision_end|>` for an image),
  so the hf back end and vLLM turn the same messages into the same tokens;
* an image processor that scales every image to 224x224 pixels in 14-px patches, without
  the 2x2 merge: 16 x 16 = 256 image tokens, the count Qwen2.5-VL gives a 448-px image, so
  an image's share of a prompt (and what the prefix cache saves) is a real model's.

Sizes follow docs/vllm-cpu.md: attention heads of dim 64 and `mrope_section` [8, 12, 12]
are known to serve on vLLM's CPU build.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace
from pathlib import Path
from typing import Any

# Qwen2-VL's special tokens, in Qwen's order, so ids line up with what tooling expects.
SPECIAL_TOKENS: tuple[str, ...] = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|object_ref_start|>",
    "<|object_ref_end|>",
    "<|box_start|>",
    "<|box_end|>",
    "<|quad_start|>",
    "<|quad_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
)

# Labels the judge reads; each must be one token.
LABEL_TOKENS: tuple[str, ...] = ("Yes", "No", " Yes", " No", "yes", "no")

# Qwen2-VL's template, minus the default system prompt (it would only lengthen every
# prompt of a model that never saw it). Images become vision_start/image_pad/vision_end.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' or 'video' in content %}"
    "<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}"
    "{% endif %}{% endfor %}<|im_end|>\n"
    "{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

# Token geometry: 224 px in 14-px patches, not merged, so 16 x 16 = 256 image tokens, as
# Qwen2.5-VL gives a 448-px image. The merge is left out because 256 merged tokens would
# need 1024 patches per image, too slow to train on 2 CPU cores. Qwen2.5-VL, not Qwen2-VL:
# vLLM 0.32 builds Qwen2-VL's patch merger for a 2x2 merge whatever the config says, and
# Qwen2.5-VL's for the configured one. Its windowed attention (8 x 8 patches) also keeps
# the vision tower's cost linear in the patch count, with one global layer last.
IMAGE_SIDE = 224
PATCH = 14
MERGE = 1
WINDOW = 112  # pixels: 8 x 8 patches per attention window
MAX_PIXELS = IMAGE_SIDE * IMAGE_SIDE
MIN_PIXELS = IMAGE_SIDE * IMAGE_SIDE  # small crops are scaled up to the same budget
IMAGE_TOKENS = (IMAGE_SIDE // (PATCH * MERGE)) ** 2

DEFAULT_CONFIG: dict[str, Any] = {
    "vocab_size": 1024,
    "hidden_size": 128,
    "intermediate_size": 512,
    "num_hidden_layers": 3,
    "num_attention_heads": 2,
    "num_key_value_heads": 1,
    "vision_embed_dim": 128,
    "vision_depth": 3,
    "vision_heads": 4,
    "vision_mlp_ratio": 2,
}


def _example_statements() -> list[str]:
    from judge.toy import world

    return world.example_statements()


def tokenizer_corpus(extra: Iterable[str] = ()) -> list[str]:
    """Texts the tokenizer learns its merges from: every judge prompt, rendered, and the
    compile tasks' training rules and answers."""
    from judge import prompts
    from judge.toy.compile_tasks import (
        SCORE_ANSWER,
        VAGUE_EXPLANATION,
        VAGUE_SCORE_ANSWER,
        split,
    )
    from judge.toy.labelled import toy_constitution
    from judge.toy.train_vlm import (
        baseline_reason_answer,
        baseline_summary_answer,
        reason_answer,
        summary_answer,
        topic,
    )

    statements = _example_statements()
    rules = [r.text for r in toy_constitution().rules]
    texts: list[str] = [prompts.render("visibility_instructions"), prompts.render("summarise"),
                        prompts.render("baseline_summarise")]
    for statement in statements:
        texts.append(prompts.render("visibility_question", statement=statement))
        texts.append(prompts.render("reason", statement=statement))
    for colours in (["red"], ["red", "blue"], ["red", "green", "blue"]):
        texts.append(prompts.render("relevance_question", topic=topic(colours)))
    for yes in (True, False):
        texts += [reason_answer(yes), summary_answer(yes), baseline_reason_answer(yes),
                  baseline_summary_answer(yes)]
    for name in ("baseline_prior", "baseline_prior_cot"):
        texts.append(prompts.render(name))
    for name in ("baseline_constitution", "baseline_constitution_cot"):
        texts.append(prompts.render(name, rules=rules))
    for rule in split()[0]:
        vague = replace(rule, vague=True)
        texts += [prompts.render("objectify_score", rule=rule.text),
                  prompts.render("preconditions", rule=rule.text), rule.answer(),
                  prompts.render("objectify_score", rule=vague.text),
                  prompts.render("objectify_rewrite", rule=vague.text,
                                 explanation=VAGUE_EXPLANATION), vague.rewrite_answer()]
    texts += [SCORE_ANSWER, VAGUE_SCORE_ANSWER]
    texts.extend(extra)
    # Repeated so that BPE merges each label into one token (checked after training).
    for _ in range(200):
        texts.extend(["Yes", "No", "yes", "no", "Answer: Yes No yes no"])
    return texts


def build_tokenizer(vocab_size: int, extra: Iterable[str] = ()) -> Any:
    """A byte-level BPE `PreTrainedTokenizerFast` with Qwen's special tokens."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(tokenizer_corpus(extra), trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        additional_special_tokens=list(SPECIAL_TOKENS[1:]),
        model_max_length=2048,
        padding_side="left",
        clean_up_tokenization_spaces=False,
    )
    for label in LABEL_TOKENS:
        ids = fast.encode(label, add_special_tokens=False)
        if len(ids) != 1:
            raise RuntimeError(f"toy tokenizer: label {label!r} is {len(ids)} tokens, not 1")
    fast.chat_template = CHAT_TEMPLATE
    return fast


def build_processor(tokenizer: Any) -> Any:
    from transformers import Qwen2_5_VLProcessor, Qwen2VLImageProcessor, Qwen2VLVideoProcessor

    image_processor = Qwen2VLImageProcessor(
        size={"shortest_edge": MIN_PIXELS, "longest_edge": MAX_PIXELS},
        patch_size=PATCH,
        temporal_patch_size=2,
        merge_size=MERGE,
    )
    # Qwen2VLProcessor insists on a video processor; the judge never sends video.
    video_processor = Qwen2VLVideoProcessor(
        size={"shortest_edge": MIN_PIXELS, "longest_edge": MAX_PIXELS},
        patch_size=PATCH, merge_size=MERGE,
    )
    return Qwen2_5_VLProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        video_processor=video_processor,
        chat_template=CHAT_TEMPLATE,
    )


def build_config(tokenizer: Any, **overrides: Any) -> Any:
    """A `Qwen2_5_VLConfig` for the tiny model; `overrides` replace `DEFAULT_CONFIG` keys."""
    from transformers import Qwen2_5_VLConfig

    unknown = set(overrides) - set(DEFAULT_CONFIG)
    if unknown:
        raise ValueError(f"unknown toy VLM config keys: {sorted(unknown)}")
    c = {**DEFAULT_CONFIG, **overrides}
    head_dim = c["hidden_size"] // c["num_attention_heads"]
    # mrope splits head_dim/2 rotary frequencies over (time, height, width).
    half = head_dim // 2
    hw = (half - half // 4) // 2
    mrope = [half - 2 * hw, hw, hw]
    ids = {name: tokenizer.convert_tokens_to_ids(name) for name in SPECIAL_TOKENS}
    text_config = {
        "vocab_size": len(tokenizer),
        "hidden_size": c["hidden_size"],
        "intermediate_size": c["intermediate_size"],
        "num_hidden_layers": c["num_hidden_layers"],
        "num_attention_heads": c["num_attention_heads"],
        "num_key_value_heads": c["num_key_value_heads"],
        "max_position_embeddings": 4096,
        "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": mrope},
        "bos_token_id": ids["<|endoftext|>"],
        "eos_token_id": ids["<|im_end|>"],
        "pad_token_id": ids["<|endoftext|>"],
        "tie_word_embeddings": False,
    }
    vision_config = {
        "depth": c["vision_depth"],
        "hidden_size": c["vision_embed_dim"],
        "intermediate_size": c["vision_embed_dim"] * c["vision_mlp_ratio"],
        "out_hidden_size": c["hidden_size"],
        "num_heads": c["vision_heads"],
        "patch_size": PATCH,
        "spatial_merge_size": MERGE,
        "temporal_patch_size": 2,
        "window_size": WINDOW,
        "fullatt_block_indexes": [c["vision_depth"] - 1],
        "in_chans": 3,
    }
    return Qwen2_5_VLConfig(
        text_config=text_config,
        vision_config=vision_config,
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
        tie_word_embeddings=False,
    )


def new_vlm(seed: int = 0, **config: Any) -> tuple[Any, Any]:
    """An untrained (model, processor) pair in memory, seeded."""
    import torch
    from transformers import Qwen2_5_VLForConditionalGeneration

    tokenizer = build_tokenizer(int(config.get("vocab_size", DEFAULT_CONFIG["vocab_size"])))
    processor = build_processor(tokenizer)
    cfg = build_config(tokenizer, **config)
    torch.manual_seed(seed)
    model = Qwen2_5_VLForConditionalGeneration(cfg).eval()
    return model, processor


def save_vlm(model: Any, processor: Any, out_dir: str | Path) -> Path:
    """Save model and processor as one folder that transformers and vLLM load."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    eos = processor.tokenizer.convert_tokens_to_ids("<|im_end|>")
    pad = processor.tokenizer.convert_tokens_to_ids("<|endoftext|>")
    model.generation_config.eos_token_id = eos
    model.generation_config.pad_token_id = pad
    model.generation_config.do_sample = False
    model.save_pretrained(out, safe_serialization=True)
    processor.save_pretrained(out)
    return out


def build_vlm(out_dir: str | Path, *, seed: int = 0, **config: Any) -> Path:
    """Write an untrained tiny VLM to `out_dir` and return the folder.

    Args:
        out_dir: folder to create (files in it are overwritten).
        seed: torch seed for the random weights.
        **config: overrides of `DEFAULT_CONFIG` (hidden_size, num_hidden_layers, ...).
    """
    model, processor = new_vlm(seed, **config)
    return save_vlm(model, processor, out_dir)
