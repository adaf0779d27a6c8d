"""`judge diff OLD NEW [--on IMAGES]`: what a change to a policy does.

Rule by rule: added, removed, or changed (text, topic, chain, central objects,
thresholds, enabled); a changed chain with its exact relation to the old one (stricter,
looser, equivalent, incomparable) and an example of the statements true in an image that
one version flags and the other does not (judge.policy.diff, judge.policy.relation).
With `--on`, both versions judge the images, sharing every answer both ask, and the
images whose verdict changes are listed per rule, with the model calls the sharing saved
(judge.policy.flips).

Exit codes, for a CI gate, in judge's order: 2 bad input or an unreadable image, 3 a
model failure left a verdict undecided (`--on`), 1 the versions differ (a rule added,
removed or changed, or a verdict that flips), 0 they do not, 8 (before anything is
judged) a lock has rules that need review.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Annotated, Any

import typer

from judge.commands.app import app
from judge.commands.display import fit
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
from judge.commands.policy_test import exit_code
from judge.inputs import expand_inputs, precheck
from judge.policy.diff import PolicyDiff, RuleDiff, diff_policies
from judge.policy.flips import SetDiff


@app.command("diff")
def diff(
    old: Annotated[Path, typer.Argument(help="The policy as it was (YAML or its lock).")],
    new: Annotated[Path, typer.Argument(help="The policy as it is now.")],
    on: Annotated[
        list[str] | None,
        typer.Option(
            "--on",
            help="Images (files, folders, globs; repeatable) to judge with both versions: "
            "lists the images whose verdict changes, per rule.",
        ),
    ] = None,
    model: ModelOption = None,
    backend: BackendOption = None,
    server: ServersOption = None,
    relevance: RelevanceOption = None,
    locator: LocatorOption = None,
    thresholds: ThresholdsOption = None,
    allow_unreviewed: AllowUnreviewedOption = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON document.")] = False,
    concurrency: Annotated[int, typer.Option(min=1, max=1024, help="Images in flight.")] = 8,
    store: Annotated[
        Path | None, typer.Option(help="SQLite store (default: <cache>/judge.sqlite3).")
    ] = None,
) -> None:
    """Compare two versions of a policy: what changed, rule by rule, and (with --on) which
    images it decides differently."""
    changes = diff_policies(old, new)
    statuses = ["failed"] if changes.changed else []
    on_set: SetDiff | None = None
    unreadable: dict[str, str] = {}
    if on:
        paths = expand_inputs(on)
        found = {p: precheck(p) for p in paths}
        unreadable = {p: str(error) for p, error in found.items() if error is not None}
        readable = [p for p in paths if found[p] is None]
        statuses += ["error"] * len(unreadable)
        if readable:
            from judge.policy.flips import adiff_on

            on_set = asyncio.run(
                adiff_on(
                    old,
                    new,
                    readable,
                    model=model,
                    backend=backend,
                    server=server_arg(server),
                    relevance=relevance,
                    locator=locator,
                    thresholds=thresholds,
                    store=store,
                    allow_unreviewed=allow_unreviewed,
                    concurrency=concurrency,
                )
            )
            verdicts = [*on_set.old_verdicts, *on_set.new_verdicts]
            statuses += ["undecided" for v in verdicts if v.outcome == "undecided"]
            statuses += ["error" for v in verdicts if v.outcome == "error"]
            statuses += ["failed"] if on_set.flipped else []
    code = exit_code(statuses)
    if as_json:
        document: dict[str, Any] = {
            "summary": {**changes.counts(), "exit_code": code},
            "diff": changes.model_dump(mode="json"),
            "on": on_set.model_dump(mode="json") if on_set is not None else None,
            "unreadable": unreadable,
        }
        typer.echo(json.dumps(document, indent=2))
    else:
        for line in diff_lines(changes):
            typer.echo(fit(line))
        if on:
            for path, why in unreadable.items():
                typer.echo(fit(f"unreadable, not judged: {why or path}"))
        if on_set is not None:
            for line in set_lines(on_set):
                typer.echo(fit(line))
    if code:
        raise typer.Exit(code)


def _value(value: float | None) -> str:
    return "unset" if value is None else f"{value:g}"


def _rule_lines(rule: RuleDiff) -> list[str]:
    if rule.status == "added":
        assert rule.new is not None
        return [f"+ {rule.rule_id}: added; {rule.new.formula or 'chain not compiled'}"]
    if rule.status == "removed":
        return [f"- {rule.rule_id}: removed"]
    old, new = rule.old, rule.new
    assert old is not None and new is not None
    head = ", ".join(
        f"chain {rule.relation.kind}" if c == "chain" and rule.relation else c
        for c in rule.changes
    )
    lines = [f"~ {rule.rule_id}: {head}"]
    if "text" in rule.changes:
        before, after = old.objectified or old.text, new.objectified or new.text
        lines.append(f"    text: {before!r} -> {after!r}")
    if "topic" in rule.changes:
        lines.append(f"    topic: {old.topic!r} -> {new.topic!r}")
    if "chain" in rule.changes:
        lines.append(f"    old: {old.formula or 'not known'}")
        lines.append(f"    new: {new.formula or 'not known'}")
        relation = rule.relation
        for side, example in (
            ("new", relation.new_only if relation else None),
            ("old", relation.old_only if relation else None),
        ):
            if example is not None:
                shown = ", ".join(repr(s) for s in example) or "nothing"
                lines.append(
                    f"    flagged by the {side} version only, when exactly these are true: {shown}"
                )
    if "objects" in rule.changes:
        lines.append(f"    objects: {old.objects} -> {new.objects}")
    for name, (was, now) in rule.thresholds.items():
        lines.append(f"    {name}: {_value(was)} -> {_value(now)}")
    if "enabled" in rule.changes:
        lines.append(f"    enabled: {str(old.enabled).lower()} -> {str(new.enabled).lower()}")
    if rule.note:
        lines.append(f"    note: {rule.note}")
    return lines


def diff_lines(changes: PolicyDiff) -> list[str]:
    """The diff as text: a summary line, then each rule that changed."""
    counts = changes.counts()
    lines = [
        f"{changes.old} -> {changes.new}: {counts['changed']} changed, {counts['added']} "
        f"added, {counts['removed']} removed, {counts['unchanged']} unchanged"
    ]
    for rule in changes.changed:
        lines += _rule_lines(rule)
    return lines


def _word(outcome: str) -> str:
    return outcome.replace("_", " ")


def set_lines(on_set: SetDiff) -> list[str]:
    """The flips on the set, per rule, and the model calls the sharing saved."""
    flipped = {rule: found for rule, found in on_set.rules.items() if found}
    images = {f.image for found in flipped.values() for f in found}
    lines = [
        f"on {on_set.images} images: {sum(len(f) for f in flipped.values())} rule verdict(s) "
        f"change on {len(images)} image(s); {len(on_set.outcomes)} image outcome(s) change"
    ]
    for rule, found in flipped.items():
        lines.append(f"  {rule}: {len(found)} image(s)")
        lines += [f"    {f.image}: {_word(f.old)} -> {_word(f.new)}" for f in found]
    if on_set.outcomes:
        lines.append("  image outcomes:")
        lines += [f"    {f.image}: {f.old} -> {f.new}" for f in on_set.outcomes]
    calls = on_set.calls
    share = f" ({100.0 * calls.saved / calls.asked:.0f}%)" if calls.asked else ""
    lines.append(
        f"model calls: {calls.asked} asked by the two versions, {calls.sent} sent; sharing "
        f"the answers both versions ask saved {calls.saved}{share} against judging twice"
    )
    return lines
