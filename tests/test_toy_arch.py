"""The untrained tiny VLM: loads through the ordinary transformers paths, right tokens."""

from __future__ import annotations

from pathlib import Path

import pytest

from judge import prompts
from judge.toy import world


@pytest.fixture(scope="module")
def untrained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from judge.toy.arch import build_vlm

    return build_vlm(tmp_path_factory.mktemp("vlm"), seed=0)


def test_loads_and_answers_with_single_label_tokens(untrained: Path) -> None:
    import torch
    from transformers import AutoModelForImageTextToText, AutoProcessor

    model = AutoModelForImageTextToText.from_pretrained(untrained).eval()
    processor = AutoProcessor.from_pretrained(untrained)
    for label in ("Yes", "No", " Yes", " No", "yes", "no"):
        assert len(processor.tokenizer.encode(label, add_special_tokens=False)) == 1
    msgs = [{"role": "user", "content": [
        {"type": "text", "text": prompts.render("visibility_instructions")},
        {"type": "image"},
        {"type": "text", "text": prompts.render("visibility_question", statement="a red shape")},
    ]}]
    text = processor.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
    assert "<|vision_start|><|image_pad|><|vision_end|>" in text
    assert text.endswith("<|im_start|>assistant\n")
    enc = processor(text=[text], images=[world.make_scene(0).image], return_tensors="pt")
    from judge.toy.arch import IMAGE_TOKENS

    assert IMAGE_TOKENS == 16  # vLLM 0.32 serves Qwen2-VL only with the 2x2 merge
    assert int((enc["input_ids"] == processor.tokenizer.convert_tokens_to_ids(
        "<|image_pad|>")).sum()) == IMAGE_TOKENS
    assert enc["input_ids"].shape[1] < 512  # far below vLLM's 2048
    with torch.no_grad():
        logits = model(**enc).logits
    assert logits.shape[-1] >= len(processor.tokenizer)
    # Same seed, same weights.
    from judge.toy.arch import new_vlm

    again, _ = new_vlm(0)
    a = dict(model.named_parameters())
    assert all(torch.equal(a[k], v) for k, v in again.named_parameters())


def test_training_processes_run_pinned_avx2_kernels() -> None:
    """The training children see the pinned instruction set (read when torch loads), so a
    build on an AVX-512 machine takes the same kernels as on an AVX2 one."""
    from concurrent.futures import ProcessPoolExecutor
    from multiprocessing import get_context

    from judge.toy.build import _pinned_child, _pinned_env

    with _pinned_env(), ProcessPoolExecutor(1, mp_context=get_context("spawn")) as pool:
        capability = pool.submit(_pinned_child).result()
    assert capability == "AVX2"
