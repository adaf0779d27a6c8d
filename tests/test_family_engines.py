"""The family quirks on real engines, with the tiny random-weight builds of
judge.models.families (built in seconds, cached):

* Llama 4 through transformers: its processor's bfloat16 pixels are cast to the float32
  model, so an image query is answered (it used to fail, leaving every rule undecided);
* SmolVLM without `num2words`: loading ends in a BackendError naming the fix, never a
  traceback, and `judge doctor` shows the failing row;

Every family on the vLLM server and in process (one BOS, the same token ids and label
probabilities as transformers, the cascade's JSON without free whitespace):
tests/test_family_matrix.py.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

import pytest
from PIL import Image, ImageDraw

from judge.errors import BackendError
from judge.models.base import YesNoQuery

pytestmark = [pytest.mark.slow, pytest.mark.matrix]

families = pytest.importorskip("judge.models.families")
pytest.importorskip("transformers")


def build(name: str) -> Path:
    try:
        return Path(families.build_family(name))
    except ImportError as exc:  # the families extra is not installed
        pytest.skip(f"the tiny {name} build needs {exc}")


def picture() -> Image.Image:
    image = Image.new("RGB", (96, 80), (240, 240, 240))
    draw = ImageDraw.Draw(image)
    draw.ellipse((10, 10, 50, 50), fill=(220, 20, 20))
    draw.rectangle((55, 30, 90, 70), fill=(20, 40, 200))
    return image


def queries() -> list[YesNoQuery]:
    image = picture()
    return [
        YesNoQuery("Answer Yes or No.", "Is there a red circle?", image),
        YesNoQuery("Answer Yes or No.", "Is there a blue square?", image),
        YesNoQuery("Answer Yes or No.", "Is there a red circle?"),
    ]


def hf_backend(folder: Path) -> Any:
    from judge.models.hf import HFBackend

    return HFBackend(str(folder), device="cpu")


# -- transformers only ---------------------------------------------------------------------


def test_llama4_on_transformers_answers_image_queries() -> None:
    import torch

    backend = hf_backend(build("llama4"))
    assert backend.family.name == "Llama 4"
    # The processor still returns bfloat16 pixels: the back end's cast is what helps.
    raw = backend._processor(images=[picture()], text=["<|image|>"], return_tensors="pt")
    assert raw["pixel_values"].dtype == torch.bfloat16
    results = asyncio.run(backend.yes_no(queries()))
    assert all(r.error is None and r.m is not None for r in results), results
    ids = backend.prompt_token_ids(queries()[0])
    bos = backend._processor.tokenizer.bos_token_id
    assert ids[0] == bos and ids[1] != bos


def test_smolvlm_without_num2words_names_the_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    import transformers.models.smolvlm.processing_smolvlm as processing

    from judge.models.doctor import diagnose, raise_for

    folder = build("smolvlm")
    # What an environment without num2words has: transformers' import of it failed.
    monkeypatch.setattr(processing, "num2words", None)
    monkeypatch.setitem(sys.modules, "num2words", None)  # `import num2words` raises
    with pytest.raises(BackendError) as info:
        hf_backend(folder)
    text = str(info.value)
    assert info.value.exit_code == 3
    assert "a package it needs is missing" in text
    assert "Fix: SmolVLM needs `num2words`: pip install 'judge[smolvlm]'" in text
    assert info.value.__cause__ is None and info.value.__suppress_context__
    checks = diagnose("hf", model=str(folder))
    [load] = [c for c in checks if not c.ok]
    assert load.name == "load" and "pip install 'judge[smolvlm]'" in load.found
    with pytest.raises(BackendError, match=r"load check failed.*judge\[smolvlm\]"):
        raise_for(checks)


def test_smolvlm_labels_are_read_after_assistant_colon() -> None:
    backend = hf_backend(build("smolvlm"))
    ids = backend.prompt_token_ids(queries()[0])
    tokenizer = backend._processor.tokenizer
    assert tokenizer.decode(ids[-3:]).endswith("Assistant:")
    # " Yes" (after "Assistant:") is among the spellings read.
    assert " Yes" in backend.labels.yes.values() and " No" in backend.labels.no.values()
