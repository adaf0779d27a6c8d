"""Verdicts in OpenAI's moderation shape, with judge's evidence alongside.

A result per input image:

* `flagged`: the image violates a rule; or a rule is undecided and the service fails
  closed (the default), in which case `judge.flagged_reason` says so. An image is never
  reported safe because the model could not answer.
* `categories`: rule id -> bool, and OpenAI's category -> bool for each of OpenAI's
  thirteen moderation categories (`OPENAI_CATEGORIES`: "sexual", "violence/graphic", ...)
  that some rule names as its `category`. A rule is true when violated, and when
  undecided under fail-closed (as `flagged`: an undecided rule never reads as clean
  unless the service fails open). A category is true when any of its rules is true. A
  category that no rule of the policy names is absent (the `openai` client reads it as
  None): the policy does not judge it, and absence says so rather than a false "clean".
  Where a rule id is itself one of OpenAI's category names, the category's value is the
  one under that key (the rule's own outcome is in `judge.rules`).
* `category_scores`: rule id -> a number in [0, 1]: the model's M(x, c) = P(Yes) / (P(Yes) +
  P(No)) for the decisive precondition (the one that settled the rule: the first not met,
  the last met, or the first undecided), taking the highest M among its alternatives.
  Where that precondition has no M (a rule skipped as irrelevant, or settled without a
  Yes/No answer), it is 1.0 for a violated rule, 0.0 for one not violated, irrelevant or
  skipped, and for an undecided rule 1.0 under fail-closed and 0.0 under fail-open. M is
  the raw model score: the decision uses it debiased (M minus the language prior), so a
  high M can go with a rule that is not violated; the evidence in `judge.rules` has both.
  A category's score is the highest score among its rules.
* `category_applied_input_types`: rule id (and each covered category) -> ["image"].
* `judge`: the extension: outcome ("safe", "unsafe", "undecided"), the image's sha256,
  the policy's lock hash, violated and undecided rule ids, each rule's outcome with its
  reason and (with `explain`) its per-precondition evidence, and the decision id.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from judge.engine.verdict import deciding_frame, image_outcome, partly_undecided

#: OpenAI's moderation categories, as its API spells the keys of `categories`.
OPENAI_CATEGORIES = (
    "harassment", "harassment/threatening", "hate", "hate/threatening", "illicit",
    "illicit/violent", "self-harm", "self-harm/instructions", "self-harm/intent", "sexual",
    "sexual/minors", "violence", "violence/graphic",
)

# ---- schemas (for the OpenAPI document; responses are built as plain dicts) --------------


class ImageUrl(BaseModel):
    url: str = Field(description="A data URL (data:image/png;base64,...) or, when the "
                     "service allows its host, an http(s) URL.")


class InputPart(BaseModel):
    model_config = ConfigDict(extra="allow")
    type: str = Field(description='"image_url"; "text" parts are refused (400).')
    image_url: ImageUrl | None = None
    text: str | None = None


class ModerationRequest(BaseModel):
    """OpenAI's moderation request, for images."""

    model_config = ConfigDict(extra="allow")
    input: str | list[str] | list[InputPart] = Field(
        description="Image parts. Text (a string, or parts of type text) is refused with 400."
    )
    model: str | None = Field(None, description="Accepted and echoed; the service judges "
                              "with its own policy and model.")


class RuleResult(BaseModel):
    rule_id: str
    outcome: Literal["violated", "not_violated", "undecided", "irrelevant", "skipped"]
    score: float
    reason: str | None = None
    decisive_precondition: int | None = None
    undecided_preconditions: list[int] = Field(
        default_factory=list, description="Preconditions (0-based) the model left undecided; "
        "a rule can be not violated with some, because another precondition is not met.")
    relevance: float | None = None
    relevance_threshold: float | None = None
    relevance_threshold_source: str | None = None
    preconditions: list[dict[str, Any]] | None = Field(
        None, description="Per-precondition evidence (M, prior, d, thresholds, stage, box, "
        "rationale); present when the request asks for explain (moderations: the "
        "`judge_explain` field or `?explain=true`)."
    )


class JudgeExtension(BaseModel):
    outcome: Literal["safe", "unsafe", "undecided"]
    flagged_reason: str | None = Field(
        None, description="Why the image is flagged: the violated rules, or undecided rules "
        "under fail-closed."
    )
    image_sha256: str
    lock_hash: str
    violated: list[str]
    undecided: list[str]
    partly_undecided: list[str] = Field(
        default_factory=list, description="Rules decided not violated while a precondition "
        "stayed undecided: a 'safe' image with these is safe only by another precondition.")
    rules: list[RuleResult]
    decision_id: str
    timings: dict[str, float] = Field(default_factory=dict)


class ModerationResult(BaseModel):
    flagged: bool
    categories: dict[str, bool]
    category_scores: dict[str, float]
    category_applied_input_types: dict[str, list[Literal["image"]]]
    judge: JudgeExtension


class ModerationResponse(BaseModel):
    id: str
    model: str
    results: list[ModerationResult]


# ---- building results ---------------------------------------------------------------------


def rule_score(rule: Any, fail_closed: bool) -> float:
    """The documented score of one rule verdict (see the module's docstring)."""
    index = rule.decisive_precondition
    if index is not None:
        for pre in rule.preconditions:
            if pre.index == index:
                scores = [a.m for a in pre.alternatives if a.m is not None]
                if scores:
                    return float(min(1.0, max(0.0, max(scores))))
    if rule.outcome == "violated":
        return 1.0
    if rule.outcome == "undecided":
        return 1.0 if fail_closed else 0.0
    return 0.0


def flag(verdict: Any, fail_closed: bool) -> tuple[bool, str | None]:
    """(flagged, why) for one verdict."""
    if verdict.violated:
        return True, "violates " + ", ".join(verdict.violated)
    if verdict.outcome == "undecided" or verdict.undecided:
        names = ", ".join(verdict.undecided) or "some rules"
        reasons = sorted({r.reason for r in verdict.rules if r.outcome == "undecided" and r.reason})
        why = f" ({'; '.join(reasons)[:300]})" if reasons else ""
        if fail_closed:
            return True, f"undecided: {names}{why}; flagged because the service fails closed"
        return False, f"undecided: {names}{why}; not flagged because the service fails open"
    partly = partly_undecided(verdict.rules)
    if partly:
        return False, (f"not violated, with an undecided precondition: {', '.join(partly)}; "
                       "another precondition of each was decided not met")
    return False, None


def rule_results(verdict: Any, fail_closed: bool, explain: bool) -> list[dict[str, Any]]:
    out = []
    for rule in verdict.rules:
        item: dict[str, Any] = {
            "rule_id": rule.rule_id,
            "outcome": rule.outcome,
            "score": rule_score(rule, fail_closed),
            "reason": rule.reason,
            "decisive_precondition": rule.decisive_precondition,
            "undecided_preconditions": list(rule.undecided_preconditions),
            "relevance": rule.relevance,
            "relevance_threshold": rule.relevance_threshold,
            "relevance_threshold_source": rule.relevance_threshold_source,
        }
        if explain:
            item["preconditions"] = [p.model_dump(mode="json") for p in rule.preconditions]
        out.append(item)
    return out


def openai_category(category: str | None) -> str | None:
    """The OpenAI moderation category a rule's `category` names, or None."""
    name = (category or "").strip().lower()
    return name if name in OPENAI_CATEGORIES else None


def moderation_result(
    verdict: Any,
    *,
    fail_closed: bool,
    explain: bool,
    decision_id: str,
    lock_hash: str,
    rule_categories: Mapping[str, str | None] | None = None,
) -> dict[str, Any]:
    """One moderation result for one judged image; `rule_categories` maps rule ids to
    their `category` (the policy's), to fill OpenAI's category keys."""
    flagged, why = flag(verdict, fail_closed)
    rules = rule_results(verdict, fail_closed, explain)
    categories = {
        r["rule_id"]: r["outcome"] == "violated" or (r["outcome"] == "undecided" and fail_closed)
        for r in rules
    }
    scores = {r["rule_id"]: r["score"] for r in rules}
    grouped: dict[str, list[str]] = {}
    for r in rules:
        name = openai_category((rule_categories or {}).get(r["rule_id"]))
        if name is not None:
            grouped.setdefault(name, []).append(r["rule_id"])
    rule_on, rule_score = dict(categories), dict(scores)  # before a category replaces a key
    for name, members in grouped.items():
        categories[name] = any(rule_on[m] for m in members)
        scores[name] = max(rule_score[m] for m in members)
    timings = dict(verdict.run.timings) if verdict.run is not None else {}
    return {
        "flagged": flagged,
        "categories": categories,
        "category_scores": scores,
        "category_applied_input_types": {key: ["image"] for key in categories},
        "judge": {
            "outcome": verdict.outcome,
            "flagged_reason": why,
            "image_sha256": verdict.sha256,
            "lock_hash": lock_hash,
            "violated": list(verdict.violated),
            "undecided": list(verdict.undecided),
            "partly_undecided": partly_undecided(verdict.rules),
            "rules": rules,
            "decision_id": decision_id,
            "timings": timings,
        },
    }


def restrict(verdict: Any, rule_ids: list[str]) -> Any:
    """The verdict narrowed to `rule_ids`, its outcome recomputed from those rules alone
    (unsafe iff one is violated; safe only if every one is decided not violated)."""
    wanted = set(rule_ids)
    rules = [r for r in verdict.rules if r.rule_id in wanted]
    outcome, violated, undecided = image_outcome(rules)
    if verdict.outcome == "error":
        outcome = "error"
    update: dict[str, Any] = {
        "rules": rules, "violated": violated, "undecided": undecided, "outcome": outcome,
        "partly_undecided": partly_undecided(rules),
    }
    if verdict.clip is not None:  # a clip: the frame that decided these rules
        found = deciding_frame(outcome, rules)
        update.update(frame=found[0] if found else None, time=found[1] if found else None)
    return verdict.model_copy(update=update)
