"""Calibration's pure parts: evidence, threshold choice and the relevance threshold."""

from __future__ import annotations

import math

import pytest

from judge.engine.verdict import AlternativeEvidence, PreconditionEvidence, RuleVerdict
from judge.evaluate.calibrate import (
    alternative_evidence,
    candidates,
    choose_threshold,
    relevance_threshold,
    rule_evidence,
)


def alt(d: float | None, prior: float = 0.5) -> AlternativeEvidence:
    return AlternativeEvidence(statement="s", outcome="skipped", stage="skipped", d=d, prior=prior)


def test_evidence_is_d_over_the_room_above_the_prior() -> None:
    assert alternative_evidence(0.3, 0.4) == pytest.approx(0.5)
    assert alternative_evidence(None, 0.4) is None
    assert alternative_evidence(0.0, 1.0) == -math.inf
    rule = RuleVerdict(
        rule_id="r",
        outcome="not_violated",
        preconditions=[
            PreconditionEvidence(index=0, outcome="met", alternatives=[alt(0.1), alt(0.4)]),
            PreconditionEvidence(index=1, outcome="skipped", alternatives=[alt(0.2)]),
        ],
    )
    # AND of ORs: min(max(0.2, 0.8), 0.4)
    assert rule_evidence(rule) == pytest.approx(0.4)
    assert rule_evidence(RuleVerdict(rule_id="r", outcome="irrelevant")) is None


def test_threshold_by_f1_and_by_false_positive_rate() -> None:
    positives = [0.9, 0.7, 0.3]
    negatives = [0.1, 0.2, 0.5, 0.8]
    assert candidates([0.1, 0.3, 0.3]) == [0.0, 0.2, 1.0]
    # Cuts: 0.6 gives TP 2 FP 1 FN 1 (F1 2/3); 0.25 gives TP 3 FP 2 (F1 .75): best.
    assert choose_threshold(positives, negatives, objective="f1") == pytest.approx(0.25)
    # FPR <= 0.25 of 4 negatives means at most 1 false positive: lowest such cut is 0.6.
    assert choose_threshold(
        positives, negatives, objective="fpr", target_fpr=0.25
    ) == pytest.approx(0.6)
    assert choose_threshold(positives, negatives, objective="fpr", target_fpr=0.0) == pytest.approx(
        0.85
    )


def test_relevance_threshold_keeps_the_asked_share() -> None:
    scores = [0.30, 0.25, 0.40, 0.10, 0.35, 0.28, 0.33, 0.31, 0.29, 0.27]
    t = relevance_threshold(scores, 0.9)  # may drop one of ten: the lowest
    assert t is not None and 0.10 < t < 0.25
    assert sum(s > t for s in scores) == 9
    t_all = relevance_threshold(scores, 1.0)
    assert t_all is not None and t_all < 0.10
    assert relevance_threshold([], 0.9) is None
