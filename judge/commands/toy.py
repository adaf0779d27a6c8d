"""`judge toy ...`: build the toy world's trained models and a labelled set."""

from __future__ import annotations

from pathlib import Path

import typer

from judge.commands.app import app
from judge.errors import InputError

toy_app = typer.Typer(
    name="toy",
    help="The toy world: tiny models trained on synthetic scenes, for demos and tests.",
    no_args_is_help=True,
)
app.add_typer(toy_app, name="toy")


@toy_app.command("build")
def build(
    out: Path = typer.Option(..., "--out", help="Folder to write models/ and set/ into."),
    images: int = typer.Option(200, "--images", min=1, max=100_000,
                               help="Number of labelled scenes in set/."),
    seed: int = typer.Option(0, "--seed", min=0,
                             help="Training seed of all three models (0: the shipped ones)."),
    rebuild: bool = typer.Option(
        False, "--rebuild",
        help="Train from the recipe even for seed 0, every model afresh, and say whether the "
             "bits equal the recorded (and shipped) ones: verifies the shipped models."),
    to_ship: bool = typer.Option(
        False, "--ship",
        help="Seed 0 only: build from the recipe (or take the cached build) and make it the "
             "shipped models (judge/toy/shipped/, judge/toy/expected.json). For developers "
             "who changed the recipe."),
) -> None:
    """Write the toy VLM, CLIP and OWLv2 to OUT/models/ and a labelled set to OUT/set/.

    Seed 0's models ship with judge, so by default nothing is trained. Any other seed,
    --rebuild and --ship train from the recipe (about 45 minutes on 2 CPU cores, then
    cached) and say whether each model's sha256 matches the one recorded for its recipe.
    """
    from judge.toy.build import (
        build_from_recipe,
        build_report,
        build_toy,
        ship,
        shipped_report,
    )

    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out} exists and is not a folder")
    if to_ship and seed != 0:
        raise InputError("--ship: only seed 0's models ship with judge")

    def log(line: str) -> None:
        typer.echo(line, err=True)

    train = rebuild or to_ship or seed != 0
    try:
        models = build_from_recipe(seed, log=log, fresh=rebuild) if train else None
        if to_ship and models is not None:
            typer.echo(f"shipped: {ship(models)}")
        build_toy(out, n_images=images, log=log, seed=seed, models=models)
    except ImportError as exc:  # torch / transformers / tokenizers missing
        raise InputError(
            f"the toy models need the 'hf' extra: pip install 'judge[hf]' ({exc})"
        ) from exc
    typer.echo(f"toy models: {out / 'models'}\nlabelled set: {out / 'set' / 'manifest.jsonl'}")
    if models is None:
        typer.echo("seed 0: the shipped models, every file checked against its sha256")
        return
    report = build_report(models)
    matched = report.get("matched")
    verdict = {True: "matches the recorded sha256", False: "DIFFERS from the recorded sha256",
               None: "has no recorded sha256"}[matched]
    typer.echo(f"recipe {report['recipe_hash']} (seed {seed}): the build {verdict}")
    for name, sha in report.get("sha256", {}).items():
        want = (report.get("expected") or {}).get(name)
        mark = "" if want is None else (" ok" if want == sha else f" expected {want}")
        typer.echo(f"  {name} sha256 {sha}{mark}")
    shipped = shipped_report()
    if seed == 0 and shipped is not None and not to_ship:
        same = shipped.get("files") == report.get("files")
        typer.echo(f"shipped models (recipe {shipped['recipe_hash']}): "
                   f"{'the same bits' if same else 'OTHER bits than this build'}")
    if matched is False:
        raise typer.Exit(1)
