"""What differs between VLM families, in one table keyed by transformers' `model_type`.

The back ends never branch on a family's name. Where judge can handle a difference
generically it does, and the table is the documented record of why:

* BOS: Gemma, Mistral and Llama 4 render BOS in the chat template and their tokenizers add
  one too. The rendered prompt is tokenized without special tokens, as vLLM does, so every
  back end sees one BOS (`leading_repeats` lets a check see a second one).
* Pixel dtype: Llama 4's processor returns bfloat16 `pixel_values` whatever the model's
  dtype; `cast_floating` casts every floating input to the model's dtype.
* Label spelling: a prompt ending in "Assistant:" (SmolVLM) is answered " Yes"; judge sums
  every single-token spelling (judge.models.base.YES_VARIANTS), so either is read.
* System role, image placement: the chat template deals with them; judge's prompt is one
  user turn, so a family without a system role loses nothing.

What judge cannot handle itself, the table says with the fix: a package the processor needs
(`needs`), and a back end that fails on the family (`limits`). `judge doctor` and the back
ends' error messages read them.
"""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

SystemRole = Literal["own", "folded", "marker"]
ImagePlacement = Literal["as_given", "images_first"]


@dataclass(frozen=True)
class Need:
    """A Python package the family's processor or model needs beyond transformers."""

    module: str  # the import name
    package: str  # the pip name
    extra: str | None = None  # judge's extra that installs it

    def hint(self, family: str) -> str:
        install = (
            f"pip install 'judge[{self.extra}]'" if self.extra else f"pip install {self.package}"
        )
        return f"{family} needs `{self.package}`: {install}"

    @property
    def installed(self) -> bool:
        return importlib.util.find_spec(self.module) is not None


@dataclass(frozen=True)
class Limit:
    """A back end (on a device) that fails on this family, why, and what to do instead."""

    backend: str  # "hf", "vllm", "vllm-server"
    device: str  # "cpu", "gpu" or "any"
    what: str  # which requests fail
    reason: str
    workaround: str

    def describe(self) -> str:
        return f"{self.what} fail: {self.reason}. Workaround: {self.workaround}"


@dataclass(frozen=True)
class Family:
    """How one VLM family differs; see the module docstring for what judge does with each."""

    name: str
    model_types: tuple[str, ...]
    label_space: bool = False  # the answer's first token has a leading space (" Yes")
    system_role: SystemRole = "own"  # own role / folded into the first user turn / marker
    bos_in_template: bool = False  # the chat template renders BOS itself
    images: ImagePlacement = "as_given"
    pixel_dtype: str = "float32"  # what the processor returns (cast to the model's dtype)
    needs: tuple[Need, ...] = ()
    limits: tuple[Limit, ...] = ()

    def missing(self) -> list[Need]:
        """The packages this family needs that are not installed."""
        return [n for n in self.needs if not n.installed]

    def limits_for(self, backend: str, device: str = "any") -> list[Limit]:
        """The known limits of `backend` on `device` ("cpu", "gpu"; "any" for all)."""
        return [
            lim
            for lim in self.limits
            if lim.backend == backend and (device == "any" or lim.device in ("any", device))
        ]


_NUM2WORDS = Need("num2words", "num2words", extra="smolvlm")

FAMILIES: tuple[Family, ...] = (
    Family("Qwen2.5-VL", ("qwen2_5_vl",)),
    Family("Qwen3-VL", ("qwen3_vl",)),
    Family("Gemma 3", ("gemma3",), system_role="folded", bos_in_template=True),
    Family("LLaVA-OneVision", ("llava_onevision",), images="images_first"),
    Family(
        "SmolVLM",
        ("smolvlm", "idefics3"),
        label_space=True,
        bos_in_template=True,
        needs=(_NUM2WORDS,),
    ),
    Family("InternVL", ("internvl",)),
    Family("Mistral 3", ("mistral3",), system_role="marker", bos_in_template=True),
    Family(
        "Llama 4",
        ("llama4",),
        bos_in_template=True,
        pixel_dtype="bfloat16",
        limits=(
            Limit(
                backend="vllm-server",
                device="cpu",
                what="images smaller than 224x224",
                reason=(
                    "vLLM's CPU build kills its engine on Llama 4's vision encoder "
                    "(Llama4UnfoldConvolution: 'Expected a.stride(-1) == 1'); every later "
                    "request fails (HTTP 500, or no server). Measured on the tiny build "
                    "(112-pixel tiles): 56x56 and 96x80 images crash it, 224x224 up to "
                    "448x448 and 300x200 pass"
                ),
                workaround=(
                    "serve Llama 4 with vLLM on a GPU, or judge on this machine with `--backend hf`"
                ),
            ),
            Limit(
                backend="vllm",
                device="cpu",
                what="images smaller than 224x224",
                reason=(
                    "vLLM's CPU build fails in Llama 4's vision encoder "
                    "(Llama4UnfoldConvolution: 'Expected a.stride(-1) == 1')"
                ),
                workaround="run vLLM on a GPU, or use `--backend hf` on a CPU",
            ),
        ),
    ),
)

GENERIC = Family("generic", ())

_BY_TYPE: dict[str, Family] = {t: f for f in FAMILIES for t in f.model_types}


def family_of(model_type: str | None) -> Family:
    """The family of a transformers `model_type`; unknown types get `GENERIC`."""
    return _BY_TYPE.get(model_type or "", GENERIC)


def model_type_of(folder: str | Path | None) -> str | None:
    """`model_type` from a local model folder's config.json; None when it is not one."""
    if not folder:
        return None
    path = Path(folder) / "config.json"
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    value = data.get("model_type") if isinstance(data, dict) else None
    return str(value) if value else None


def family_of_folder(folder: str | Path | None) -> Family:
    """The family of a local model folder (GENERIC when unknown or not local)."""
    return family_of(model_type_of(folder))


# -- generic fixes -------------------------------------------------------------------------


def cast_floating(inputs: Mapping[str, Any], dtype: Any) -> dict[str, Any]:
    """The processor's outputs with every floating-point tensor cast to `dtype`.

    Some processors (Llama 4's) return bfloat16 pixels whatever the model runs in; a
    float32 model then fails on every image. Integer tensors (ids, masks) are left alone.
    """
    out: dict[str, Any] = {}
    for key, value in inputs.items():
        is_float = getattr(value, "is_floating_point", None)
        if callable(is_float) and is_float() and value.dtype != dtype:
            value = value.to(dtype)
        out[key] = value
    return out


def leading_repeats(ids: list[int], token_id: int | None) -> int:
    """How many times `token_id` (BOS) opens `ids`: 2 or more is a doubled BOS."""
    if token_id is None:
        return 0
    count = 0
    for token in ids:
        if token != token_id:
            break
        count += 1
    return count


def added_bos(tokenizer: Any) -> str | None:
    """The BOS text the tokenizer puts before whatever it encodes, or None if it adds none."""
    bos, bos_id = getattr(tokenizer, "bos_token", None), getattr(tokenizer, "bos_token_id", None)
    if not bos or bos_id is None:
        return None
    ids = list(tokenizer("a")["input_ids"])
    return str(bos) if ids and ids[0] == bos_id else None


def strip_added_bos(text: str, bos: str | None) -> str:
    """`text` without its leading BOS when the tokenizer will add one (`bos`): a chat
    template that renders BOS (Gemma, Mistral, Llama 4) would otherwise get two."""
    if bos and text.startswith(bos):
        return text[len(bos) :]
    return text


def missing_dependency_hint(exc: ImportError, family: Family) -> str:
    """The fix for an ImportError raised while transformers loads a model or processor.

    The family's known needs come first (with judge's extra); otherwise the module the
    error names (`exc.name`, or a package named in its text, as transformers' own
    "Package `x` is required" errors do).
    """
    text = str(exc)
    known = [*family.needs, *(n for f in FAMILIES for n in f.needs)]
    for need in known:
        if exc.name == need.module or f"`{need.package}`" in text or need.module in text:
            owner = family if need in family.needs else next(f for f in FAMILIES if need in f.needs)
            return need.hint(owner.name)
    if exc.name:
        return f"install the missing package: pip install {exc.name.split('.')[0]}"
    return "install the package the error names"
