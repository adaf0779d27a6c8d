"""What a change to a policy does, rule by rule, before anything is judged.

`diff_policies(OLD, NEW)` compares two versions of a constitution. A rule is "added",
"removed", "changed" or "unchanged"; a changed rule lists what changed:

* "text": the author's text, or the objectified text of the lock;
* "topic": what the VLM relevance scan asks about;
* "chain": the precondition chain (with `relation`, decided exactly on the formulas:
  `judge.policy.relation`); a chain changed in case or spacing only is "equivalent";
* "objects": the central object words the locator looks for;
* "thresholds": the thresholds that apply to the rule, as the policy sets them (its
  `defaults.thresholds`, then the rule's own, then the lock's calibration);
* "enabled".

Each version's chains come from its lock when the lock is up to date (what the judge
evaluates); otherwise from the source's hand-written preconditions, and a rule without
them has no known chain (`note` says so).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict, Field

from judge.constitution.formula import formula as formula_text
from judge.constitution.schema import CompiledRule, Lock, RuleSpec
from judge.policy.relation import Relation, normalise, relation
from judge.thresholds import ThresholdOverrides

if TYPE_CHECKING:
    from judge.constitution import Constitution

Change = Literal["text", "topic", "chain", "objects", "thresholds", "enabled"]
Status = Literal["added", "removed", "changed", "unchanged"]


class RuleSide(BaseModel):
    """One version of a rule, as the diff compares it."""

    model_config = ConfigDict(extra="forbid")

    text: str
    objectified: str | None = None  # the lock's objectified text, when it differs
    topic: str | None = None
    enabled: bool = True
    chain: list[list[str]] | None = None  # AND of ORs; None: not known (not compiled)
    formula: str | None = None  # "violated iff [a] AND ([b] OR [c])"
    objects: list[list[str]] | None = None  # per precondition, every central object word
    thresholds: dict[str, float] = Field(default_factory=dict)


class RuleDiff(BaseModel):
    """How one rule differs between the two versions."""

    model_config = ConfigDict(extra="forbid")

    rule_id: str
    status: Status
    changes: list[Change] = Field(default_factory=list)
    old: RuleSide | None = None
    new: RuleSide | None = None
    relation: Relation | None = None  # when the chain changed and both are known
    # name -> [old, new]; None: not set by the policy (judge's default applies).
    thresholds: dict[str, list[float | None]] = Field(default_factory=dict)
    note: str | None = None


class PolicyDiff(BaseModel):
    """Every rule of two policy versions, compared."""

    model_config = ConfigDict(extra="forbid")

    old: str
    new: str
    old_lock_hash: str | None  # None: no up-to-date lock (chains from the source)
    new_lock_hash: str | None
    rules: list[RuleDiff]

    @property
    def changed(self) -> list[RuleDiff]:
        """The rules added, removed or changed."""
        return [r for r in self.rules if r.status != "unchanged"]

    def counts(self) -> dict[str, int]:
        statuses: list[Status] = ["added", "removed", "changed", "unchanged"]
        return {s: sum(r.status == s for r in self.rules) for s in statuses}


class _Version:
    """One side of the diff: its rules as compiled (or as written), and where from."""

    def __init__(self, policy: Constitution | str | Path) -> None:
        from judge.constitution import Constitution
        from judge.constitution.compiler import hand_written

        self.policy = policy if isinstance(policy, Constitution) else Constitution.load(policy)
        self.name = str(self.policy.path or self.policy.spec.name)
        self.specs: dict[str, RuleSpec] = {r.id: r for r in self.policy.spec.rules}
        self.lock: Lock | None = None
        self.compiled: dict[str, CompiledRule | None] = {}
        state, self.lock_note = self.policy.lock_status()
        if state == "fresh":
            self.lock = self.policy.lock
            self.compiled = {r.id: r for r in self.lock.rules}
        else:
            self.compiled = {
                r.id: hand_written(r) if r.preconditions else None for r in self.policy.spec.rules
            }

    def side(self, rule_id: str) -> RuleSide:
        spec = self.specs[rule_id]
        compiled = self.compiled.get(rule_id)
        chain = compiled.preconditions if compiled is not None else None
        objectified = compiled.text if compiled is not None else None
        return RuleSide(
            text=spec.text,
            objectified=objectified if objectified != spec.text else None,
            topic=compiled.topic if compiled is not None else spec.topic,
            enabled=spec.enabled,
            chain=[list(p.any_of) for p in chain] if chain else None,
            formula=formula_text(chain) if chain else None,
            objects=[p.all_objects() for p in chain] if chain else None,
            thresholds=self.thresholds(rule_id),
        )

    def thresholds(self, rule_id: str) -> dict[str, float]:
        """The thresholds the policy sets for the rule (judge's defaults left out)."""
        layers: list[ThresholdOverrides | None] = [
            self.policy.spec.defaults.thresholds,
            self.specs[rule_id].thresholds,
        ]
        calibration = self.lock.calibration if self.lock is not None else None
        if calibration is not None:
            if calibration.relevance is not None:
                layers.append(ThresholdOverrides(relevance=calibration.relevance))
            layers.append(calibration.rules.get(rule_id))
        out: dict[str, float] = {}
        for layer in layers:
            if layer is not None:
                out.update(layer.model_dump(exclude_none=True))
        return out


def _compare(rule_id: str, old: _Version, new: _Version) -> RuleDiff:
    a, b = old.side(rule_id), new.side(rule_id)
    changes: list[Change] = []
    if (a.text, a.objectified) != (b.text, b.objectified):
        changes.append("text")
    if a.topic != b.topic:
        changes.append("topic")
    result = RuleDiff(rule_id=rule_id, status="unchanged", old=a, new=b)
    if a.chain != b.chain:
        changes.append("chain")
        if a.chain is not None and b.chain is not None:
            result.relation = relation(a.chain, b.chain)
            if result.relation.kind == "equivalent" and _same_atoms(a.chain, b.chain):
                result.note = "the chain changed in case or spacing only"
        else:
            missing = old.name if a.chain is None else new.name
            result.note = (
                f"{missing}: the rule's chain is not known (no up-to-date lock, no "
                "hand-written preconditions); run `judge compile` to compare chains"
            )
    if a.objects != b.objects and "chain" not in changes:
        changes.append("objects")
    keys = sorted(set(a.thresholds) | set(b.thresholds))
    moved = {
        k: [a.thresholds.get(k), b.thresholds.get(k)]
        for k in keys
        if a.thresholds.get(k) != b.thresholds.get(k)
    }
    if moved:
        changes.append("thresholds")
        result.thresholds = moved
    if a.enabled != b.enabled:
        changes.append("enabled")
    result.changes = changes
    result.status = "changed" if changes else "unchanged"
    return result


def _same_atoms(a: list[list[str]], b: list[list[str]]) -> bool:
    def shape(chain: list[list[str]]) -> list[list[str]]:
        return [[normalise(s) for s in pre] for pre in chain]

    return shape(a) == shape(b)


def diff_policies(
    old: Constitution | str | Path, new: Constitution | str | Path
) -> PolicyDiff:
    """Compare two versions of a policy (files or `Constitution`s), rule by rule.

    >>> d = diff_policies("old/toy.yaml", "constitutions/toy.yaml")
    >>> [(r.rule_id, r.status, r.relation and r.relation.kind) for r in d.changed]
    """
    before, after = _Version(old), _Version(new)
    rules: list[RuleDiff] = []
    for rule_id in after.specs:
        if rule_id in before.specs:
            rules.append(_compare(rule_id, before, after))
        else:
            rules.append(RuleDiff(rule_id=rule_id, status="added", new=after.side(rule_id)))
    for rule_id in before.specs:
        if rule_id not in after.specs:
            rules.append(RuleDiff(rule_id=rule_id, status="removed", old=before.side(rule_id)))
    return PolicyDiff(
        old=before.name,
        new=after.name,
        old_lock_hash=before.lock.lock_hash() if before.lock is not None else None,
        new_lock_hash=after.lock.lock_hash() if after.lock is not None else None,
        rules=rules,
    )
