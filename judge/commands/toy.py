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
    seed: int = typer.Option(0, "--seed", min=0, help="Training seed of all three models."),
) -> None:
    """Train (or take from the cache) the toy VLM, CLIP and OWLv2, and write a labelled set.

    Writes OUT/models/{vlm,clip,owlv2} and OUT/set/manifest.jsonl with its images. The
    first run trains for several minutes on the CPU; later runs reuse the cache. Says
    whether each model's sha256 matches the one recorded for its recipe.
    """
    from judge.toy.build import build_report, build_toy, ensure_toy_models

    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out} exists and is not a folder")
    try:
        build_toy(out, n_images=images, log=lambda line: typer.echo(line, err=True), seed=seed)
        report = build_report(ensure_toy_models(seed=seed))
    except ImportError as exc:  # torch / transformers / tokenizers missing
        raise InputError(
            f"the toy models need the 'hf' extra: pip install 'judge[hf]' ({exc})"
        ) from exc
    typer.echo(f"toy models: {out / 'models'}\nlabelled set: {out / 'set' / 'manifest.jsonl'}")
    matched = report.get("matched")
    verdict = {True: "matches the recorded sha256", False: "DIFFERS from the recorded sha256",
               None: "has no recorded sha256"}[matched]
    typer.echo(f"recipe {report['recipe_hash']} (seed {seed}): the build {verdict}")
    for name, sha in report.get("sha256", {}).items():
        want = (report.get("expected") or {}).get(name)
        mark = "" if want is None else (" ok" if want == sha else f" expected {want}")
        typer.echo(f"  {name} sha256 {sha}{mark}")
