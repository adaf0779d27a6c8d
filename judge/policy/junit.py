"""A cases report as JUnit XML, the format CI systems read test results in.

    <testsuites name="judge test" tests=".." failures=".." errors=".." time="..">
      <testsuite name="POLICY" tests=".." failures=".." errors=".." skipped="0" time="..">
        <properties> policy, cases file, lock hash, model, back end, repeat </properties>
        <testcase name="CASE" classname="POLICY" file="CASES" line="N" time="..">
          <failure message="why" type="failed">rules that differ</failure>   (failed)
          <error message="why" type="undecided">...</error>          (undecided, error)
        </testcase>
      </testsuite>
    </testsuites>

A failed case is a `failure`; an undecided case (a model failure, an answer that stayed
uncertain) and an unreadable image are `error`s: the test could not be carried out.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET

from judge.policy.cases import CaseResult, CasesReport


def _detail(case: CaseResult) -> str:
    lines = [case.reason or case.status]
    for check in case.differences:
        lines.append(
            f"{check.rule_id}: expected {check.expected.replace('_', ' ')}, "
            f"got {check.got.replace('_', ' ')}"
            + (f" ({check.rule.reason})" if check.rule is not None and check.rule.reason else "")
        )
    return "\n".join(lines)


def junit_xml(report: CasesReport) -> str:
    """`report` as a JUnit XML document (UTF-8 text with its declaration)."""
    counts = report.counts()
    failures, errors = counts["failed"], counts["undecided"] + counts["error"]
    seconds = f"{sum(c.seconds for c in report.cases):.3f}"
    top = ET.Element(
        "testsuites",
        name="judge test",
        tests=str(len(report.cases)),
        failures=str(failures),
        errors=str(errors),
        time=seconds,
    )
    name = report.policy
    suite = ET.SubElement(
        top,
        "testsuite",
        name=name,
        tests=str(len(report.cases)),
        failures=str(failures),
        errors=str(errors),
        skipped="0",
        time=seconds,
    )
    properties = ET.SubElement(suite, "properties")
    for key, value in (
        ("policy", report.policy),
        ("cases_file", report.cases_file),
        ("lock_hash", report.lock_hash),
        ("model_id", report.model_id or ""),
        ("backend", report.backend or ""),
        ("repeat", str(report.repeat)),
        ("coverage_percent", f"{report.coverage.percent}"),
    ):
        ET.SubElement(properties, "property", name=key, value=value)
    for case in report.cases:
        node = ET.SubElement(
            suite,
            "testcase",
            name=case.name,
            classname=name,
            file=report.cases_file,
            line=str(case.line),
            time=f"{case.seconds:.3f}",
        )
        if case.status == "passed":
            continue
        tag = "failure" if case.status == "failed" else "error"
        problem = ET.SubElement(node, tag, message=case.reason or case.status, type=case.status)
        problem.text = _detail(case)
    ET.indent(top)
    body = ET.tostring(top, encoding="unicode")
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + body + "\n"
