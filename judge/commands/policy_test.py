"""`judge test POLICY`: run a policy's cases, like unit tests, with coverage.

The cases file (`--cases`, by default POLICY.tests.yaml beside the policy) says what the
policy must decide on known images (judge.policy.cases). The run prints each case that
did not pass, with the rules that differ and the evidence that decided them, then a
summary; `--coverage` adds which rules, preconditions and alternatives the cases saw
decided both ways (judge.policy.coverage). Exit codes are judge's, with a failed case in
the place of an unsafe image, in the same order:

    2  a case's image could not be read (or bad input: the policy, the cases file)
    3  a case stayed undecided (a model failure, an answer that stayed uncertain)
    1  a case failed (or coverage fell below --min-coverage)
    0  every case passed
    8  (before anything is judged) the lock has rules that need review

Images are checked before any model loads; a case whose image cannot be read is an error
and the others are still judged.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Annotated, Any

import typer

from judge.commands.app import app
from judge.commands.display import band_line, fit
from judge.commands.judge_cmd import EXIT_PRECEDENCE
from judge.commands.model_options import (
    AllowUnreviewedOption,
    BackendOption,
    LocatorOption,
    ModelOption,
    RelevanceOption,
    ServersOption,
    ThresholdsOption,
    server_arg,
)
from judge.engine.verdict import RuleVerdict, Verdict, unreadable
from judge.errors import DatasetError, ImageError, InputError
from judge.models.options import ModelOptions
from judge.policy.cases import CaseResult, CasesReport, RuleCheck, evaluate_cases

# judge's precedence (judge_cmd.EXIT_PRECEDENCE: unreadable 2, then undecided 3, then
# unsafe 1), with a case that failed read as an unsafe image.
_AS_OUTCOME = {"error": "error", "undecided": "undecided", "failed": "unsafe"}


def exit_code(statuses: Iterable[str]) -> int:
    """The exit code of a run whose cases (or checks) ended with `statuses` ("passed",
    "failed", "undecided", "error"): judge's precedence, a failure counted as unsafe."""
    outcomes = {_AS_OUTCOME[s] for s in statuses if s in _AS_OUTCOME}
    return next((code for outcome, code in EXIT_PRECEDENCE if outcome in outcomes), 0)


@app.command("test")
def run_tests(
    policy: Annotated[
        Path | None, typer.Argument(help="The policy (YAML) or its lock.", show_default=False)
    ] = None,
    cases: Annotated[
        Path | None,
        typer.Option(help="The cases file (default: POLICY.tests.yaml beside the policy)."),
    ] = None,
    model: ModelOption = None,
    backend: BackendOption = None,
    server: ServersOption = None,
    relevance: RelevanceOption = None,
    locator: LocatorOption = None,
    thresholds: ThresholdsOption = None,
    allow_unreviewed: AllowUnreviewedOption = False,
    repeat: Annotated[
        int,
        typer.Option(
            min=1, max=100, help="Judge each case N times and report cases whose verdict changes."
        ),
    ] = 1,
    coverage: Annotated[
        bool,
        typer.Option(
            "--coverage",
            help="Report, per rule, precondition and alternative, how many cases saw it "
            "decided Yes and No, and what no case reached.",
        ),
    ] = False,
    min_coverage: Annotated[
        float | None,
        typer.Option(
            min=0.0,
            max=100.0,
            help="Fail (exit 1) when fewer than P% of the alternatives were seen both ways.",
        ),
    ] = None,
    junit: Annotated[
        Path | None, typer.Option(help="Write the results as JUnit XML to FILE (for CI).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON document.")] = False,
    check_only: Annotated[
        bool,
        typer.Option(
            "--check",
            help="Only check the cases file against the policy (no model; missing images "
            "are listed, not judged).",
        ),
    ] = False,
    schema: Annotated[
        bool, typer.Option("--schema", help="Print the JSON Schema of the cases file format.")
    ] = False,
    concurrency: Annotated[int, typer.Option(min=1, max=1024, help="Images in flight.")] = 8,
    store: Annotated[
        Path | None, typer.Option(help="SQLite store (default: <cache>/judge.sqlite3).")
    ] = None,
) -> None:
    """Run a policy's cases: does it still decide the known images as expected?"""
    from judge.constitution import Constitution
    from judge.constitution.loader import require_enabled_rules
    from judge.policy.cases import default_cases_path, image_problems, load_cases

    if schema:
        from judge.policy.cases import cases_json_schema

        typer.echo(json.dumps(cases_json_schema(), indent=2))
        return
    if policy is None:
        raise InputError("name the policy: judge test POLICY.yaml [--cases FILE]")
    constitution = Constitution.load(policy)
    source = constitution.path or policy
    require_enabled_rules(constitution.spec.rules, str(source))
    cases_path = cases or default_cases_path(source)
    if not cases_path.exists():
        raise DatasetError(
            f"{cases_path}: no such cases file; write one (README: Testing a policy) or name "
            "it with --cases"
        )
    loaded = load_cases(cases_path, constitution)
    problems = image_problems(loaded)
    if check_only:
        for index, why in problems.items():
            typer.echo(fit(f"WARN {cases_path}:{loaded.lines[index]}: {why}"), err=True)
        missing = f"; {len(problems)} image(s) not here" if problems else ""
        typer.echo(fit(f"OK   {cases_path}: {len(loaded.cases)} cases for {source}{missing}"))
        return
    runs = _judge(
        constitution,
        loaded.images,
        problems,
        repeat=repeat,
        concurrency=concurrency,
        options=dict(
            **ModelOptions(
                model=model,
                backend=backend,
                server=server_arg(server),
                relevance=relevance,
                locator=locator,
            ).judge_kwargs(),
            thresholds=thresholds,
            store=store,
            allow_unreviewed=allow_unreviewed,
        ),
    )
    verdicts, model_id, kind = runs
    report = evaluate_cases(
        loaded, verdicts, constitution.lock, policy=str(source), model_id=model_id, backend=kind
    )
    statuses = [c.status for c in report.cases]
    low = min_coverage is not None and _below(report, min_coverage)
    if low:
        statuses.append("failed")
    code = exit_code(statuses)
    if junit is not None:
        from judge.policy.junit import junit_xml

        junit.parent.mkdir(parents=True, exist_ok=True)
        junit.write_text(junit_xml(report), encoding="utf-8")
    if as_json:
        document = {
            "summary": _summary(report, code, min_coverage),
            "report": report.model_dump(mode="json"),
        }
        typer.echo(json.dumps(document, indent=2))
    else:
        _print(report, coverage=coverage or min_coverage is not None)
        if low:
            typer.echo(
                f"coverage {report.coverage.percent:.1f}% is below --min-coverage "
                f"{min_coverage:g}%"
            )
    if code:
        raise typer.Exit(code)


def _below(report: CasesReport, percent: float) -> bool:
    cov = report.coverage
    return cov.alternatives > 0 and 100.0 * cov.alternatives_both_ways < percent * cov.alternatives


def _judge(
    constitution: Any,
    images: list[Path],
    problems: dict[int, str],
    *,
    repeat: int,
    concurrency: int,
    options: dict[str, Any],
) -> tuple[list[list[Verdict]], str | None, str | None]:
    """Every run's verdicts in case order (an unreadable image's error verdict in its
    place, judged never), and the model id and back end that judged."""
    from judge.engine.judge import Judge

    failed = {
        i: unreadable(str(images[i]), images[i], ImageError(why)) for i, why in problems.items()
    }
    readable = [str(image) for i, image in enumerate(images) if i not in failed]
    model_id = kind = None
    judged: list[list[Verdict]] = [[] for _ in range(repeat)]
    if readable:  # no model loads for a run of unreadable images only
        with Judge(constitution, **options) as judge:
            model_id, kind = judge.backend.model_id, judge.backend.kind
            inputs = [(path, path) for path in readable]
            judged = [judge.judge_many(inputs, concurrency=concurrency) for _ in range(repeat)]
    runs = []
    for done in judged:
        found = iter(done)
        runs.append([failed[i] if i in failed else next(found) for i in range(len(images))])
    return runs, model_id, kind


# ---- output ------------------------------------------------------------------------------


def _summary(report: CasesReport, code: int, min_coverage: float | None) -> dict[str, Any]:
    return {
        "cases": len(report.cases),
        **report.counts(),
        "unstable": [c.name for c in report.unstable],
        "coverage_percent": report.coverage.percent,
        "min_coverage": min_coverage,
        "policy": report.policy,
        "cases_file": report.cases_file,
        "lock_hash": report.lock_hash,
        "model_id": report.model_id,
        "backend": report.backend,
        "exit_code": code,
    }


def evidence_lines(rule: RuleVerdict) -> list[str]:
    """The evidence that decided `rule`: each met precondition of a violated rule, the
    precondition that was not met, or what stayed undecided, with M, prior and d."""
    if rule.outcome == "irrelevant":
        return [
            f"irrelevant: relevance {rule.relevance if rule.relevance is not None else '?'} "
            f"<= {rule.relevance_threshold}"
        ]
    lines = []
    if rule.reason:
        lines.append(rule.reason)
    for pre in rule.preconditions:
        decisive = pre.index == rule.decisive_precondition
        if rule.outcome != "violated" and not decisive and pre.outcome != "undecided":
            continue
        for alt in pre.alternatives:
            if pre.outcome == "met" and alt.outcome != "met":
                continue  # a met precondition: the alternative that made it met
            line = (
                f"precondition {pre.index + 1} {pre.outcome.replace('_', ' ')}: "
                f"{alt.statement!r} {alt.outcome.replace('_', ' ')} (stage: {alt.stage})"
            )
            numbers = band_line(alt)
            lines.append(f"{line}: {numbers}" if numbers else line)
            if alt.rationale:
                lines.append(f"  why: {alt.rationale}")
    return lines


def _check_lines(check: RuleCheck) -> list[str]:
    head = (
        f"  {check.rule_id}: expected {check.expected.replace('_', ' ')}, "
        f"got {check.got.replace('_', ' ')}"
    )
    rule = check.rule
    return [head] + ([f"    {line}" for line in evidence_lines(rule)] if rule else [])


def _case_lines(case: CaseResult, cases_file: str) -> list[str]:
    word = {"failed": "FAIL", "undecided": "UNDECIDED", "error": "ERROR"}[case.status]
    lines = [f"{word} {case.name} ({cases_file}:{case.line}): {case.reason}"]
    for check in case.differences:
        lines += _check_lines(check)
    return lines


def _print(report: CasesReport, *, coverage: bool) -> None:
    for case in report.failures:
        for line in _case_lines(case, report.cases_file):
            typer.echo(fit(line))
    if coverage:
        for line in coverage_lines(report):
            typer.echo(fit(line))
    counts = report.counts()
    unstable = f", {len(report.unstable)} unstable" if report.unstable else ""
    model = f", model {report.model_id} ({report.backend})" if report.model_id else ""
    typer.echo(
        fit(
            f"{len(report.cases)} cases: {counts['passed']} passed, {counts['failed']} failed, "
            f"{counts['undecided']} undecided, {counts['error']} unreadable{unstable}; "
            f"policy {report.policy} (lock {report.lock_hash}){model}"
        )
    )


def _counts(c: Any, yes: str = "yes", no: str = "no") -> str:
    """"yes 3, no 1", with the cases left undecided and not reached when there are any."""
    if not c.reached:
        return "never reached"
    text = f"{yes} {c.yes}, {no} {c.no}"
    if c.undecided:
        text += f", undecided {c.undecided}"
    if c.not_reached:
        text += f", not reached {c.not_reached}"
    return text


def coverage_lines(report: CasesReport) -> list[str]:
    """The coverage, least covered rule first: each rule, precondition and alternative
    with how many cases saw it Yes, No, undecided, or never reached it."""
    cov = report.coverage
    lines = [
        f"coverage: {cov.alternatives_both_ways} of {cov.alternatives} alternatives "
        f"({cov.percent:.1f}%) seen both Yes and No over {cov.cases} cases; least covered "
        "rules first"
    ]
    for rule in cov.rules:
        lines.append(
            f"{rule.rule_id}: {rule.alternatives_both_ways}/{rule.alternatives} alternatives "
            f"both ways; {_counts(rule.counts, 'violated', 'not violated')}"
        )
        for pre in rule.preconditions:
            if len(pre.alternatives) == 1:
                alt = pre.alternatives[0]
                lines.append(f"  {pre.index + 1} {alt.statement!r}: {_counts(alt.counts)}")
                continue
            lines.append(f"  {pre.index + 1} any of: {_counts(pre.counts, 'met', 'not met')}")
            for alt in pre.alternatives:
                lines.append(f"      {alt.statement!r}: {_counts(alt.counts)}")
    if cov.never_reached:
        lines.append(f"never reached by any case: {'; '.join(cov.never_reached)}")
    return lines
