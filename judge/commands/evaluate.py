"""`judge eval` and `judge calibrate`: measure a constitution and a model on labelled data."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated

import typer

from judge.commands.app import app
from judge.commands.model_options import (
    ApiKeyOption,
    BackendOption,
    LocatorOption,
    RelevanceOption,
    ServersOption,
    server_arg,
)
from judge.constitution import Constitution
from judge.errors import InputError
from judge.evaluate.datasets import LabelledSet
from judge.models.options import ModelOptions

SetPath = Annotated[
    Path,
    typer.Argument(help="Labelled set: a .jsonl manifest, an image folder, a .csv or a .parquet."),
]
PolicyOption = Annotated[
    Path, typer.Option("--constitution", "-c", help="The constitution (its lock must be fresh).")
]
ModelOption = Annotated[
    list[str] | None,
    typer.Option(
        "--model",
        help="Model id or folder ('toy' for the toy models); repeatable (default: the "
        "policy's defaults.model, else what the server serves).",
    ),
]
SplitOption = Annotated[
    str | None, typer.Option(help="Only the images of this split (default: every image).")
]
MappingOption = Annotated[
    Path | None,
    typer.Option(
        help="YAML/JSON file mapping the set's categories to rule ids (default: the set's "
        "categories are rule ids)."
    ),
]
OutsideOption = Annotated[
    bool,
    typer.Option(
        "--allow-outside-paths", help="Let manifest image paths leave the manifest's folder."
    ),
]
StoreOption = Annotated[
    Path | None, typer.Option(help="SQLite store of the runs (default: OUT/judge.sqlite3).")
]


def _load(
    dataset: Path, mapping: Path | None, allow_outside: bool, split: str | None, limit: int | None
) -> LabelledSet:
    from judge.evaluate.datasets import load_dataset

    return load_dataset(dataset, mapping=mapping, allow_outside=allow_outside).select(
        split=split, limit=limit
    )


@app.command(name="eval")
def eval_(
    dataset: SetPath,
    constitution: PolicyOption,
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for the reports.")],
    baselines: Annotated[
        str,
        typer.Option(
            help="Baselines, comma-separated: prior, prior-cot, constitution, "
            "constitution-cot; or all, or none."
        ),
    ] = "none",
    ablations: Annotated[
        str,
        typer.Option(
            help="Ablations, comma-separated: no-objectify, no-preconditions, no-debias, "
            "no-relevance, no-center, no-cascade, fill-blur, fill-black; or all, or none."
        ),
    ] = "none",
    fill: Annotated[
        str,
        typer.Option(
            help="How the central-region check removes a box: mean, blur or black "
            "(the fill-* ablations keep their own)."
        ),
    ] = "mean",
    model: ModelOption = None,
    backend: BackendOption = None,
    server: ServersOption = None,
    api_key: ApiKeyOption = None,
    relevance: RelevanceOption = None,
    locator: LocatorOption = None,
    thresholds: Annotated[
        Path | None,
        typer.Option(
            help="YAML/JSON file of threshold overrides for this run (default: the paper's "
            "thresholds, then the policy's)."
        ),
    ] = None,
    store: StoreOption = None,
    fresh: Annotated[
        bool, typer.Option("--fresh", help="Start over: drop stored results.")
    ] = False,
    limit: Annotated[
        int | None, typer.Option(min=1, help="Only the first N images (default: all).")
    ] = None,
    split: SplitOption = None,
    mapping: MappingOption = None,
    allow_outside_paths: OutsideOption = False,
    concurrency: Annotated[int, typer.Option(min=1, max=256, help="Images in flight.")] = 8,
    bootstrap: Annotated[
        int, typer.Option(min=0, help="Bootstrap resamples for the 95% intervals.")
    ] = 1000,
    seed: Annotated[int, typer.Option(help="Seed of the bootstrap.")] = 0,
    progress: Annotated[bool, typer.Option(help="Show the progress bar.")] = True,
) -> None:
    """Evaluate the method (and baselines, ablations) on a labelled set; resumable.

    Writes OUT/report.json, OUT/report.md and OUT/report.html. Running the same command
    again continues where it stopped; --fresh starts over.
    """
    from judge.engine.procedure import JudgeOptions
    from judge.evaluate.ablations import parse_ablations
    from judge.evaluate.baselines import parse_baselines
    from judge.evaluate.evaluation import EvalSpec, run_evaluation, write_reports
    from judge.store import Store

    JudgeOptions(fill=fill)  # type: ignore[arg-type]  # a bad fill fails before any work
    chosen_baselines = parse_baselines(baselines)
    chosen_ablations = parse_ablations(ablations)
    policy = Constitution.load(constitution)
    lock = policy.lock
    data = _load(dataset, mapping, allow_outside_paths, split, limit)
    data.check_rules(r.id for r in lock.rules)
    out.mkdir(parents=True, exist_ok=True)
    spec = EvalSpec(
        dataset=data,
        lock=lock,
        constitution_name=policy.spec.name,
        model_options=ModelOptions(backend=backend, server=server_arg(server), api_key=api_key,
                                   relevance=relevance, locator=locator),
        models=list(model or ()),
        thresholds=thresholds,
        fill=fill,
        ablations=chosen_ablations,
        baselines=chosen_baselines,
        split=split,
        fresh=fresh,
        concurrency=concurrency,
        resamples=bootstrap,
        seed=seed,
        progress=progress,
    )
    with Store(store or out / "judge.sqlite3") as db:
        report = asyncio.run(run_evaluation(spec, db))
    for path in write_reports(out, report, list(data), lock):
        typer.echo(f"wrote {path}")
    from judge.commands.display import fit
    from judge.evaluate.report import cell, method_label

    for entry in report["methods"]:
        image = entry["image"]
        typer.echo(
            fit(
                f"{method_label(entry)} ({entry['model']}): R/Acc/F1 {cell(image)}, "
                f"fail-closed {cell(image['fail_closed'])}; "
                f"undecided {image['undecided']}, errors {image['errors']} of {image['n']}"
            )
        )


@app.command(name="calibrate")
def calibrate(
    dataset: SetPath,
    constitution: PolicyOption,
    objective: Annotated[
        str, typer.Option(help="f1 (maximise F1) or fpr (hold --target-fpr).")
    ] = "f1",
    target_fpr: Annotated[
        float,
        typer.Option(min=0.0, max=1.0, help="For --objective fpr: largest false-positive rate."),
    ] = 0.05,
    relevance_recall: Annotated[
        float,
        typer.Option(
            min=0.0, max=1.0, help="Share of truly violated rules the relevance scan must keep."
        ),
    ] = 0.95,
    split: Annotated[
        str | None, typer.Option(help="Split to calibrate on (default: train, else a half).")
    ] = None,
    holdout: Annotated[
        str | None,
        typer.Option(help="Held-out split for before/after (default: test, else the other half)."),
    ] = None,
    model: Annotated[
        str | None,
        typer.Option(
            help="Model id or folder ('toy') (default: the policy's defaults.model, else "
            "what the server serves)."
        ),
    ] = None,
    backend: BackendOption = None,
    server: ServersOption = None,
    api_key: ApiKeyOption = None,
    relevance: RelevanceOption = None,
    locator: LocatorOption = None,
    store: Annotated[
        Path | None, typer.Option(help="SQLite store (default: judge's cache).")
    ] = None,
    mapping: MappingOption = None,
    allow_outside_paths: OutsideOption = False,
    limit: Annotated[
        int | None, typer.Option(min=1, help="Only the first N images (default: all).")
    ] = None,
    concurrency: Annotated[int, typer.Option(min=1, max=256, help="Images in flight.")] = 8,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Report, but do not write the lock.")
    ] = False,
    progress: Annotated[bool, typer.Option(help="Show the progress bar.")] = True,
) -> None:
    """Choose per-rule thresholds and the relevance threshold from a labelled set, write
    them to the lock with the set's hash, and report before/after on a held-out split."""
    from judge.evaluate.calibrate import CalibrationSpec, format_summary, run_calibration
    from judge.evaluate.datasets import load_dataset
    from judge.store import Store

    if objective not in ("f1", "fpr"):
        raise InputError(f"--objective must be f1 or fpr, not {objective!r}")
    policy = Constitution.load(constitution)
    lock = policy.lock
    data = load_dataset(dataset, mapping=mapping, allow_outside=allow_outside_paths)
    if limit is not None:
        data = data.select(limit=limit)
    data.check_rules(r.id for r in lock.rules)
    spec = CalibrationSpec(
        dataset=data,
        lock=lock,
        objective=objective,
        target_fpr=target_fpr,
        relevance_recall=relevance_recall,
        split=split,
        holdout=holdout,
        model_options=ModelOptions(model=model, backend=backend, server=server_arg(server),
                                   api_key=api_key, relevance=relevance, locator=locator),
        concurrency=concurrency,
        progress=progress,
    )
    with Store(store) as db:
        result = asyncio.run(run_calibration(spec, db))
    from judge.commands.display import fit

    typer.echo(fit(format_summary(result)))
    if dry_run:
        typer.echo("dry run: the lock was not changed")
        return
    from judge.constitution import lockfile

    target = policy.lock_path
    if target is None:  # pragma: no cover - a loaded file always has a lock path
        raise InputError("the constitution has no file to write a lock next to")
    lockfile.write_lock(result.lock, target)
    typer.echo(f"wrote calibration to {target}")
