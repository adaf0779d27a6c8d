"""Coverage of a policy by a set of verdicts: which parts of each rule the cases exercised.

For every rule, precondition and OR alternative it counts the cases that saw it decided
Yes (violated / met) and No (not violated / not met), those where it stayed undecided, and
those that never reached it:

* a rule is not reached when the relevance scan skipped it (irrelevant);
* a precondition is not reached when its rule was not, or when the chain stopped before
  it: an AND chain stops at its first precondition that is not met, and the verdict marks
  the links after it (and any left uncertain and not needed) as skipped;
* an alternative is not reached when its precondition was not, or when it was not needed
  (its precondition was settled by a sibling while it stayed uncertain).

An alternative is covered when some case saw it Yes and some case saw it No; `percent` is
the share of all alternatives of the enabled rules that are. Rules are listed least covered
first. Unreadable images (outcome "error") are not counted.
"""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import BaseModel, ConfigDict, Field

from judge.constitution.schema import Lock
from judge.engine.verdict import PreconditionEvidence, RuleVerdict, Verdict


class Counts(BaseModel):
    """How many cases saw something decided Yes, No, left undecided, or not reached."""

    model_config = ConfigDict(extra="forbid")

    yes: int = 0
    no: int = 0
    undecided: int = 0
    not_reached: int = 0

    @property
    def both_ways(self) -> bool:
        return self.yes > 0 and self.no > 0

    @property
    def reached(self) -> bool:
        return self.yes + self.no + self.undecided > 0

    def add(self, outcome: str | None) -> None:
        """Count one case: "yes", "no", "undecided", or None for not reached."""
        if outcome == "yes":
            self.yes += 1
        elif outcome == "no":
            self.no += 1
        elif outcome == "undecided":
            self.undecided += 1
        else:
            self.not_reached += 1


class AlternativeCoverage(BaseModel):
    model_config = ConfigDict(extra="forbid")

    statement: str
    counts: Counts = Field(default_factory=Counts)


class PreconditionCoverage(BaseModel):
    model_config = ConfigDict(extra="forbid")

    index: int  # 0-based, as in verdicts
    counts: Counts = Field(default_factory=Counts)
    alternatives: list[AlternativeCoverage]


class RuleCoverage(BaseModel):
    model_config = ConfigDict(extra="forbid")

    rule_id: str
    counts: Counts = Field(default_factory=Counts)  # yes: violated, no: not violated
    preconditions: list[PreconditionCoverage]
    alternatives: int = 0
    alternatives_both_ways: int = 0

    @property
    def share(self) -> float:
        """The share of this rule's alternatives seen both ways."""
        return self.alternatives_both_ways / self.alternatives if self.alternatives else 1.0


class Coverage(BaseModel):
    """The coverage of the enabled rules of a lock by some cases' verdicts."""

    model_config = ConfigDict(extra="forbid")

    cases: int
    alternatives: int
    alternatives_both_ways: int
    percent: float  # alternatives seen both ways, of all alternatives
    rules: list[RuleCoverage]  # least covered first
    never_reached: list[str]  # "rule", "rule precondition N", "rule precondition N 'text'"

    def rule(self, rule_id: str) -> RuleCoverage:
        """The coverage of rule `rule_id` (KeyError if the lock has no such enabled rule)."""
        for rule in self.rules:
            if rule.rule_id == rule_id:
                return rule
        raise KeyError(rule_id)


_YES_NO = {
    "violated": "yes",
    "not_violated": "no",
    "met": "yes",
    "not_met": "no",
    "undecided": "undecided",
}


def _pre_of(rule: RuleVerdict | None, index: int) -> PreconditionEvidence | None:
    if rule is None:
        return None
    return next((p for p in rule.preconditions if p.index == index), None)


def coverage_of(lock: Lock, verdicts: Sequence[Verdict]) -> Coverage:
    """The coverage of `lock`'s enabled rules by `verdicts` (one per case)."""
    judged = [v for v in verdicts if v.outcome != "error"]
    rules: list[RuleCoverage] = []
    never: list[str] = []
    for compiled in lock.enabled_rules():
        rule = RuleCoverage(
            rule_id=compiled.id,
            preconditions=[
                PreconditionCoverage(
                    index=i,
                    # As the engine asks them: each distinct statement once.
                    alternatives=[AlternativeCoverage(statement=s) for s in dict.fromkeys(alts)],
                )
                for i, alts in enumerate(p.any_of for p in compiled.preconditions)
            ],
        )
        for verdict in judged:
            found = next((r for r in verdict.rules if r.rule_id == compiled.id), None)
            outcome = _YES_NO.get(found.outcome) if found is not None else None
            rule.counts.add(outcome)
            for pre in rule.preconditions:
                evidence = _pre_of(found, pre.index) if outcome is not None else None
                pre_outcome = _YES_NO.get(evidence.outcome) if evidence is not None else None
                pre.counts.add(pre_outcome)
                alts = {a.statement: a for a in evidence.alternatives} if evidence else {}
                for alt in pre.alternatives:
                    seen = alts.get(alt.statement) if pre_outcome is not None else None
                    alt.counts.add(_YES_NO.get(seen.outcome) if seen is not None else None)
        every = [a for p in rule.preconditions for a in p.alternatives]
        rule.alternatives = len(every)
        rule.alternatives_both_ways = sum(a.counts.both_ways for a in every)
        if not rule.counts.reached:
            never.append(rule.rule_id)
        else:
            for pre in rule.preconditions:
                if not pre.counts.reached:
                    never.append(f"{rule.rule_id} precondition {pre.index + 1}")
                    continue
                never += [
                    f"{rule.rule_id} precondition {pre.index + 1} {a.statement!r}"
                    for a in pre.alternatives
                    if not a.counts.reached
                ]
        rules.append(rule)
    rules.sort(
        key=lambda r: (
            r.share,
            sum(p.counts.both_ways for p in r.preconditions) / len(r.preconditions),
            r.counts.both_ways,
            r.rule_id,
        )
    )
    total = sum(r.alternatives for r in rules)
    both = sum(r.alternatives_both_ways for r in rules)
    return Coverage(
        cases=len(judged),
        alternatives=total,
        alternatives_both_ways=both,
        percent=round(100.0 * both / total, 2) if total else 100.0,
        rules=rules,
        never_reached=never,
    )
