"""Policy as code: cases a policy must pass, their coverage, and what a change does.

    from judge import Judge, diff_policies, run_cases
    with Judge("constitutions/toy.yaml", model="toy") as j:
        report = run_cases(j, "constitutions/toy.tests.yaml")     # a CasesReport
    report.passed, report.failures, report.coverage.percent
    diff = diff_policies("old/toy.yaml", "constitutions/toy.yaml")  # a PolicyDiff

* `cases`: the cases file format, loading it (file:line errors), running it.
* `coverage`: which rules, preconditions and alternatives the cases decided both ways.
* `relation`: the exact relation between two precondition chains, with examples.
* `diff`: two policy versions compared rule by rule; `flips`: judged on a set of images,
  sharing the answers both ask (`shared`).
* `junit`: a cases report as JUnit XML.
"""

from __future__ import annotations

from judge.policy.cases import (
    Case,
    CaseResult,
    Cases,
    CasesFile,
    CasesReport,
    RuleCheck,
    arun_cases,
    cases_json_schema,
    default_cases_path,
    evaluate_cases,
    image_problems,
    load_cases,
    policy_of_cases,
    run_cases,
)
from judge.policy.coverage import Counts, Coverage, RuleCoverage, coverage_of
from judge.policy.diff import PolicyDiff, RuleDiff, RuleSide, diff_policies
from judge.policy.flips import Calls, Flip, SetDiff, adiff_on, diff_on, flips
from judge.policy.junit import junit_xml
from judge.policy.relation import Relation, countermodel, formula, implies, normalise, relation
from judge.policy.shared import SharedAnswers

__all__ = [
    "Calls",
    "Case",
    "CaseResult",
    "Cases",
    "CasesFile",
    "CasesReport",
    "Counts",
    "Coverage",
    "Flip",
    "PolicyDiff",
    "Relation",
    "RuleCheck",
    "RuleCoverage",
    "RuleDiff",
    "RuleSide",
    "SetDiff",
    "SharedAnswers",
    "adiff_on",
    "arun_cases",
    "cases_json_schema",
    "countermodel",
    "coverage_of",
    "default_cases_path",
    "diff_on",
    "diff_policies",
    "evaluate_cases",
    "flips",
    "formula",
    "image_problems",
    "implies",
    "junit_xml",
    "load_cases",
    "normalise",
    "policy_of_cases",
    "relation",
    "run_cases",
]
