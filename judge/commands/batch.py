"""`judge batch INPUT... --constitution POLICY --out OUT.parquet`: judging on Ray Data.

The model options mean what they mean for `judge`; `--server` repeated judges through a
fleet of vLLM replicas. Exit codes as `judge`'s, over everything the output folder holds:
2 an unreadable image, 3 an undecided one, 1 an unsafe one, 0 all safe. Bad options or
inputs exit 2 before Ray starts, and so does an --out that another run is using. A rerun
judges again the rows that are undecided or errors (`--retry`, default undecided,error;
`--retry none` skips every row already there). SIGINT or SIGTERM writes the rows already
judged, then exits 130 or 143.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from judge.commands.app import app
from judge.commands.model_options import (
    ApiKeyOption,
    BackendOption,
    LocatorOption,
    ModelOption,
    RelevanceOption,
    ServersOption,
    server_arg,
)
from judge.errors import InputError
from judge.video.options import DEFAULT_FPS, DEFAULT_MAX_FRAMES


def _thresholds(path: Path | None) -> dict[str, Any] | None:
    """The overrides file, read and checked here (workers may not see the file)."""
    if path is None:
        return None
    import yaml

    from judge.engine.judge import load_thresholds

    load_thresholds(path)  # the same checks and messages as `judge --thresholds`
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    if isinstance(data, dict) and isinstance(data.get("thresholds"), dict):
        data = data["thresholds"]
    return dict(data)


def _refuse_unreviewed(lock: Any, allow: bool) -> None:
    """As `Judge` does, but before Ray starts: a lock whose rules need review is refused."""
    from judge.constitution.review import describe, needs_review
    from judge.errors import ReviewError

    found = needs_review(lock.enabled_rules())
    if found and not allow:
        raise ReviewError(
            f"the lock of {lock.source} has {len(found)} rule(s) that need review:\n"
            f"{describe(found)}\nFix the rules and re-compile, or judge anyway with "
            "--allow-unreviewed",
            rules=found,
        )


@app.command("batch")
def batch(
    inputs: Annotated[
        list[str],
        typer.Argument(
            help="Image files, folders, globs, JSONL manifests (an `image` path per line) "
            "or Parquet files with the image bytes embedded (an `image` column)."
        ),
    ],
    constitution: Annotated[
        Path, typer.Option("--constitution", "-c", help="The policy (its lock must be fresh).")
    ],
    out: Annotated[
        Path,
        typer.Option(
            "--out", "-o", help="Output folder of Parquet parts; a rerun resumes it."
        ),
    ],
    ray_address: Annotated[
        str | None,
        typer.Option(
            "--ray",
            help="'local' (start Ray here) or a cluster address (default: RAY_ADDRESS, "
            "else local).",
        ),
    ] = None,
    model: ModelOption = None,
    backend: BackendOption = None,
    server: ServersOption = None,
    api_key: ApiKeyOption = None,
    relevance: RelevanceOption = None,
    locator: LocatorOption = None,
    thresholds: Annotated[
        Path | None, typer.Option(help="YAML/JSON file of threshold overrides.")
    ] = None,
    fill: Annotated[str, typer.Option(help="Central-region fill: mean, blur or black.")] = "mean",
    no_relevance: Annotated[bool, typer.Option("--no-relevance")] = False,
    no_center: Annotated[bool, typer.Option("--no-center")] = False,
    no_cascade: Annotated[bool, typer.Option("--no-cascade")] = False,
    first_violation: Annotated[bool, typer.Option("--first-violation")] = False,
    all_frames: Annotated[bool, typer.Option("--all-frames")] = False,
    fps: Annotated[
        float, typer.Option(min=0.001, max=1000, help="Clips: frames sampled per second.")
    ] = DEFAULT_FPS,
    max_frames: Annotated[
        int, typer.Option(min=1, help="Clips: most frames judged per clip.")
    ] = DEFAULT_MAX_FRAMES,
    scan_all: Annotated[
        bool, typer.Option("--scan-all", help="Clips: judge every sampled frame.")
    ] = False,
    allow_unreviewed: Annotated[bool, typer.Option("--allow-unreviewed")] = False,
    allow_outside_paths: Annotated[
        bool,
        typer.Option("--allow-outside-paths", help="Let manifest paths leave their folder."),
    ] = False,
    actors: Annotated[int, typer.Option(min=1, help="Judge actors (one Judge each).")] = 1,
    batch_size: Annotated[int, typer.Option(min=1, help="Images per actor call.")] = 16,
    concurrency: Annotated[
        int, typer.Option(min=1, max=1024, help="Images in flight inside each actor.")
    ] = 8,
    num_cpus: Annotated[float, typer.Option(min=0.0, help="CPUs per actor.")] = 1.0,
    num_gpus: Annotated[
        float, typer.Option(min=0.0, help="GPUs per actor (1: in-process vLLM on a GPU each).")
    ] = 0.0,
    part_rows: Annotated[int, typer.Option(min=1, help="Rows per output part (at most).")] = 256,
    part_seconds: Annotated[
        float, typer.Option(min=0.0, help="Write a part at least this often (seconds).")
    ] = 10.0,
    store: Annotated[
        Path | None, typer.Option(help="SQLite store (default: <cache>/judge.sqlite3).")
    ] = None,
    progress: Annotated[bool, typer.Option(help="Show the progress bar.")] = True,
    retry: Annotated[
        str,
        typer.Option(
            help="Which rows already in --out a rerun judges again: undecided, error, both "
            "(comma-separated) or none. The others are skipped.",
        ),
    ] = "undecided,error",
) -> None:
    """Judge many images on Ray Data into resumable Parquet (one row per image)."""
    from rich.console import Console

    from judge.batch import ActorSpec, BatchOptions, Interrupted, parse_retry, run_batch
    from judge.constitution import Constitution
    from judge.engine.procedure import JudgeOptions
    from judge.models.options import ModelOptions
    from judge.video.options import VideoOptions

    if out.suffix.lower() != ".parquet" and not out.is_dir():
        raise InputError(f"--out {out}: name the output folder OUT.parquet")
    retried = parse_retry(retry)
    options = JudgeOptions(
        relevance=not no_relevance,
        center=not no_center,
        cascade=not no_cascade,
        first_violation=first_violation,
        all_frames=all_frames,
        fill=fill,  # type: ignore[arg-type]  # JudgeOptions checks the name
        video=VideoOptions(fps=fps, max_frames=max_frames, scan_all=scan_all),
    )
    policy = Constitution.load(constitution)
    lock = policy.lock
    _refuse_unreviewed(lock, allow_unreviewed)
    models = ModelOptions(model=model, backend=backend, server=server_arg(server),
                          api_key=api_key, relevance=relevance, locator=locator)
    # Model options are checked here, in seconds, not in every actor after Ray starts.
    models.resolve(default_model=lock.defaults.model, default_backend=lock.defaults.backend)
    spec = ActorSpec(
        lock=lock,
        model_options=models,
        thresholds=_thresholds(thresholds),
        options=options,
        store=str(store) if store else None,
        allow_unreviewed=allow_unreviewed,
        concurrency=concurrency,
    )
    err = Console(stderr=True, highlight=False)
    run = BatchOptions(
        inputs=list(inputs),
        out=out,
        spec=spec,
        ray=ray_address,
        actors=actors,
        batch_size=batch_size,
        num_cpus=num_cpus,
        num_gpus=num_gpus,
        part_rows=part_rows,
        part_seconds=part_seconds,
        allow_outside=allow_outside_paths,
        progress=progress,
        retry=retried,
    )
    try:
        report = run_batch(run, err)
    except Interrupted as stop:
        err.print(
            f"interrupted ({stop}): the rows judged so far are in {out}; the same command "
            "resumes",
            markup=False,
        )
        raise typer.Exit(128 + stop.signum) from None
    typer.echo(report.summary())
    code = report.exit_code()
    if code:
        raise typer.Exit(code)
