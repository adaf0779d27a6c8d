"""`judge check`, `judge compile`, `judge show` and `judge schema`: the constitution commands.

Compiling is loud about what it could not do well: rules that need review (see
`judge.constitution.review`) are listed, and `compile`, `compile --check` and `check`
then exit with `ReviewError`'s code (8), so a CI gate stops on them.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Annotated

import typer

from judge.commands.app import app
from judge.commands.display import fit
from judge.commands.model_options import ApiKeyOption, BackendOption, ServersOption, server_arg
from judge.constitution import Constitution
from judge.constitution.compiler import CompileOptions, CompileReport
from judge.constitution.formula import formula
from judge.constitution.loader import require_enabled_rules, source_json_schema
from judge.constitution.review import describe, needs_review
from judge.constitution.schema import Lock
from judge.errors import ConstitutionError, InputError, LockError, ReviewError

PolicyPaths = Annotated[list[Path], typer.Argument(help="Constitution files (YAML).")]


def _echo(text: str, err: bool) -> None:
    typer.echo(fit(text), err=err)


@app.command(name="check")
def check(
    policies: PolicyPaths,
    strict: Annotated[
        bool, typer.Option("--strict", help="Treat warnings as failures (exit 2).")
    ] = False,
) -> None:
    """Validate constitutions: print OK per file, or every problem with file:line:column;
    warn about preconditions that may not mean what was meant; list rules that need review."""
    from judge.constitution.lint import lint_file

    failed: list[ConstitutionError | LockError] = []
    review: dict[str, list[str]] = {}
    warned = 0
    policies = _sources(policies)
    for path in policies:
        try:
            policy = Constitution.load(path)
            require_enabled_rules(policy.spec.rules, str(path))
            warnings = lint_file(path)
        except (ConstitutionError, LockError) as error:
            failed.append(error)
            typer.echo(f"FAIL {error}", err=True)
            continue
        for warning in warnings:
            typer.echo(f"WARN {warning}", err=True)
        warned += len(warnings)
        state, reason = policy.lock_status()
        if state == "stale":
            # Judging refuses a stale lock, so a gate that passed it would pass a run
            # that cannot happen (or a lock edited by hand).
            failed.append(LockError(reason))
            typer.echo(f"FAIL {reason}", err=True)
            continue
        lock_note = {"fresh": "lock up to date", "missing": "no lock"}
        found = needs_review(policy.lock) if state == "fresh" else {}
        notes = [lock_note[state]]
        if warnings:
            notes.append(f"{len(warnings)} warning(s)")
        if found:
            notes.append(f"{len(found)} rule(s) NEED REVIEW")
            review.update({f"{path}: {k}": v for k, v in found.items()})
        word = "REVIEW" if found else "OK  "
        typer.echo(f"{word} {path}: {len(policy.spec.rules)} rules; {'; '.join(notes)}")
        if found:
            typer.echo(describe(found))
    if failed or (strict and warned):
        first = failed[0] if failed else None
        raise ConstitutionError(
            f"{len(failed)} of {len(policies)} constitution file(s) failed validation"
            + (f", {warned} warning(s) under --strict" if strict and warned else "")
            + " (problems listed above)",
            file=getattr(first, "file", None),
        )
    if review:
        raise ReviewError(
            f"{len(review)} compiled rule(s) need review (listed above); fix the rules and "
            "re-compile",
            rules=review,
        )


def _sources(paths: list[Path]) -> list[Path]:
    """`paths` with each lock file and each cases file (`judge test`'s POLICY.tests.yaml)
    replaced by its constitution (a glob such as `constitutions/*.yaml` names all three),
    each checked once."""
    from judge.constitution.lockfile import is_lock_path, lock_path_for
    from judge.policy.cases import policy_of_cases

    out: list[Path] = []
    for path in paths:
        path = policy_of_cases(path) or path
        if is_lock_path(path):
            stem = path.name.rsplit(".lock.", 1)[0]
            candidates = [path.with_name(stem + suffix) for suffix in (".yaml", ".yml")]
            path = next((c for c in candidates if lock_path_for(c) == path and c.exists()),
                        candidates[0])
        if path not in out:
            out.append(path)
    return out


@app.command(name="compile")
def compile_(
    policy: Annotated[Path, typer.Argument(help="The constitution to compile.")],
    model: Annotated[
        str | None,
        typer.Option(
            help="Compiler model: a folder, a hub id, or a registered name such as 'toy' "
            "(default: the policy's defaults.model)."
        ),
    ] = None,
    server: ServersOption = None,
    backend: BackendOption = None,
    api_key: ApiKeyOption = None,
    check: Annotated[
        bool,
        typer.Option(
            "--check", help="Only check that the lock is up to date and needs no review (CI)."
        ),
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
    """Compile POLICY into POLICY.lock.yaml, sending only changed rules to the model.

    Exits 8 when a compiled rule needs review (the lock is written all the same).
    """
    constitution = Constitution.load(policy)
    if check:
        state, reason = constitution.lock_status()
        if state != "fresh":
            raise LockError(
                reason
                if state == "stale"
                else f"{policy} has no lock; run `judge compile {policy}`"
            )
        raise_for_review(constitution.lock, str(policy))
        typer.echo(f"OK   {policy}: lock up to date ({constitution.lock_path})")
        return
    report = asyncio.run(
        compile_policy(
            constitution,
            model=model,
            server=server_arg(server),
            backend=backend,
            api_key=api_key,
            force=force,
            concurrency=concurrency,
            no_model=no_model,
        )
    )
    path = constitution.save_lock()
    print_report(report, path)
    raise_for_review(report.lock, str(policy))


async def compile_policy(
    constitution: Constitution,
    *,
    model: str | None,
    server: str | None,
    backend: str | None,
    api_key: str | None = None,
    force: bool = False,
    concurrency: int = 8,
    no_model: bool = False,
    require_model: bool = True,
) -> CompileReport:
    """Compile what changed, with the model resolved as every command resolves it.

    A model is started only when a rule needs compiling and a model is named (--model,
    defaults.model, --server or JUDGE_SERVER). Without one, rules with hand-written chains
    compile as written, if `require_model` is False (`judge --compile`); `judge compile`
    asks for --no-model to say so.
    """
    from judge.models.resolve import resolve_model

    todo = constitution.pending(force=force)
    defaults = constitution.spec.defaults
    engine = None
    if todo and not no_model:
        choice = resolve_model(
            model or defaults.model,
            backend=backend or defaults.backend,
            server=server,
            need_model=False,
        )
        if choice.model is not None or choice.named is not None or choice.server is not None:
            engine = choice.open(api_key)
        elif require_model or any(rule.preconditions is None for rule in todo):
            raise InputError(
                "no compiler model: pass --model (a folder, a hub id or 'toy'), or "
                "--server URL (or set JUDGE_SERVER), or set defaults.model in the "
                "constitution; --no-model compiles hand-written preconditions only"
            )
    try:
        await constitution.acompile(
            engine, concurrency=concurrency, force=force, options=CompileOptions()
        )
    finally:
        if engine is not None:
            await engine.aclose()
    assert constitution.last_report is not None
    return constitution.last_report


def print_report(report: CompileReport, path: Path, *, err: bool = False) -> None:
    """The compile report: what was compiled by whom, each compiled rule's scores and
    flags, and the rules that need review (`err`: all of it on stderr)."""
    lock: Lock = report.lock
    sent, reused = report.compiled, report.reused
    by_hand = len(lock.rules) - len(sent) - len(reused)
    _echo(
        f"wrote {path}: {len(lock.rules)} rules, {len(sent)} sent to "
        f"{lock.compiler_model if sent else 'no model'}, {by_hand} hand-written without a "
        f"model, {len(reused)} reused; "
        f"{report.model_calls} model calls, {report.seconds:.1f} s",
        err,
    )
    for rule in report.rules:
        if not rule.sent_to_model:
            continue
        score = "unscored" if rule.score is None else f"objectiveness {rule.score}"
        flags = []
        if rule.rewritten:
            flags.append("rewritten")
        if rule.score is not None and not rule.reached:
            flags.append("NEVER REACHED the target score")
        if rule.extraction == "fallback":
            flags.append("FALLBACK: no precondition chain, the rule text is used")
        _echo(
            f"  {rule.id}: {score}, extraction {rule.extraction}"
            + (f" ({'; '.join(flags)})" if flags else ""),
            err,
        )
    found = report.needs_review
    if found:
        _echo(f"{len(found)} rule(s) NEED REVIEW:\n{describe(found)}", err)


def raise_for_review(lock: Lock, policy: str) -> None:
    """ReviewError (exit 8) if a rule of `lock` needs review."""
    found = needs_review(lock)
    if found:
        raise ReviewError(
            f"{policy}: {len(found)} compiled rule(s) need review:\n{describe(found)}\n"
            "Fix the rules (or their objectified text) and re-compile; judging with this "
            "lock needs --allow-unreviewed",
            rules=found,
        )


@app.command(name="show")
def show(policies: PolicyPaths) -> None:
    """Show each rule as the formula the judge evaluates: violated iff [a] AND ([b] OR [c]),
    with who produced it and whether it needs review."""
    from judge.constitution.compiler import hand_written

    for path in policies:
        policy = Constitution.load(path)
        state, reason = policy.lock_status()
        if state == "fresh":
            rules = policy.lock.rules
            typer.echo(fit(f"{path} (lock {policy.lock_path}):"))
        else:
            # Without a usable lock, show what the hand-written chains say.
            rules = [hand_written(r) for r in policy.spec.rules if r.preconditions]
            missing = [r.id for r in policy.spec.rules if not r.preconditions]
            typer.echo(fit(f"{path} (from the source; {reason}):"))
            for rule_id in missing:
                typer.echo(fit(f"\n{rule_id}: not compiled yet (run `judge compile {path}`)"))
        found = needs_review(rules)
        for rule in rules:
            made = rule.produced_by
            score = (
                f"objectiveness {rule.objectiveness.score} by {made.objectiveness}"
                if rule.objectiveness is not None
                else "objectiveness not scored"
            )
            tags = [f"chain {made.preconditions}", score]
            if rule.topic:
                tags.append(f"topic {rule.topic!r} ({made.topic})")
            if not rule.enabled:
                tags.append("DISABLED")
            typer.echo("\n" + fit(f"{rule.id} ({'; '.join(tags)})"))
            if rule.text != rule.source_text:
                typer.echo(fit(f"  objectified by {made.text}: {rule.text}"))
            typer.echo(fit(f"  {formula(rule.preconditions)}"))
            if rule.id in found:
                typer.echo(fit(f"  NEEDS REVIEW: {'; '.join(found[rule.id])}"))


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
