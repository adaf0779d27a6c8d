"""The full method and its ablations, each a set of `JudgeOptions`.

Names as `judge eval --ablations` takes them; "full" is the method itself and always runs.
The fill ablations ("fill-blur", "fill-black") are the full method with another way of
removing the central region; every other ablation uses the run's fill (`judge eval --fill`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, replace
from typing import Any

from judge.constitution.schema import CompiledRule
from judge.engine.judge import Judge
from judge.engine.procedure import JudgeOptions
from judge.engine.verdict import Verdict
from judge.errors import InputError
from judge.evaluate.baselines import Judged
from judge.evaluate.metrics import verdict_score

FULL = "full"
ABLATIONS: dict[str, JudgeOptions] = {
    "no-objectify": JudgeOptions(objectified=False),  # the author's source text
    "no-preconditions": JudgeOptions(preconditions=False),  # the rule as one statement
    "no-debias": JudgeOptions(debias=False),  # M(None, c) taken as a flat 0.5
    "no-relevance": JudgeOptions(relevance=False),  # every rule judged on every image
    "no-center": JudgeOptions(center=False),  # no central-region step
    "no-cascade": JudgeOptions(cascade=False),  # uncertain stays undecided
    # The region removal the paper leaves open: each fill other than the default.
    "fill-blur": JudgeOptions(fill="blur"),
    "fill-black": JudgeOptions(fill="black"),
}
METHODS: dict[str, JudgeOptions] = {FULL: JudgeOptions(), **ABLATIONS}


def method_options(name: str, fill: str = "mean") -> JudgeOptions:
    """The options of method `name` in a run whose fill is `fill`: a fill ablation keeps
    its own fill, everything else takes the run's."""
    options = METHODS[name]
    if name.startswith("fill-"):
        return options
    return replace(options, fill=fill)  # type: ignore[arg-type]  # JudgeOptions checks it


def nothing_to_ablate(name: str, rules: Sequence[CompiledRule]) -> str | None:
    """Why ablation `name` cannot differ from the full method on these rules, or None.
    "no-objectify" judges the author's text instead of the objectified one: with no rule
    rewritten (a hand-written lock, or rules already objective) it is the full method again,
    and its row must not read as evidence about objectification."""
    enabled = [r for r in rules if r.enabled]
    if name == "no-objectify" and all(r.text == r.source_text for r in enabled):
        return "nothing to ablate: no rule was rewritten by objectification"
    return None


def parse_ablations(text: str | None) -> list[str]:
    """"no-debias,no-cascade" or "all" -> names (without "full")."""
    if not text or text == "none":
        return []
    names = list(ABLATIONS) if text == "all" else [t.strip() for t in text.split(",") if t.strip()]
    unknown = [n for n in names if n not in ABLATIONS]
    if unknown:
        raise InputError(
            f"unknown ablation(s) {', '.join(unknown)}; choose from {', '.join(ABLATIONS)} or all"
        )
    return list(dict.fromkeys(names))


class JudgeMethod:
    """The full method or one ablation: a `Judge` with that ablation's options."""

    def __init__(self, name: str, judge: Judge) -> None:
        self.name = name
        self.kind = "method" if name == FULL else "ablation"
        self.judge = judge

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "options": asdict(self.judge.options),
            "thresholds": self.judge.thresholds.model_dump(),
        }
        idle = nothing_to_ablate(self.name, self.judge.lock.rules)
        if idle:
            out["nothing_to_ablate"] = idle
        return out

    async def ajudge(self, image_id: str, source: Any) -> Judged:
        verdict = await self.judge.ajudge((image_id, source))
        return Judged(verdict, verdict_score(verdict), rationale_of(verdict))


def rationale_of(verdict: Verdict) -> str | None:
    """The model's own words behind the verdict: the cascade's rationale for the decisive
    precondition of the first violated rule (else of any rule that has one)."""
    ranked = sorted(verdict.rules, key=lambda r: r.outcome != "violated")
    for rule in ranked:
        pres = rule.preconditions
        if rule.decisive_precondition is not None:
            pres = sorted(pres, key=lambda p: p.index != rule.decisive_precondition)
        for pre in pres:
            for alt in pre.alternatives:
                if alt.rationale:
                    return f"{rule.rule_id}: {alt.rationale}"
    return None
