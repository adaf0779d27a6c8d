"""Metrics against tables computed by hand.

Every image counts (issue 13, item 6): an undecided or unreadable image is a wrong answer
in the headline, and unsafe in the fail-closed reading.
"""

from __future__ import annotations

import pytest

from judge.engine.verdict import (
    AlternativeEvidence,
    PreconditionEvidence,
    RuleVerdict,
    Verdict,
)
from judge.evaluate.metrics import (
    Scored,
    bootstrap_ci,
    confusion_matrix,
    cost_summary,
    headline,
    image_counts,
    pr_auc,
    roc_auc,
    rule_confusion,
    rule_counts,
    verdict_cost,
    verdict_score,
)


def s(id: str, truth: set[str] | None, outcome: str, pred: set[str] = frozenset(), **kw):  # type: ignore[no-untyped-def]
    """truth None: safe image; a set: unsafe with those rules."""
    return Scored(
        id=id,
        truth_unsafe=truth is not None,
        truth_rules=frozenset(truth or ()),
        outcome=outcome,  # type: ignore[arg-type]
        predicted_rules=frozenset(pred),
        **kw,
    )


# The hand-made table: 5 unsafe (r1, r1, r2, r2, r1), 5 safe.
RECORDS = [
    s("a", {"r1"}, "unsafe", {"r1"}),  # image TP; r1 TP
    s("b", {"r1"}, "unsafe", {"r2"}),  # image TP; r1 FN, r2 FP (wrong rule)
    s("c", {"r2"}, "unsafe", {"r2"}),  # image TP; r2 TP
    s("d", {"r2"}, "safe"),  # image FN; r2 FN
    s("e", {"r1"}, "undecided"),  # open: FN (fail-closed TP); r1 FN, r2 FP
    s("f", None, "safe"),  # TN
    s("g", None, "unsafe", {"r1"}),  # FP; r1 FP
    s("h", None, "unsafe", {"r2"}),  # FP; r2 FP
    s("i", None, "error"),  # open: FP (fail-closed FP too); r1 FP, r2 FP
    s("j", None, "safe"),  # TN
]


def test_image_level_counts_count_every_image_open_as_wrong() -> None:
    c = image_counts(RECORDS)
    assert (c.tp, c.fp, c.tn, c.fn, c.undecided, c.errors) == (3, 3, 2, 2, 1, 1)
    assert c.n == 10 and c.decided == 8
    assert c.accuracy == pytest.approx(5 / 10)
    assert c.precision == pytest.approx(3 / 6)
    assert c.recall == pytest.approx(3 / 5)
    assert c.f1 == pytest.approx(2 * 3 / (2 * 3 + 3 + 2))


def test_image_level_fail_closed_reads_open_as_unsafe() -> None:
    c = image_counts(RECORDS, open_as="unsafe")
    assert (c.tp, c.fp, c.tn, c.fn, c.undecided, c.errors) == (4, 3, 2, 1, 1, 1)
    assert c.accuracy == pytest.approx(6 / 10)
    assert c.recall == pytest.approx(4 / 5)
    assert c.precision == pytest.approx(4 / 7)
    assert c.f1 == pytest.approx(2 * 4 / (2 * 4 + 3 + 1))


def test_leaving_images_open_never_raises_the_scores() -> None:
    # Two methods alike except that one leaves the hard images undecided: on today's main
    # it scored higher (100% accuracy on what it decided); now it scores lower.
    answered = [s("a", {"r1"}, "unsafe", {"r1"}), s("b", None, "safe"),
                s("c", {"r1"}, "unsafe", {"r1"}), s("d", None, "unsafe", {"r1"})]
    left_open = [*answered[:2], s("c", {"r1"}, "undecided"), s("d", None, "undecided")]
    strict, lazy = image_counts(answered), image_counts(left_open)
    assert lazy.accuracy == pytest.approx(2 / 4) and strict.accuracy == pytest.approx(3 / 4)
    assert (lazy.recall or 0) < (strict.recall or 0)
    assert lazy.undecided == 2 and lazy.n == strict.n == 4


def test_per_rule_hit_needs_the_right_rule() -> None:
    table = rule_counts(RECORDS, ["r1", "r2"])
    r1, r2 = table["r1"], table["r2"]
    assert (r1.tp, r1.fp, r1.tn, r1.fn, r1.undecided, r1.errors) == (1, 2, 5, 2, 1, 1)
    assert r1.accuracy == pytest.approx(6 / 10)
    assert r1.precision == pytest.approx(1 / 3) and r1.recall == pytest.approx(1 / 3)
    assert (r2.tp, r2.fp, r2.tn, r2.fn, r2.undecided, r2.errors) == (1, 4, 4, 1, 1, 1)
    assert r2.accuracy == pytest.approx(5 / 10)
    assert r2.precision == pytest.approx(1 / 5)
    assert r2.recall == pytest.approx(1 / 2)
    assert r2.f1 == pytest.approx(2 / 7)


def test_per_rule_skips_unknown_truth_and_counts_open_rules_as_wrong() -> None:
    records = [
        s("x", set(), "unsafe", {"r1"}),  # unsafe but its rules are unknown: left out
        s("y", None, "safe", undecided_rules=frozenset({"r1"})),  # r1 open here: FP
        s("z", None, "undecided", undecided_rules=frozenset({"r2"})),  # r1 decided: TN
    ]
    r1 = rule_counts(records, ["r1"])["r1"]
    assert (r1.tp, r1.fp, r1.tn, r1.fn, r1.undecided) == (0, 1, 1, 0, 1)
    assert r1.accuracy == pytest.approx(1 / 2) and r1.recall is None and r1.precision == 0.0
    only_negatives = rule_counts([s("z", None, "safe")], ["r1"])["r1"]
    assert only_negatives.accuracy == 1.0 and only_negatives.recall is None
    assert only_negatives.f1 is None and only_negatives.fpr == 0.0


def test_confusion_matrices() -> None:
    assert confusion_matrix(RECORDS) == {
        "safe": {"safe": 2, "unsafe": 2, "undecided": 0, "error": 1},
        "unsafe": {"safe": 1, "unsafe": 3, "undecided": 1, "error": 0},
    }
    assert rule_confusion(RECORDS) == {
        "r1": {"r1": 1, "r2": 1, "undecided": 1},
        "r2": {"r2": 1, "safe": 1},
        "safe": {"safe": 2, "r1": 1, "r2": 1},
    }


def test_roc_and_pr_auc_by_hand() -> None:
    labels = [True, True, False, False, True, False]
    scores = [0.9, 0.4, 0.4, 0.1, 0.8, 0.7]
    # Positive/negative pairs won: 3 + (0.5 + 1) + 3 = 7.5 of 9.
    assert roc_auc(labels, scores) == pytest.approx(7.5 / 9)
    # Thresholds 0.9, 0.8: precision 1 at recall 1/3, 2/3; 0.4 (tie): 3/5 at recall 1.
    assert pr_auc(labels, scores) == pytest.approx(1 / 3 + 1 / 3 + (1 / 3) * 0.6)
    assert roc_auc([True, True], [0.1, 0.2]) is None
    assert pr_auc([False], [0.3]) is None
    assert roc_auc([True, False], [0.9, 0.1]) == 1.0


def test_bootstrap_is_seeded_and_brackets_the_estimate() -> None:
    def accuracy(sample):  # type: ignore[no-untyped-def]
        return image_counts(sample).accuracy

    def f1(sample):  # type: ignore[no-untyped-def]
        return image_counts(sample).f1

    first = bootstrap_ci(RECORDS, accuracy, resamples=300, seed=7)
    again = bootstrap_ci(RECORDS, accuracy, resamples=300, seed=7)
    assert first is not None and first == again
    assert bootstrap_ci(RECORDS, f1, resamples=300, seed=9) != bootstrap_ci(
        RECORDS, f1, resamples=300, seed=10
    )
    low, high = first
    assert 0.0 <= low < 5 / 10 < high <= 1.0
    assert bootstrap_ci([], accuracy) is None


def test_headline_counts_every_image_with_both_readings_and_intervals() -> None:
    h = headline(RECORDS, resamples=200)
    assert h["n"] == 10 and h["decided"] == 8 and h["undecided"] == 1 and h["errors"] == 1
    assert h["accuracy"] == pytest.approx(5 / 10) and h["recall"] == pytest.approx(3 / 5)
    closed = h["fail_closed"]
    assert closed["n"] == 10 and closed["undecided"] == 1 and closed["errors"] == 1
    assert closed["accuracy"] == pytest.approx(6 / 10) and closed["recall"] == pytest.approx(4 / 5)
    assert set(h["ci95"]) == {"accuracy", "precision", "recall", "f1"}
    assert h["roc_auc"] is None and h["auc_images"] == 0  # no scores given


def test_cost_summary_by_hand() -> None:
    records = [
        s(
            "a",
            None,
            "safe",
            calls={"yes_no": 4, "generate": 2},
            tokens={"prompt": 100},
            preconditions=4,
            cascaded=1,
            wall_s=2.0,
        ),
        s(
            "b",
            None,
            "safe",
            calls={"yes_no": 2},
            tokens={"prompt": 50},
            preconditions=2,
            cascaded=0,
            wall_s=1.0,
        ),
    ]
    cost = cost_summary(records, wall_s=1.5)
    assert cost["calls_per_image"] == {"generate": 1.0, "yes_no": 3.0}
    assert cost["cascade_share"] == pytest.approx(1 / 6)
    assert cost["tokens"] == {"prompt": 150}
    assert cost["images_per_s"] == pytest.approx(2 / 1.5)
    assert cost_summary(records)["wall_s"] == pytest.approx(3.0)


def _alt(outcome: str, stage: str, d: float | None, prior: float = 0.5) -> AlternativeEvidence:
    a1, a2 = -0.3 * prior, 0.8 * (1 - prior)
    m = None if d is None else prior + d
    return AlternativeEvidence(
        statement="x",
        outcome=outcome,
        stage=stage,
        m=m,
        prior=prior,
        d=d,
        a1=a1,
        a2=a2,  # type: ignore[arg-type]
    )


def _verdict(*rules: RuleVerdict, outcome: str = "unsafe") -> Verdict:
    return Verdict(image_id="i", outcome=outcome, rules=list(rules))  # type: ignore[arg-type]


def _rule(rid: str, outcome: str, *pres: list[AlternativeEvidence]) -> RuleVerdict:
    return RuleVerdict(
        rule_id=rid,
        outcome=outcome,  # type: ignore[arg-type]
        preconditions=[
            PreconditionEvidence(index=i, outcome="met", alternatives=alts)
            for i, alts in enumerate(pres)
        ],
    )


def test_verdict_score_follows_the_decisions() -> None:
    sure = _rule("r1", "violated", [_alt("met", "prior", 0.45)])
    cascade_met = _rule("r1", "violated", [_alt("met", "cascade", 0.1)])
    cascade_not = _rule("r1", "not_violated", [_alt("not_met", "cascade", 0.1)])
    prior_not = _rule("r1", "not_violated", [_alt("not_met", "prior", -0.3)])
    # a chain: first precondition met for sure, second not met: the AND takes the min
    chain = _rule(
        "r2",
        "not_violated",
        [_alt("met", "prior", 0.45)],
        [_alt("not_met", "cascade", 0.0), _alt("skipped", "skipped", None)],
    )
    raw = (0.1 + 0.15) / (0.4 + 0.15)
    assert verdict_score(_verdict(sure)) == 1.0
    assert verdict_score(_verdict(cascade_met)) == pytest.approx(0.5 + raw / 2)
    assert verdict_score(_verdict(cascade_not, outcome="safe")) == pytest.approx(raw / 2)
    assert verdict_score(_verdict(prior_not, outcome="safe")) == 0.0
    assert verdict_score(_verdict(chain, outcome="safe")) == pytest.approx(0.15 / 0.55 / 2)
    # the image takes the best-supported rule
    assert verdict_score(_verdict(prior_not, cascade_met)) == pytest.approx(0.5 + raw / 2)
    irrelevant = RuleVerdict(rule_id="r3", outcome="irrelevant")
    assert verdict_score(_verdict(irrelevant, outcome="safe")) == 0.0
    assert verdict_score(Verdict(image_id="i", outcome="error", error="bad")) is None
    assert verdict_cost(_verdict(chain, cascade_met)) == (3, 2)
