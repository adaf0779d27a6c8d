"""`judge check`, `judge compile` and `judge schema`: the constitution commands."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Annotated

import typer

from judge.commands.app import app
from judge.constitution import Constitution
from judge.constitution.compiler import CompileOptions, CompileReport
from judge.constitution.loader import source_json_schema
from judge.constitution.schema import Lock
from judge.errors import ConstitutionError, InputError, LockError

PolicyPaths = Annotated[list[Path], typer.Argument(help="Constitution files (YAML).")]


@app.command(name="check")
def check(policies: PolicyPaths) -> None:
    """Validate constitutions: print OK per file, or every problem with file:line:column."""
    failed: list[ConstitutionError | LockError] = []
    for path in policies:
        try:
            policy = Constitution.load(path)
        except (ConstitutionError, LockError) as error:
            failed.append(error)
            typer.echo(f"FAIL {error}", err=True)
            continue
        state, _ = policy.lock_status()
        lock_note = {"fresh": "lock up to date", "stale": "lock STALE", "missing": "no lock"}
        typer.echo(f"OK   {path}: {len(policy.spec.rules)} rules; {lock_note[state]}")
    if failed:
        first = failed[0]
        raise ConstitutionError(
            f"{len(failed)} of {len(policies)} constitution file(s) failed validation "
            "(problems listed above)",
            file=getattr(first, "file", None),
        )


@app.command(name="compile")
def compile_(
    policy: Annotated[Path, typer.Argument(help="The constitution to compile.")],
    model: Annotated[
        str | None, typer.Option(help="Compiler model (default: the policy's defaults.model).")
    ] = None,
    server: Annotated[str | None, typer.Option(help="OpenAI-compatible server URL (vLLM).")] = None,
    backend: Annotated[
        str | None, typer.Option(help="Back end: vllm-server, vllm, hf (default: by --server).")
    ] = None,
    check: Annotated[
        bool, typer.Option("--check", help="Only check that the lock is up to date (for CI).")
    ] = False,
    force: Annotated[bool, typer.Option(help="Re-compile every rule, changed or not.")] = False,
    concurrency: Annotated[
        int, typer.Option(min=1, max=256, help="Rules compiled at the same time.")
    ] = 8,
    no_model: Annotated[
        bool,
        typer.Option(
            "--no-model",
            help="Compile without a model: every changed rule needs hand-written "
            "preconditions; its objectiveness stays unscored.",
        ),
    ] = False,
) -> None:
    """Compile POLICY into POLICY.lock.yaml, sending only changed rules to the model."""
    constitution = Constitution.load(policy)
    if check:
        state, reason = constitution.lock_status()
        if state != "fresh":
            raise LockError(
                reason
                if state == "stale"
                else f"{policy} has no lock; run `judge compile {policy}`"
            )
        typer.echo(f"OK   {policy}: lock up to date ({constitution.lock_path})")
        return
    report = asyncio.run(
        _compile(constitution, model, server, backend, force, concurrency, no_model)
    )
    path = constitution.save_lock()
    _print_report(report, path)


async def _compile(
    constitution: Constitution,
    model: str | None,
    server: str | None,
    kind: str | None,
    force: bool,
    concurrency: int,
    no_model: bool,
) -> CompileReport:
    todo = constitution.pending(force=force)
    defaults = constitution.spec.defaults
    if no_model or not todo:  # nothing for a model to do: do not start one
        await constitution.acompile(None, concurrency=concurrency, force=force)
    else:
        from judge.models.registry import load_backend

        chosen = model or defaults.model
        if chosen is None and server is None:
            raise InputError(
                "no compiler model: pass --model (or --server), or set defaults.model in "
                "the constitution; --no-model compiles hand-written preconditions only"
            )
        engine = load_backend(kind or defaults.backend, model=chosen, server=server)
        try:
            await constitution.acompile(
                engine, concurrency=concurrency, force=force, options=CompileOptions()
            )
        finally:
            await engine.aclose()
    assert constitution.last_report is not None
    return constitution.last_report


def _print_report(report: CompileReport, path: Path) -> None:
    lock: Lock = report.lock
    sent = report.compiled
    typer.echo(
        f"wrote {path}: {len(lock.rules)} rules, {len(sent)} compiled by "
        f"{lock.compiler_model if sent else 'nobody (all reused)'}, "
        f"{len(lock.rules) - len(sent)} reused, {report.model_calls} model calls, "
        f"{report.seconds:.1f} s"
    )
    for rule in report.rules:
        if not rule.sent_to_model:
            continue
        score = "unscored" if rule.score is None else f"objectiveness {rule.score}"
        flags = []
        if rule.rewritten:
            flags.append("rewritten")
        if rule.score is not None and not rule.reached:
            flags.append("NEVER REACHED the target score: review")
        if rule.extraction == "fallback":
            flags.append("FALLBACK: no precondition chain, the rule text is used")
        typer.echo(
            f"  {rule.id}: {score}, extraction {rule.extraction}"
            + (f" ({'; '.join(flags)})" if flags else "")
        )
    for label, ids in (("fallback", report.fallbacks), ("below target", report.unreached)):
        if ids:
            typer.echo(f"{len(ids)} rule(s) {label}: {', '.join(ids)}", err=True)


@app.command(name="schema")
def schema(
    lock: Annotated[bool, typer.Option("--lock", help="The lock file's schema instead.")] = False,
) -> None:
    """Print the JSON Schema of the constitution format (for editors' YAML checking)."""
    if lock:
        body = Lock.model_json_schema()
        body["$schema"] = "https://json-schema.org/draft/2020-12/schema"
        body["title"] = "judge constitution lock"
    else:
        body = source_json_schema()
    typer.echo(json.dumps(body, indent=2, sort_keys=False))
