"""The toy models: shipped with judge for seed 0, built from the recipe for any seed.

`ensure_toy_models()` returns the VLM, CLIP and OWLv2 folders of seed 0 that ship inside
the package (`SHIPPED`), after checking each file's sha256: nobody waits for training to
try judge or run its tests. The shipped models record the recipe hash they were built
from; when the recipe changes (`recipe_hash`: a hash of everything that shapes the
weights: the training recipes, the source of the toy modules, the prompt templates the VLM
is trained on and the library versions), they no longer count as its result, and
`ensure_toy_models()` says which command rebuilds and ships them (`REBUILD_HINT`) unless a
build of the new recipe is in the cache.

`build_from_recipe()` trains (`judge toy build --seed N`, `--rebuild` to verify the shipped
bits, `--ship` to replace them) into the cache, once per recipe and seed. Two processes
that build at once are safe: the second waits on a file lock and then finds the finished
models. CLIP and OWLv2 are also kept under a key of their own (`towers_hash`), so a change
to the VLM's recipe retrains the VLM alone.

Build cost (measured 2026-12-02 on a 2-core machine, one torch thread per process): the
VLM 1,500 phase-0 steps (text-only, about 550 CPU-s), 60 phase-A steps, 1,200 phase-B steps
and 400 phase-C steps at 256 image tokens, about 2,600 CPU-s; CLIP 300 steps and OWLv2 200
steps, about 250 s each; the relevance threshold, a few seconds. The VLM trains in its own
process on the second core, so the whole build takes about as long as the VLM alone: about
45 minutes. On a loaded machine torch's two threads spin against each other: one VLM
phase A took 257 CPU-s with two threads, 18 with one.

The same recipe must give the same bits on every x86-64 CPU: a build on an AVX-512 machine
once gave other weights than on AVX2 machines (and missed its quality floor), because
vectorised kernels of another width sum in another order. So all training runs in child
processes whose kernels are pinned to AVX2 (`PINNED_ISA`, set before torch loads), and
each model's sha256 is checked against the one recorded for its recipe in
`expected.json` (`judge toy build` says whether it matched).
"""

from __future__ import annotations

import ast
import contextlib
import datetime as _dt
import fcntl
import functools
import hashlib
import io
import json
import os
import shutil
import time
import tokenize
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from judge.errors import InputError
from judge.resources import cache_dir, data_dir

_TOY_MODULES = ("arch.py", "world.py", "labelled.py", "compile_tasks.py", "train_vlm.py",
                "train_clip.py", "train_owl.py")
_TOWER_MODULES = ("world.py", "labelled.py", "train_clip.py", "train_owl.py")
_TOWERS = ("clip", "owlv2")
# The prompts the VLM is trained on (their text shapes the weights); other prompts may
# change without a rebuild.
TRAINED_PROMPTS = ("visibility_instructions", "visibility_question", "reason", "summarise",
                   "relevance_question", "baseline_prior", "baseline_prior_cot",
                   "baseline_constitution", "baseline_constitution_cot", "baseline_summarise",
                   "objectify_score", "objectify_rewrite", "preconditions")
_DONE = "toy-models.json"  # written last: its presence means the folder is complete
_MODELS = ("vlm", "clip", "owlv2")
EXPECTED = Path(__file__).with_name("expected.json")
# Seed 0's models, shipped as package data (18 MB): vlm/, clip/, owlv2/ and
# toy-models.json, the build report with the recipe hash and every file's sha256.
SHIPPED = Path(__file__).with_name("shipped")
REBUILD_HINT = ("rebuild and ship them with `judge toy build --seed 0 --ship --out DIR` "
                "(about 45 minutes on 2 CPU cores): it trains seed 0 from the recipe, puts the "
                "models into judge/toy/shipped/ and their sha256 into judge/toy/expected.json; "
                "commit both")
# Environment of the training processes: AVX2 kernels in ATen, oneDNN and MKL (with MKL's
# conditional numerical reproducibility), one thread each. Read when torch loads, so it is
# set before the child processes start.
PINNED_ISA: dict[str, str] = {
    "ATEN_CPU_CAPABILITY": "avx2",
    "DNNL_MAX_CPU_ISA": "AVX2",
    "ONEDNN_MAX_CPU_ISA": "AVX2",
    "MKL_ENABLE_INSTRUCTIONS": "AVX2",
    "MKL_CBWR": "AVX2,STRICT",
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
}


class ToyModelsError(InputError):
    """The shipped toy models are not what they claim (a changed file, a stale recipe):
    exit 2 with the message, never a traceback."""


@dataclass(frozen=True)
class ToyModels:
    """Folders of the three trained toy models (each loads with `from_pretrained`)."""

    vlm: Path
    clip: Path
    owlv2: Path
    root: Path
    recipe_hash: str
    seed: int = 0

    @property
    def owl(self) -> Path:
        """Alias of `owlv2`."""
        return self.owlv2


def _recipes(seed: int = 0) -> dict[str, Any]:
    from judge.toy.train_clip import CLIPRecipe
    from judge.toy.train_owl import OwlRecipe
    from judge.toy.train_vlm import VLMRecipe

    return {"vlm": asdict(VLMRecipe(seed=seed)), "clip": asdict(CLIPRecipe(seed=seed)),
            "owl": asdict(OwlRecipe(seed=seed))}


def recipe_hash(seed: int = 0, versions: bool = True) -> str:
    """Hash of the recipes (with `seed`), the toy modules' code (`code_only`), the trained
    prompts, the toy constitution's rules and, unless `versions` is false, the versions of
    torch, transformers and tokenizers. With them it keys the build cache and the recorded
    sha256 (what this recipe gives with these libraries); without them it says whether the
    shipped models are still this recipe's, on any installation."""
    return _hash(_recipes(seed), _TOY_MODULES, TRAINED_PROMPTS, versions)


def towers_hash(seed: int = 0) -> str:
    """Hash of what shapes CLIP and OWLv2 alone, which train apart from the VLM: a new VLM
    recipe reuses the towers cached under this key (about 500 CPU-s saved)."""
    recipes = {k: v for k, v in _recipes(seed).items() if k != "vlm"}
    return _hash(recipes, _TOWER_MODULES, ())


def code_only(source: str) -> str:
    """A module's source without its comments, docstrings and blank lines: what can change
    the weights. A reworded comment then keeps the recipe hash (and the shipped models)."""
    tree = ast.parse(source)
    dropped: set[int] = set()
    scopes = ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef
    for node in ast.walk(tree):
        first = node.body[0] if isinstance(node, scopes) and node.body else None
        if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) \
                and isinstance(first.value.value, str):
            dropped.update(range(first.lineno, (first.end_lineno or first.lineno) + 1))
    lines = source.splitlines()
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type == tokenize.COMMENT:
            row, col = token.start
            lines[row - 1] = lines[row - 1][:col]
    return "\n".join(line.rstrip() for number, line in enumerate(lines, 1)
                     if number not in dropped and line.strip())


def _hash(recipes: dict[str, Any], modules: tuple[str, ...], trained_prompts: tuple[str, ...],
          versions: bool = True, here: Path | None = None) -> str:
    import tokenizers
    import torch
    import transformers

    from judge.toy.labelled import toy_constitution

    h = hashlib.sha256()
    h.update(json.dumps(recipes, sort_keys=True).encode())
    here = here or Path(__file__).resolve().parent
    for name in modules:
        h.update(name.encode() + code_only((here / name).read_text(encoding="utf-8")).encode())
    for name in trained_prompts:
        h.update(name.encode() + (data_dir("prompts") / f"{name}.j2").read_bytes())
    # The rules' wording is in the baselines' questions, and their chains decide which
    # compile tasks are held out of training (judge/toy/compile_tasks.py).
    rules = [[r.id, r.text, r.enabled, [p.model_dump() for p in r.preconditions or []]]
             for r in toy_constitution().rules]
    h.update(json.dumps(rules, sort_keys=True).encode())
    if versions:
        h.update(f"{torch.__version__}|{transformers.__version__}|{tokenizers.__version__}"
                 .encode())
    return h.hexdigest()[:16]


def folder_sha256(folder: Path) -> str:
    """sha256 over a model folder's file names and bytes, in name order."""
    h = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        h.update(path.relative_to(folder).as_posix().encode() + b"\0")
        h.update(path.read_bytes())
    return h.hexdigest()


def expected_hashes(key: str) -> dict[str, str] | None:
    """The sha256 of each model recorded for recipe `key`, or None if none is recorded."""
    if not EXPECTED.is_file():
        return None
    found = json.loads(EXPECTED.read_text(encoding="utf-8")).get(key)
    return dict(found) if found else None


def check_hashes(root: Path, key: str) -> dict[str, Any]:
    """Each model's sha256 against the recorded one: {"sha256", "expected", "matched"}
    (matched is None when no hash is recorded for this recipe)."""
    got = {name: folder_sha256(root / name) for name in ("vlm", "clip", "owlv2")}
    want = expected_hashes(key)
    return {"sha256": got, "expected": want, "matched": None if want is None else got == want}


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _exit_with_parent(poll_s: float = 2.0) -> None:
    """End this training process when the build that started it dies (killed, say):
    spawned workers do not notice on their own, and an orphan would go on training for
    minutes on cores the next build needs."""
    import threading

    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(poll_s)
        os._exit(1)

    threading.Thread(target=watch, daemon=True).start()


def _pinned_child() -> str:
    """In a training process: one torch thread; returns the CPU capability torch uses."""
    import torch

    _exit_with_parent()
    # One thread: the recipes' accuracies were measured so, float reductions then happen in
    # one fixed order, and two threads on two shared cores were measured slower, spinning
    # against each other.
    torch.set_num_threads(1)
    return str(torch.backends.cpu.get_cpu_capability())


def _train_vlm_process(out: Path, seed: int) -> dict[str, Any]:
    """The VLM's training, in a pinned child process (logs go to stderr)."""
    import sys

    from judge.toy.train_vlm import VLMRecipe, train_vlm

    isa = _pinned_child()
    report = train_vlm(out, VLMRecipe(seed=seed),
                       log=lambda line: print(f"[vlm] {line}", file=sys.stderr))
    return report | {"cpu_capability": isa}


def _train_towers_process(out: Path, seed: int) -> dict[str, Any]:
    """CLIP, then OWLv2 (which starts from it), then CLIP's relevance threshold, in a pinned
    child process."""
    import sys

    from judge.toy.train_clip import CLIPRecipe, measure_relevance_threshold, train_clip
    from judge.toy.train_owl import OwlRecipe, train_owl

    isa = _pinned_child()

    def log(line: str) -> None:
        print(line, file=sys.stderr)

    report = {"clip": train_clip(out / "clip", CLIPRecipe(seed=seed), log=log),
              "owlv2": train_owl(out / "owlv2", OwlRecipe(seed=seed), log=log,
                                 clip_dir=out / "clip")}
    report["clip"]["relevance"] = measure_relevance_threshold(out / "clip")
    report["clip"]["cpu_capability"] = report["owlv2"]["cpu_capability"] = isa
    return report


@contextlib.contextmanager
def _pinned_env() -> Iterator[None]:
    saved = {k: os.environ.get(k) for k in PINNED_ISA}
    os.environ.update(PINNED_ISA)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def train_all(out: Path, seed: int = 0, log: Callable[[str], None] = print,
              use_towers: bool = True) -> dict[str, Any]:
    """Train the three models into out/{vlm,clip,owlv2}; returns the training report.

    Both jobs run in child processes with pinned kernels (`PINNED_ISA`): the VLM, the
    longest, on one core while CLIP and OWLv2 train on the other (in turn on one core).
    CLIP and OWLv2 are copied instead when the cache holds them for `towers_hash(seed)`
    (unless `use_towers` is false).
    """
    from concurrent.futures import ProcessPoolExecutor
    from multiprocessing import get_context

    t0 = time.time()
    cached = cache_dir() / "toy" / f"towers-{towers_hash(seed)}"
    have_towers = use_towers and (cached / _DONE).is_file()
    workers = 2 if (os.cpu_count() or 1) >= 2 and not have_towers else 1
    log(f"training the toy models (seed {seed}, {workers} processes, kernels pinned to AVX2"
        f"{'; CLIP and OWLv2 from the cache' if have_towers else ''})")
    with _pinned_env(), ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool:
        vlm = pool.submit(_train_vlm_process, out / "vlm", seed)
        if have_towers:
            for name in _TOWERS:
                shutil.copytree(cached / name, out / name)
            report: dict[str, Any] = json.loads((cached / _DONE).read_text(encoding="utf-8"))
        else:
            report = pool.submit(_train_towers_process, out, seed).result()
            _save_towers(out, report, cached)
        report |= {"vlm": vlm.result()}
    report["seconds"] = time.time() - t0
    return report


def _save_towers(out: Path, report: dict[str, Any], dest: Path) -> None:
    """Keep CLIP and OWLv2 under their own key, for later VLM recipes of the same seed."""
    tmp = dest.with_name(f"{dest.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    for name in _TOWERS:
        shutil.copytree(out / name, tmp / name)
    (tmp / _DONE).write_text(json.dumps(report, indent=1, default=str))
    with contextlib.suppress(OSError):  # another build saved the same towers first
        tmp.rename(dest)
    shutil.rmtree(tmp, ignore_errors=True)


def file_hashes(root: Path) -> dict[str, str]:
    """sha256 of every file of the three model folders under `root`, by relative path."""
    return {path.relative_to(root).as_posix(): hashlib.sha256(path.read_bytes()).hexdigest()
            for name in _MODELS for path in sorted((root / name).rglob("*")) if path.is_file()}


def shipped_report(shipped: Path = SHIPPED) -> dict[str, Any] | None:
    """The shipped models' build report (recipe hash, seed, file sha256), or None when this
    installation has none."""
    done = shipped / _DONE
    return json.loads(done.read_text(encoding="utf-8")) if done.is_file() else None


def verify_shipped(shipped: Path = SHIPPED) -> ToyModels:
    """The shipped models, each file checked against its recorded sha256 and each folder
    against `expected.json`; `ToyModelsError` names what differs. A changed recipe is an
    error too: the shipped bits are no longer what the recipe gives."""
    report = shipped_report(shipped)
    if report is None:
        raise ToyModelsError(f"no shipped toy models in {shipped}: {REBUILD_HINT}")
    key = str(report["recipe_hash"])
    models = ToyModels(shipped / "vlm", shipped / "clip", shipped / "owlv2", shipped, key, 0)
    _check_shipped_files(shipped, key)
    now = recipe_hash(0, versions=False)
    if report.get("source_hash") != now:
        raise ToyModelsError(
            f"the toy recipe changed (its hash is now {now}; the shipped models were built "
            f"from {report.get('source_hash')}): {REBUILD_HINT}")
    return models


@functools.cache
def _check_shipped_files(shipped: Path, key: str) -> None:
    """Once per process: hashing the 18 MB takes tens of milliseconds, but need not
    repeat."""
    recorded: dict[str, str] = (shipped_report(shipped) or {}).get("files", {})
    got = file_hashes(shipped)
    for rel in sorted(set(recorded) | set(got)):
        if recorded.get(rel) != got.get(rel):
            state = ("is missing" if rel not in got else "is not one of the shipped files"
                     if rel not in recorded else "differs from its recorded sha256")
            raise ToyModelsError(f"shipped toy model file {shipped / rel} {state}: "
                                 f"reinstall judge, or {REBUILD_HINT}")
    want = expected_hashes(key)
    if want is None or any(folder_sha256(shipped / n) != want.get(n) for n in _MODELS):
        raise ToyModelsError(f"the shipped toy models in {shipped} are not the ones recorded "
                             f"for recipe {key} in {EXPECTED}: {REBUILD_HINT}")


def ensure_toy_models(log: Callable[[str], None] | None = None, seed: int = 0) -> ToyModels:
    """The toy models of `seed`: seed 0's shipped ones (checked, see `verify_shipped`), or
    a build of the current recipe from the cache; other seeds are built once per recipe
    (`build_from_recipe`, minutes)."""
    if seed != 0:
        return build_from_recipe(seed, log=log)
    report = shipped_report()
    if report is not None and report.get("source_hash") == recipe_hash(0, versions=False):
        return verify_shipped()
    # A developer's build of a changed recipe, else an error that names the command.
    return _cached(0) or verify_shipped()


def _cached(seed: int) -> ToyModels | None:
    key = recipe_hash(seed)
    root = cache_dir() / "toy" / key
    if not (root / _DONE).is_file():
        return None
    return ToyModels(root / "vlm", root / "clip", root / "owlv2", root, key, seed)


def build_from_recipe(seed: int = 0, log: Callable[[str], None] | None = None,
                      fresh: bool = False) -> ToyModels:
    """Train the toy models of `seed` from the recipe into the cache (minutes), or take the
    cached build. `fresh`: train every model again, ignoring any cached build or towers."""
    key = recipe_hash(seed)
    root = cache_dir() / "toy" / key
    models = ToyModels(root / "vlm", root / "clip", root / "owlv2", root, key, seed)
    with _locked(cache_dir() / "toy" / f"{key}.lock"):
        if (root / _DONE).is_file() and not fresh:  # maybe built while we waited
            return models
        tmp = root.with_name(f"{key}.tmp-{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        report = train_all(tmp, seed=seed, log=log or (lambda _s: None), use_towers=not fresh)
        report["recipe_hash"] = key
        report["source_hash"] = recipe_hash(seed, versions=False)
        report["seed"] = seed
        report |= check_hashes(tmp, key)
        report["files"] = file_hashes(tmp)
        (tmp / _DONE).write_text(json.dumps(report, indent=1, default=str))
        shutil.rmtree(root, ignore_errors=True)
        tmp.rename(root)
    return models


def ship(models: ToyModels, shipped: Path = SHIPPED) -> Path:
    """Make a seed-0 build the shipped models: copy its folders into `shipped` and record
    their sha256 for its recipe in `expected.json`."""
    if models.seed != 0:
        raise ToyModelsError("only seed 0's models ship with judge")
    if models.recipe_hash != recipe_hash(0):
        raise ToyModelsError(f"{models.root} was not built from the current recipe")
    report = json.loads((models.root / _DONE).read_text(encoding="utf-8"))
    report |= {"recipe_hash": models.recipe_hash, "source_hash": recipe_hash(0, versions=False),
               "files": file_hashes(models.root)}
    for stale in ("expected", "matched"):  # as of the build; `build_report` checks afresh
        report.pop(stale, None)
    tmp = shipped.with_name(f"{shipped.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    for name in _MODELS:
        shutil.copytree(models.root / name, tmp / name)
    (tmp / _DONE).write_text(json.dumps(report, indent=1, default=str) + "\n")
    shutil.rmtree(shipped, ignore_errors=True)
    tmp.rename(shipped)
    recorded = json.loads(EXPECTED.read_text(encoding="utf-8")) if EXPECTED.is_file() else {}
    recorded[models.recipe_hash] = {n: folder_sha256(shipped / n) for n in _MODELS}
    EXPECTED.write_text(json.dumps(recorded, indent=1) + "\n", encoding="utf-8")
    _check_shipped_files.cache_clear()
    return shipped


def build_report(models: ToyModels) -> dict[str, Any]:
    """The training report saved with the models (times, accuracies), with each model's
    sha256 checked now against the recorded ones (`check_hashes`)."""
    report: dict[str, Any] = json.loads((models.root / _DONE).read_text(encoding="utf-8"))
    return report | check_hashes(models.root, models.recipe_hash)


def build_toy(out_dir: str | Path, n_images: int = 200, log: Callable[[str], None] = print,
              seed: int = 0, models: ToyModels | None = None) -> Path:
    """Write out_dir/models/{vlm,clip,owlv2} and out_dir/set/manifest.jsonl with images:
    `models`, or those `ensure_toy_models(seed=seed)` gives."""
    from judge.toy.labelled import write_set

    out = Path(out_dir)
    models = models or ensure_toy_models(log=log, seed=seed)
    for name, src in (("vlm", models.vlm), ("clip", models.clip), ("owlv2", models.owlv2)):
        dst = out / "models" / name
        shutil.rmtree(dst, ignore_errors=True)
        shutil.copytree(src, dst)
    write_set(out / "set", n_images, split="test")
    return out


# ---- the toy constitution's lock and the checked-in sample ----------------------------


def toy_lock_text(source: Path | None = None) -> str:
    """The YAML of constitutions/toy.lock.yaml: toy.yaml compiled without a model (its
    preconditions are hand-written), exactly as `judge compile --no-model --force` writes
    it, with a fixed date so the file only changes when toy.yaml does."""
    from judge.constitution.compiler import hand_written_lock
    from judge.constitution.loader import parse_spec
    from judge.constitution.lockfile import dump_lock

    src = source or data_dir("constitutions") / "toy.yaml"
    raw = src.read_bytes()
    lock = hand_written_lock(parse_spec(raw, str(src)), source=src.name,
                             source_sha256=hashlib.sha256(raw).hexdigest(),
                             compiled_at=_dt.datetime(2026, 12, 1, tzinfo=_dt.UTC).isoformat())
    return dump_lock(lock)


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
