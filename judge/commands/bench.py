"""`judge bench`: prefill efficiency, speed-up over the naive algorithm, scaling, memory
and compile time, in one run (see judge/bench/run.py)."""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path

import typer

from judge.commands.app import app
from judge.errors import InputError


def _default_constitution() -> Path:
    from judge.resources import data_dir

    path = data_dir("constitutions") / "toy.yaml"
    if not path.exists():
        raise InputError("no constitution given and constitutions/toy.yaml is missing")
    return path


def _sections(text: str | None) -> tuple[str, ...]:
    from judge.bench.run import SECTIONS as known

    if text is None:
        return known
    chosen = tuple(s.strip() for s in text.split(",") if s.strip())
    unknown = [s for s in chosen if s not in known]
    if unknown or not chosen:
        raise InputError(f"unknown section(s) {unknown}; choose from {', '.join(known)}")
    return chosen


@app.command(name="bench")
def bench(
    server: list[str] | None = typer.Option(
        None,
        "--server",
        help="A running vLLM server (base URL; default: JUDGE_SERVER, else start one locally). "
        "Repeat it for the fleet section's replicas (the other sections use the first).",
    ),
    model: str = typer.Option(
        "toy",
        "--model",
        help="Model to serve when no server is given: a registered name ('toy': the toy "
        "VLM) or a model folder. With a server: the model to ask for (a registered name "
        "asks for whatever it serves).",
    ),
    constitution: Path | None = typer.Option(
        None, "--constitution", "-c", help="Constitution (default: constitutions/toy.yaml)."
    ),
    images: int | None = typer.Option(
        None, "--images", "-n", help="Images judged by both the engine and the naive algorithm "
        "(default: 24, 6 with --quick)."
    ),
    quick: bool = typer.Option(False, "--quick", help="A short run (CI): fewer images."),
    concurrency: int = typer.Option(16, "--concurrency", help="Engine image concurrency."),
    memory_images: int | None = typer.Option(
        None,
        "--memory-images",
        help="Images streamed for the memory section (default: 1000, 100 with --quick).",
    ),
    compile_rules: int | None = typer.Option(
        None, "--compile-rules", help="Rules in the compile section (default: 100)."
    ),
    gpu_model: str | None = typer.Option(
        None,
        "--gpu-model",
        help="A real model folder: runs the GPU section when CUDA is present "
        "(default: none, no GPU section).",
    ),
    gpu_images: int = typer.Option(200, "--gpu-images", help="Images for the GPU section."),
    relevance: str | None = typer.Option(
        None, "--relevance", help="As for judging (default: the model's own, else CLIP)."
    ),
    locator: str | None = typer.Option(
        None, "--locator", help="As for judging (default: the model's own, else OWLv2)."
    ),
    sections: str | None = typer.Option(
        None,
        "--sections",
        help="Sections, comma-separated: geometry, prefill, naive, scaling, memory, compile, "
        "cost, gpu, fleet, video (default: all of them; geometry asks the served model only, "
        "so it runs for any --model, tiny family builds included; fleet needs two --server "
        "URLs, or is asked for by name and then starts two local replicas; video judges 5, "
        "20 and 60 s clips, 5 and 10 s with --quick).",
    ),
    fleet_images: int | None = typer.Option(
        None, "--fleet-images", help="Images per routing policy in the fleet section "
        "(default: 24, 12 with --quick)."
    ),
    cost_images: int | None = typer.Option(
        None, "--cost-images", help="Images per point of the cost curve (10, 30 and 100 "
        "rules, relevance on and off; default: 8, 3 with --quick)."
    ),
    json_out: Path | None = typer.Option(
        None, "--json", help="Also write the results here (default: no file)."
    ),
) -> None:
    """Benchmark the engine against the prefill limit and the naive algorithm.

    Exits 1 when the engine's verdicts differ from the naive algorithm's.
    """
    from dataclasses import replace

    from rich.console import Console

    from judge.bench.run import SERVER_SECTIONS, BenchConfig, render, run_bench
    from judge.bench.video import LENGTHS, QUICK_LENGTHS
    from judge.models.fleet import split_servers
    from judge.models.options import ModelOptions
    from judge.models.resolve import resolve_model

    console = Console(highlight=False)
    n = images if images is not None else (6 if quick else 24)
    chosen = _sections(sections)
    # --model and --server mean what they mean everywhere (judge.models.resolve): a
    # registered name ("toy") and a folder take the same path through here.
    servers = split_servers(server or os.environ.get("JUDGE_SERVER"))
    config = BenchConfig(
        constitution=constitution or _default_constitution(),
        model_options=ModelOptions(
            model=model,
            server=servers[0] if servers else None,
            relevance=relevance,
            locator=locator,
        ),
        images=n,
        concurrency=concurrency,
        scaling_images=16 if quick else 64,
        memory_images=memory_images if memory_images is not None else (100 if quick else 1000),
        compile_rules=compile_rules if compile_rules is not None else (8 if quick else 100),
        gpu_model=gpu_model,
        gpu_images=gpu_images,
        sections=chosen,
        fleet_servers=tuple(servers) if len(servers) > 1 else (),
        fleet_images=fleet_images if fleet_images is not None else (12 if quick else 24),
        video_lengths=QUICK_LENGTHS if quick else LENGTHS,
        cost_images=cost_images if cost_images is not None else (3 if quick else 8),
    )

    def model_path() -> Path:
        """The model's folder, to start a local server on (found or built here)."""
        return Path(resolve_model(model, backend="vllm").backend_model() or model)

    # A local server serves the model under the name it was given here, so the back end's
    # request for --model finds it (a registered name asks for whatever is served).
    with contextlib.ExitStack() as stack:
        wants_fleet = "fleet" in chosen and sections is not None and len(servers) < 2
        if wants_fleet:
            # Asked for by name with fewer than two servers: two local replicas.
            from judge.bench.fleet import start_local_fleet

            console.print("[dim]starting two local vLLM replicas for the fleet section "
                          "(a few minutes on CPU)[/]")
            fleet = stack.enter_context(start_local_fleet(model_path(), model))
            config.fleet_servers = tuple(s.root for s in fleet)
        if set(config.sections) & set(SERVER_SECTIONS) and not servers:
            from judge.bench.server import local_vllm_server

            path = model_path()
            console.print(f"[dim]starting a local vLLM server for {path} (about a minute)[/]")
            local = stack.enter_context(local_vllm_server(path, served_model_name=model))
            config.model_options = replace(config.model_options, server=local.url)
        result = run_bench(config, console)
    if json_out is not None:
        body = {
            "summary": result.summary,
            "rows": [vars(r) for r in result.rows],
            "notes": result.notes,
            "verdict_mismatches": result.verdict_mismatches,
        }
        json_out.write_text(json.dumps(body, indent=2, default=str), encoding="utf-8")
    render(result, console)
    if result.verdict_mismatches:
        raise typer.Exit(1)
