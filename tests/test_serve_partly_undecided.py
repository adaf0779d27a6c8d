"""The moderation shape says when a "safe" image had a rule with an undecided precondition,
and which relevance threshold (and its source) each rule was judged against."""

from __future__ import annotations

from judge.engine.verdict import RuleVerdict, Verdict
from judge.serve.moderation import moderation_result, restrict


def _verdict() -> Verdict:
    partly = RuleVerdict(rule_id="knife", outcome="not_violated", decisive_precondition=1,
                         undecided_preconditions=[0], relevance=0.3, relevance_threshold=0.22,
                         relevance_threshold_source="judge's default",
                         reason="not violated: precondition 2 not met; undecided: precondition 1")
    clean = RuleVerdict(rule_id="gun", outcome="not_violated", decisive_precondition=0)
    return Verdict(image_id="a", outcome="safe", rules=[partly, clean],
                   partly_undecided=["knife"])


def test_a_safe_image_with_an_undecided_precondition_says_so() -> None:
    result = moderation_result(_verdict(), fail_closed=True, explain=False, decision_id="d",
                               lock_hash="h")
    assert result["flagged"] is False  # logically right: precondition 2 is not met
    extension = result["judge"]
    assert extension["partly_undecided"] == ["knife"]
    assert "undecided precondition: knife" in extension["flagged_reason"]
    [knife, gun] = extension["rules"]
    assert knife["undecided_preconditions"] == [0] and gun["undecided_preconditions"] == []
    assert (knife["relevance_threshold"], knife["relevance_threshold_source"]) == \
        (0.22, "judge's default")


def test_a_rule_subset_recomputes_the_outcome_with_the_engines_rule() -> None:
    only_gun = restrict(_verdict(), ["gun"])
    assert (only_gun.outcome, only_gun.partly_undecided) == ("safe", [])
    nothing = restrict(_verdict(), [])
    assert nothing.outcome == "undecided"  # never "safe" with nothing checked


def test_the_native_summary_counts_safe_images_with_an_undecided_precondition() -> None:
    from types import SimpleNamespace

    from judge.serve.native import native_response

    policy = SimpleNamespace(lock=SimpleNamespace(name="p"), lock_hash="h")
    judged = [SimpleNamespace(verdict=_verdict(), flagged=False),
              SimpleNamespace(verdict=restrict(_verdict(), ["gun"]), flagged=False)]
    summary = native_response("r", policy, judged, explain=False, fail_closed=True)["summary"]
    assert (summary["safe"], summary["safe_with_undecided_precondition"]) == (2, 1)
