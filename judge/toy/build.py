"""Build the toy models once per recipe, cache them, and write toy sets and locks.

`ensure_toy_models()` returns the cached VLM, CLIP and OWLv2 folders, training them if the
cache lacks them. The cache key is a hash of everything that shapes the weights: the
training recipes, the source of the toy modules, the prompt templates the VLM is trained
on and the library versions. Two processes that call it at once are safe: the second
waits on a file lock and then finds the finished models.

Build cost (measured 2026-11-28 on this 2-core machine, one torch thread per process): the
VLM 17 s of phase A + 560 phase-B steps of about 1 CPU-s (575 CPU-s); CLIP 300 steps,
150 s; OWLv2 200 steps, 130 s. The VLM trains in its own process on the second core, so
the whole build takes about as long as the VLM alone: 571 s. On a loaded machine torch's
two threads spin against each other: the same VLM phase A took 257 CPU-s with two
threads, 18 with one. Two builds of the same recipe gave byte-identical VLM weights.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import fcntl
import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from judge.resources import cache_dir, data_dir

_TOY_MODULES = ("arch.py", "world.py", "train_vlm.py", "train_clip.py", "train_owl.py")
_DONE = "toy-models.json"  # written last: its presence means the folder is complete


@dataclass(frozen=True)
class ToyModels:
    """Folders of the three trained toy models (each loads with `from_pretrained`)."""

    vlm: Path
    clip: Path
    owlv2: Path
    root: Path
    recipe_hash: str

    @property
    def owl(self) -> Path:
        """Alias of `owlv2`."""
        return self.owlv2


def _recipes() -> dict[str, Any]:
    from judge.toy.train_clip import CLIPRecipe
    from judge.toy.train_owl import OwlRecipe
    from judge.toy.train_vlm import VLMRecipe

    return {"vlm": asdict(VLMRecipe()), "clip": asdict(CLIPRecipe()), "owl": asdict(OwlRecipe())}


def recipe_hash() -> str:
    """Hash of the recipes, the toy modules' source, the prompts and library versions."""
    import tokenizers
    import torch
    import transformers

    h = hashlib.sha256()
    h.update(json.dumps(_recipes(), sort_keys=True).encode())
    here = Path(__file__).resolve().parent
    for name in _TOY_MODULES:
        h.update(name.encode() + (here / name).read_bytes())
    for path in sorted(data_dir("prompts").glob("*.j2")):
        h.update(path.name.encode() + path.read_bytes())
    h.update(f"{torch.__version__}|{transformers.__version__}|{tokenizers.__version__}".encode())
    return h.hexdigest()[:16]


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _one_thread() -> None:
    import torch

    # One thread: the recipes' accuracies were measured so, float reductions then happen in
    # one fixed order (the same weights on every machine), and two threads on two shared
    # cores were measured slower, spinning against each other.
    torch.set_num_threads(1)


def _train_vlm_process(out: Path) -> dict[str, Any]:
    """The VLM's training, run in a child process (logs go to stderr)."""
    import sys

    from judge.toy.train_vlm import train_vlm

    _one_thread()
    return train_vlm(out, log=lambda line: print(f"[vlm] {line}", file=sys.stderr))


def train_all(out: Path, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Train the three models into out/{vlm,clip,owlv2}; returns the training report.

    The VLM, the longest, trains in a second process on the second core while CLIP and
    OWLv2 train here one after the other; with a single core all three run here in turn.
    """
    from concurrent.futures import ProcessPoolExecutor
    from multiprocessing import get_context

    from judge.toy.train_clip import train_clip
    from judge.toy.train_owl import train_owl

    _one_thread()
    t0 = time.time()
    report: dict[str, Any]
    if (os.cpu_count() or 1) < 2:
        report = {"vlm": _train_vlm_process(out / "vlm")}
        report |= {"clip": train_clip(out / "clip", log=log),
                   "owlv2": train_owl(out / "owlv2", log=log, clip_dir=out / "clip")}
    else:
        with ProcessPoolExecutor(1, mp_context=get_context("spawn")) as pool:
            vlm = pool.submit(_train_vlm_process, out / "vlm")
            report = {"clip": train_clip(out / "clip", log=log),
                      "owlv2": train_owl(out / "owlv2", log=log, clip_dir=out / "clip")}
            report["vlm"] = vlm.result()
    report["seconds"] = time.time() - t0
    return report


def ensure_toy_models(log: Callable[[str], None] | None = None) -> ToyModels:
    """The cached toy models, trained first if absent (minutes, once per recipe)."""
    key = recipe_hash()
    root = cache_dir() / "toy" / key
    models = ToyModels(root / "vlm", root / "clip", root / "owlv2", root, key)
    if (root / _DONE).is_file():
        return models
    with _locked(cache_dir() / "toy" / f"{key}.lock"):
        if (root / _DONE).is_file():  # another process built it while we waited
            return models
        tmp = root.with_name(f"{key}.tmp-{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        report = train_all(tmp, log=log or (lambda _s: None))
        report["recipe_hash"] = key
        (tmp / _DONE).write_text(json.dumps(report, indent=1, default=str))
        shutil.rmtree(root, ignore_errors=True)
        tmp.rename(root)
    return models


def build_toy(out_dir: str | Path, n_images: int = 200, log: Callable[[str], None] = print,
              ) -> Path:
    """Write out_dir/models/{vlm,clip,owlv2} and out_dir/set/manifest.jsonl with images."""
    from judge.toy.labelled import write_set

    out = Path(out_dir)
    models = ensure_toy_models(log=log)
    for name, src in (("vlm", models.vlm), ("clip", models.clip), ("owlv2", models.owlv2)):
        dst = out / "models" / name
        shutil.rmtree(dst, ignore_errors=True)
        shutil.copytree(src, dst)
    write_set(out / "set", n_images, split="test")
    return out


# ---- the toy constitution's lock and the checked-in sample ----------------------------


def toy_lock_text(source: Path | None = None) -> str:
    """The YAML of constitutions/toy.lock.yaml, generated from toy.yaml (hand-written
    preconditions, so no model compiles it)."""
    import yaml

    from judge import prompts
    from judge.constitution.schema import CompiledRule, ConstitutionSpec, Lock

    src = source or data_dir("constitutions") / "toy.yaml"
    raw = src.read_bytes()
    spec = ConstitutionSpec.model_validate(yaml.safe_load(raw))
    rules = []
    for r in spec.rules:
        assert r.preconditions is not None, f"toy rule {r.id} needs hand-written preconditions"
        rules.append(CompiledRule(
            id=r.id, source_text=r.text, text=r.text, text_sha256=r.text_sha256(),
            category=r.category, severity=r.severity, enabled=r.enabled,
            thresholds=r.thresholds, objectiveness=None, extraction="hand-written",
            preconditions=r.preconditions,
        ))
    lock = Lock(
        name=spec.name, source=src.name, source_sha256=hashlib.sha256(raw).hexdigest(),
        compiler_model="hand-written",
        prompt_versions=prompts.versions("visibility_instructions", "visibility_question"),
        compiled_at=_dt.datetime(2026, 11, 28, tzinfo=_dt.UTC).isoformat(),
        defaults=spec.defaults, rules=rules,
    )
    body = lock.model_dump(mode="json", exclude_none=True)
    header = "# Generated by judge.toy.build.write_toy_lock() from toy.yaml: do not edit.\n"
    return header + yaml.safe_dump(body, sort_keys=False, allow_unicode=True, width=100)


def write_toy_lock() -> Path:
    path = data_dir("constitutions") / "toy.lock.yaml"
    path.write_text(toy_lock_text(), encoding="utf-8")
    return path


def write_eval_sample(out_dir: str | Path | None = None, n: int = 24) -> Path:
    """Regenerate the small checked-in sample eval/toy/ (images + manifest.jsonl)."""
    from judge.toy.labelled import write_set

    out = Path(out_dir) if out_dir else data_dir("constitutions").parent / "eval" / "toy"
    if out.exists():
        for old in (out / "images").glob("*.png"):
            old.unlink()
    return write_set(out, n, split="sample")
