"""Cases: what a policy must decide on known images, checked like unit tests.

A cases file (by default `POLICY.tests.yaml` beside `POLICY.yaml`):

    description: what these cases pin down        # optional
    cases:
      - name: a blue square alone                  # optional; the image's path otherwise
        image: images/blue-square.png              # relative to this file
        expect: unsafe                             # safe | unsafe
        violated: [blue-anywhere]                  # optional: these rules must be violated
        not_violated: [red-and-blue]               # optional: these must not be

Loading (`load_cases`) checks everything that needs no model, each problem with
file:line:column: the format (unknown keys are errors, never ignored), rule ids the
policy lacks, a rule that is disabled but expected violated, a rule in both lists, a
"safe" case that names violated rules, and two cases with one name. The images are only
named here; a missing one is that case's error when it is judged (`image_problems` finds
them before any model loads).

Running (`run_cases`) judges every case's image (`repeat` times) with a `Judge` and gives
each case a status:

* "passed": every expectation holds;
* "failed": some expectation is contradicted by a decided outcome, or (with repeat > 1)
  the verdict changed between runs while no run was undecided;
* "undecided": nothing contradicts an expectation, but something it needs stayed
  undecided (a model failure, an answer that stayed uncertain);
* "error": the image could not be read.

A rule expected "not violated" holds when it was decided not violated or irrelevant (or
is disabled); expected "violated" only when decided violated. `expect: safe` expects
every rule not violated.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError

from judge.constitution import yamlsafe
from judge.constitution.schema import CompiledRule, Lock, RuleSpec
from judge.engine.verdict import RuleVerdict, Verdict
from judge.errors import DatasetError
from judge.policy.coverage import Coverage, coverage_of

if TYPE_CHECKING:
    from judge.constitution import Constitution
    from judge.engine.judge import Judge

Text = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=2000)]
# Rule ids are checked against the policy, which says more than a pattern would.
RuleId = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
Status = Literal["passed", "failed", "undecided", "error"]
Expected = Literal["violated", "not_violated"]


class Case(BaseModel):
    """One case: an image and what the policy must decide for it."""

    model_config = ConfigDict(extra="forbid")

    name: Text | None = Field(None, description="Shown for the case; default: its image.")
    image: Text = Field(description="The image file, relative to the cases file.")
    expect: Literal["safe", "unsafe"] = Field(description="The image's expected outcome.")
    violated: list[RuleId] = Field(
        default_factory=list, description="Rule ids that must be decided violated."
    )
    not_violated: list[RuleId] = Field(
        default_factory=list,
        description="Rule ids that must be decided not violated (or irrelevant).",
    )

    @property
    def label(self) -> str:
        return self.name or self.image


class CasesFile(BaseModel):
    """A cases file: an optional description and at least one case."""

    model_config = ConfigDict(extra="forbid")

    description: str = ""
    cases: list[Case] = Field(min_length=1, max_length=100_000)


def cases_json_schema() -> dict[str, Any]:
    """The JSON Schema of the cases file format (for editors' YAML checking)."""
    schema = CasesFile.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "judge policy cases"
    return schema


@dataclass
class Cases:
    """A loaded, checked cases file: the cases, where each was written (line), and each
    image's path (resolved against the file's folder)."""

    path: Path
    file: CasesFile
    lines: list[int]
    images: list[Path]

    @property
    def cases(self) -> list[Case]:
        return self.file.cases


def default_cases_path(policy: str | Path) -> Path:
    """`POLICY.tests.yaml` beside `POLICY.yaml` (or `.yml`)."""
    path = Path(policy)
    return path.with_name(f"{path.stem}.tests.yaml")


def policy_of_cases(path: str | Path) -> Path | None:
    """The policy a cases file `X.tests.yaml` sits beside (`X.yaml` or `X.yml`, if there
    is one), so a glob such as `constitutions/*.yaml` can be read as its policies; None
    for any other file."""
    path = Path(path)
    for suffix in (".tests.yaml", ".tests.yml"):
        if path.name.endswith(suffix) and len(path.name) > len(suffix):
            stem = path.name[: -len(suffix)]
            found = [path.with_name(stem + s) for s in (".yaml", ".yml")]
            return next((p for p in found if p.is_file()), None)
    return None


# ---- loading ---------------------------------------------------------------------------


def _rules_of(policy: Constitution | Lock | Sequence[RuleSpec | CompiledRule]) -> list[Any]:
    from judge.constitution import Constitution

    if isinstance(policy, Constitution):
        return list(policy.spec.rules)
    if isinstance(policy, Lock):
        return list(policy.rules)
    return list(policy)


def load_cases(
    path: str | Path, policy: Constitution | Lock | Sequence[RuleSpec | CompiledRule]
) -> Cases:
    """Read and check the cases file at `path` against `policy`'s rules (a Constitution,
    a Lock, or its rules).

    Raises:
        DatasetError: naming file:line:column, for every problem that needs no model.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as error:
        why = error.strerror or error
        raise DatasetError(f"cannot read the cases file {path}: {why}") from None
    try:
        located = yamlsafe.load(data)
    except yamlsafe.YamlProblem as problem:
        raise _error(path, problem.line or 1, problem.column or 1, problem.message) from None
    raw = located.value
    if not isinstance(raw, dict):
        raise _error(path, 1, 1, "a cases file is a mapping with 'cases': a list of cases")
    try:
        parsed = CasesFile.model_validate(raw)
    except ValidationError as error:
        raise _from_validation(error, located, path) from None
    rules = {r.id: r for r in _rules_of(policy)}
    lines: list[int] = []
    seen: dict[str, int] = {}
    for index, case in enumerate(parsed.cases):
        line, column = located.position(("cases", index))
        lines.append(line)
        where = f"case {index + 1} ({case.label!r})"
        if case.label in seen:
            raise _error(path, line, column, f"{where}: the name is used by the case at line "
                         f"{seen[case.label]} too; give each case its own name")
        seen[case.label] = line
        if case.expect == "safe" and case.violated:
            at = located.position(("cases", index, "violated"))
            raise _error(path, *at, f"{where}: expects 'safe' but names violated rules; "
                         "a safe image violates none")
        for key in ("violated", "not_violated"):
            for item, rule_id in enumerate(getattr(case, key)):
                at = located.position(("cases", index, key, item))
                rule = rules.get(rule_id)
                if rule is None:
                    close = difflib.get_close_matches(rule_id, list(rules), n=1)
                    hint = f"; did you mean {close[0]!r}?" if close else ""
                    raise _error(path, *at, f"{where}: the policy has no rule {rule_id!r}"
                                 f"{hint} (its rules: {', '.join(rules)})")
                if key == "violated" and not rule.enabled:
                    raise _error(path, *at, f"{where}: rule {rule_id!r} is disabled in the "
                                 "policy, so it is never violated")
        both = set(case.violated) & set(case.not_violated)
        if both:
            at = located.position(("cases", index, "not_violated"))
            raise _error(path, *at, f"{where}: {', '.join(sorted(both))} both violated and "
                         "not violated")
    # Normalised, not resolved: a parent step is folded into the path, which stays relative.
    images = [Path(os.path.normpath(path.parent / case.image)) for case in parsed.cases]
    return Cases(path=path, file=parsed, lines=lines, images=images)


def _error(path: Path, line: int, column: int, message: str) -> DatasetError:
    return DatasetError(f"{path}:{line}:{column}: {message}")


def _from_validation(error: ValidationError, located: yamlsafe.Located, path: Path) -> DatasetError:
    problems = []
    for detail in error.errors(include_url=False):
        loc = tuple(detail["loc"])
        kind = detail["type"]
        if kind == "missing":
            line, column = located.position(loc[:-1])
            message = f"required key {loc[-1]!r} is missing"
        elif kind == "extra_forbidden":
            line, column = located.position(loc, key=True)
            model = Case if "cases" in loc[:1] and len(loc) > 2 else CasesFile
            allowed = list(model.model_fields)
            close = difflib.get_close_matches(str(loc[-1]), allowed, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            message = f"unknown key {loc[-1]!r} (allowed: {', '.join(allowed)}){hint}"
        elif kind == "literal_error":
            line, column = located.position(loc)
            expected = (detail.get("ctx") or {}).get("expected")
            message = f"must be one of {expected}, not {detail.get('input')!r}"
        else:
            line, column = located.position(loc)
            message = str(detail["msg"])
        shown = ".".join(str(p) for p in loc)
        problems.append((line, column, f"{shown}: {message}" if shown else message))
    problems.sort()
    line, column, message = problems[0]
    if len(problems) > 1:
        rest = "\n".join(f"  {path}:{ln}:{col}: {msg}" for ln, col, msg in problems[1:])
        message += f"\n{len(problems) - 1} more problem(s):\n{rest}"
    return _error(path, line, column, message)


def image_problems(cases: Cases) -> dict[int, str]:
    """Case index -> why its image cannot be judged (missing, not a file, not an image),
    found without decoding it and without a model."""
    from judge.inputs import precheck

    found = {index: precheck(str(image)) for index, image in enumerate(cases.images)}
    return {index: str(error) for index, error in found.items() if error is not None}


# ---- results ---------------------------------------------------------------------------


class RuleCheck(BaseModel):
    """An expectation about one rule that did not hold: what was expected, what the
    verdict said ("disabled" for a rule the policy has switched off), and the rule's
    verdict with its evidence."""

    model_config = ConfigDict(extra="forbid")

    rule_id: str
    expected: Expected
    got: str
    rule: RuleVerdict | None = None


class CaseResult(BaseModel):
    """What happened to one case (over all its repeats)."""

    model_config = ConfigDict(extra="forbid")

    name: str
    image: str  # as written in the cases file
    line: int  # where the case starts in the cases file
    expect: Literal["safe", "unsafe"]
    status: Status
    outcome: str | None = None  # the first run's image outcome
    outcomes: list[str] = Field(default_factory=list)  # every run's, in order
    unstable: bool = False  # the verdict differed between runs
    reason: str | None = None  # a sentence: why it did not pass
    differences: list[RuleCheck] = Field(default_factory=list)
    seconds: float = 0.0
    verdict: Verdict | None = None  # the first run's


class CasesReport(BaseModel):
    """A run of a cases file: every case's result, the coverage, and what judged."""

    model_config = ConfigDict(extra="forbid")

    policy: str
    cases_file: str
    lock_hash: str
    model_id: str | None
    backend: str | None
    repeat: int
    cases: list[CaseResult]
    coverage: Coverage

    def counts(self) -> dict[str, int]:
        """How many cases have each status."""
        statuses: list[Status] = ["passed", "failed", "undecided", "error"]
        return {s: sum(c.status == s for c in self.cases) for s in statuses}

    @property
    def passed(self) -> bool:
        """Every case passed."""
        return all(c.status == "passed" for c in self.cases)

    @property
    def failures(self) -> list[CaseResult]:
        """The cases that did not pass, in file order."""
        return [c for c in self.cases if c.status != "passed"]

    @property
    def unstable(self) -> list[CaseResult]:
        return [c for c in self.cases if c.unstable]


# ---- judging a case ----------------------------------------------------------------------


_DECIDED_NOT = ("not_violated", "irrelevant", "disabled")


def check_verdict(
    case: Case, verdict: Verdict, rules: Mapping[str, Any]
) -> tuple[Status, str | None, list[RuleCheck]]:
    """One run of `case`: its status, why, and the rule expectations that did not hold.
    `rules`: the policy's rules by id (to tell a disabled rule from a missing one)."""
    if verdict.outcome == "error":
        return "error", f"the image could not be judged: {verdict.error}", []
    by_id = {r.rule_id: r for r in verdict.rules}

    def got(rule_id: str) -> tuple[str, RuleVerdict | None]:
        found = by_id.get(rule_id)
        if found is not None:
            return found.outcome, found
        rule = rules.get(rule_id)
        return ("disabled" if rule is not None and not rule.enabled else "undecided"), None

    wanted: dict[str, Expected] = {r: "violated" for r in case.violated}
    not_wanted = case.not_violated
    if case.expect == "safe":
        not_wanted = [r.rule_id for r in verdict.rules] + list(case.not_violated)
    wanted.update({r: "not_violated" for r in not_wanted})
    wrong: list[RuleCheck] = []
    open_: list[RuleCheck] = []
    for rule_id, expected in wanted.items():
        outcome, rule = got(rule_id)
        if expected == "violated" and outcome == "violated":
            continue
        if expected == "not_violated" and outcome in _DECIDED_NOT:
            continue
        check = RuleCheck(rule_id=rule_id, expected=expected, got=outcome, rule=rule)
        decided = outcome in ("violated", *_DECIDED_NOT)
        (wrong if decided else open_).append(check)
    outcome_wrong = verdict.outcome in ("safe", "unsafe") and verdict.outcome != case.expect
    if outcome_wrong or wrong:
        parts = [f"expected {case.expect}, judged {verdict.outcome}"] if outcome_wrong else []
        parts += [
            f"{c.rule_id} {c.got.replace('_', ' ')} (expected {c.expected.replace('_', ' ')})"
            for c in wrong
        ]
        return "failed", "; ".join(parts), wrong + open_
    if verdict.outcome == "undecided" or open_:
        what = ", ".join(c.rule_id for c in open_) or ", ".join(verdict.undecided)
        return "undecided", f"expected {case.expect}, undecided: {what or 'no rule decided'}", open_
    return "passed", None, []


def _signature(verdict: Verdict) -> tuple[Any, ...]:
    """What must stay the same from run to run: the outcome and each rule's outcome."""
    return (verdict.outcome, tuple((r.rule_id, r.outcome) for r in verdict.rules))


def evaluate_cases(
    cases: Cases,
    runs: Sequence[Sequence[Verdict]],
    lock: Lock,
    *,
    policy: str = "",
    model_id: str | None = None,
    backend: str | None = None,
) -> CasesReport:
    """The report for `cases` from its verdicts: `runs[r][i]` is case i's verdict in run
    r (one run per repeat, each in case order)."""
    rules = {r.id: r for r in lock.rules}
    results = []
    for index, case in enumerate(cases.cases):
        verdicts = [run[index] for run in runs]
        checked = [check_verdict(case, v, rules) for v in verdicts]
        statuses = [s for s, _, _ in checked]
        unstable = len({_signature(v) for v in verdicts}) > 1
        status: Status
        pick = next((c for c in checked if c[0] == "error"), None)
        pick = pick or next((c for c in checked if c[0] == "failed"), None)
        if pick is not None:
            status, reason, differences = pick
        elif unstable and "undecided" not in statuses:
            status, reason, differences = "failed", None, []
        else:
            pick = next((c for c in checked if c[0] == "undecided"), checked[0])
            status, reason, differences = pick
        if unstable:
            shown = ", ".join(_signature_text(v) for v in verdicts)
            note = f"unstable over {len(verdicts)} runs: {shown}"
            reason = f"{reason}; {note}" if reason else note
        seconds = sum(
            (v.run.timings.get("total", 0.0) + v.run.timings.get("load", 0.0)) if v.run else 0.0
            for v in verdicts
        )
        results.append(
            CaseResult(
                name=case.label,
                image=case.image,
                line=cases.lines[index],
                expect=case.expect,
                status=status,
                outcome=verdicts[0].outcome,
                outcomes=[v.outcome for v in verdicts],
                unstable=unstable,
                reason=reason,
                differences=differences,
                seconds=round(seconds, 6),
                verdict=verdicts[0],
            )
        )
    first = list(runs[0]) if runs else []
    return CasesReport(
        policy=policy or lock.source,
        cases_file=str(cases.path),
        lock_hash=lock.lock_hash(),
        model_id=model_id,
        backend=backend,
        repeat=len(runs),
        cases=results,
        coverage=coverage_of(lock, first),
    )


def _signature_text(verdict: Verdict) -> str:
    if verdict.outcome != "unsafe":
        return verdict.outcome
    return f"unsafe ({', '.join(verdict.violated)})"


# ---- running -----------------------------------------------------------------------------


@dataclass
class _Plan:
    cases: Cases
    inputs: list[tuple[str, str]] = field(default_factory=list)


def _plan(judge: Judge, cases: Cases | str | Path) -> _Plan:
    if not isinstance(cases, Cases):
        cases = load_cases(cases, judge.lock)
    # Cases loaded against another policy: a rule this one lacks is an error here too.
    known = {r.id for r in judge.lock.rules}
    unknown = sorted({r for c in cases.cases for r in (*c.violated, *c.not_violated)} - known)
    if unknown:
        raise DatasetError(
            f"{cases.path}: the policy {judge.lock.source} has no rule {', '.join(unknown)}"
        )
    return _Plan(cases, [(str(p), str(p)) for p in cases.images])


def _report(judge: Judge, plan: _Plan, runs: list[list[Verdict]]) -> CasesReport:
    return evaluate_cases(
        plan.cases,
        runs,
        judge.lock,
        policy=str(judge.lock.source),
        model_id=judge.backend.model_id,
        backend=judge.backend.kind,
    )


def _check_repeat(repeat: int) -> None:
    if repeat < 1:
        raise DatasetError("repeat must be at least 1")


def run_cases(
    judge: Judge, cases: Cases | str | Path, *, repeat: int = 1, concurrency: int = 8
) -> CasesReport:
    """Judge every case's image with `judge` (`repeat` times) and check the expectations.

    >>> with Judge("constitutions/toy.yaml", model="toy") as j:
    ...     report = run_cases(j, "constitutions/toy.tests.yaml")
    >>> report.passed, [c.name for c in report.failures], report.coverage.percent
    """
    _check_repeat(repeat)
    plan = _plan(judge, cases)
    runs = [judge.judge_many(plan.inputs, concurrency=concurrency) for _ in range(repeat)]
    return _report(judge, plan, runs)


async def arun_cases(
    judge: Judge, cases: Cases | str | Path, *, repeat: int = 1, concurrency: int = 8
) -> CasesReport:
    """`run_cases` from async code (with the Judge's async methods)."""
    _check_repeat(repeat)
    plan = _plan(judge, cases)
    runs = [await judge.ajudge_many(plan.inputs, concurrency=concurrency) for _ in range(repeat)]
    return _report(judge, plan, runs)
