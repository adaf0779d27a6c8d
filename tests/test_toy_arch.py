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

    assert IMAGE_TOKENS == 256  # as Qwen2.5-VL at 448 px: prefix-cache figures carry over
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


def test_training_children_end_when_the_build_dies(tmp_path: Path) -> None:
    """A build killed mid-run (SIGKILL) leaves no training process burning the cores."""
    import os
    import signal
    import subprocess
    import sys
    import time

    script = tmp_path / "build.py"
    script.write_text(
        "import os, time\n"
        "from concurrent.futures import ProcessPoolExecutor\n"
        "from multiprocessing import get_context\n"
        "from judge.toy.build import _exit_with_parent\n"
        "def child():\n"
        "    _exit_with_parent(0.2)\n"
        "    print(os.getpid(), flush=True)\n"
        "    time.sleep(60)\n"
        "if __name__ == '__main__':\n"
        "    with ProcessPoolExecutor(1, mp_context=get_context('spawn')) as pool:\n"
        "        pool.submit(child)\n"
        "        time.sleep(60)\n"
    )
    parent = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    assert parent.stdout is not None
    child = int(parent.stdout.readline())
    parent.send_signal(signal.SIGKILL)
    parent.wait()
    stat = Path(f"/proc/{child}/stat")
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            # Gone, or a zombie waiting for an init that does not reap: ended either way.
            if stat.read_text().split(") ", 1)[1].startswith("Z"):
                return
        except FileNotFoundError:
            return
        time.sleep(0.2)
    os.kill(child, signal.SIGKILL)
    raise AssertionError("the training child outlived its killed build")


def test_towers_are_cached_apart_from_the_vlm_recipe(monkeypatch: pytest.MonkeyPatch) -> None:
    """A change to the VLM's recipe retrains the VLM alone: CLIP and OWLv2 keep their key
    (judge.toy.build.towers_hash), which still moves with their own seed."""
    from judge.toy import build

    recipe, towers = build.recipe_hash(0), build.towers_hash(0)
    recipes = build._recipes
    monkeypatch.setattr(build, "_recipes",
                        lambda seed=0: recipes(seed) | {"vlm": {"changed": True}})
    assert build.recipe_hash(0) != recipe
    assert build.towers_hash(0) == towers
    assert build.towers_hash(1) != towers


def test_towers_are_saved_once_under_their_key(tmp_path: Path) -> None:
    """A build that trained CLIP and OWLv2 keeps a copy under their key; a second build
    that trained the same towers meanwhile leaves the first copy as it is."""
    import json

    from judge.toy.build import _DONE, _save_towers

    out = tmp_path / "build"
    for name in ("clip", "owlv2"):
        (out / name).mkdir(parents=True)
        (out / name / "model.safetensors").write_bytes(name.encode())
    dest = tmp_path / "towers-key"
    _save_towers(out, {"clip": {"steps": 1}}, dest)
    _save_towers(out, {"clip": {"steps": 2}}, dest)
    assert (dest / "owlv2" / "model.safetensors").read_bytes() == b"owlv2"
    assert json.loads((dest / _DONE).read_text())["clip"]["steps"] == 1
    assert [p.name for p in tmp_path.iterdir() if "tmp" in p.name] == []
