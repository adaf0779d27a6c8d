"""`judge.policy.relation` and `judge.policy.diff`: the exact relation between two chains
(stricter, looser, equivalent, incomparable) with a counterexample each way, checked
against brute force over every assignment; two policy versions compared rule by rule;
and judging a set with both versions, sharing answers (on the scripted back end)."""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Sequence
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from judge import Judge
from judge.constitution import Constitution
from judge.models.scripted import ScriptedBackend
from judge.policy import diff_on, diff_policies, flips
from judge.policy.relation import (
    countermodel,
    formula,
    implies,
    normalise,
    relation,
    satisfied,
)

Chain = list[list[str]]
S = [f"s{i:02d}" for i in range(20)]  # twenty statements


def check(old: Chain, new: Chain, kind: str) -> None:
    """The relation is `kind`, and each example is an image one version flags and the
    other does not (the statements listed true, every other one false)."""
    found = relation(old, new)
    assert found.kind == kind, found
    f_old, f_new = formula(old), formula(new)
    if kind in ("stricter", "incomparable"):
        assert found.new_only is not None
        true = {normalise(s) for s in found.new_only}
        assert satisfied(f_new, true) and not satisfied(f_old, true)
    else:
        assert found.new_only is None
    if kind in ("looser", "incomparable"):
        assert found.old_only is not None
        true = {normalise(s) for s in found.old_only}
        assert satisfied(f_old, true) and not satisfied(f_new, true)
    else:
        assert found.old_only is None


# ---- the four answers, with twenty statements ---------------------------------------------

# Ten preconditions of two alternatives each: (s00 OR s01) AND ... AND (s18 OR s19).
PAIRS: Chain = [[S[i], S[i + 1]] for i in range(0, 20, 2)]


def test_equivalent_up_to_order_duplicates_case_and_a_subsumed_clause() -> None:
    shuffled = [list(reversed(p)) for p in reversed(PAIRS)]
    shuffled[0] = [s.upper() + "  " for s in shuffled[0]]  # case and spacing
    shuffled.append(PAIRS[3] + [S[0]])  # a weaker clause, implied by (s06 OR s07)
    shuffled.append(PAIRS[5])  # a duplicate precondition
    check(PAIRS, shuffled, "equivalent")


def test_stricter_an_added_alternative_flags_more() -> None:
    new = [list(p) for p in PAIRS]
    new[4] = [*new[4], "a new alternative"]
    check(PAIRS, new, "stricter")
    example = relation(PAIRS, new).new_only
    assert example is not None and "a new alternative" in example
    assert not {S[8], S[9]} & set(example)  # the widened precondition's own ones false


def test_stricter_a_dropped_precondition_flags_more() -> None:
    check(PAIRS, PAIRS[:-1], "stricter")
    example = relation(PAIRS, PAIRS[:-1]).new_only
    assert example is not None and len(example) == 9  # one true statement per precondition


def test_looser_an_added_precondition_flags_less() -> None:
    check(PAIRS, [*PAIRS, ["an extra condition"]], "looser")


def test_looser_a_removed_alternative_flags_less() -> None:
    new = [list(p) for p in PAIRS]
    new[9] = [S[18]]
    check(PAIRS, new, "looser")
    example = relation(PAIRS, new).old_only
    assert example is not None and S[19] in example and S[18] not in example


def test_incomparable_one_alternative_swapped_for_another() -> None:
    new = [list(p) for p in PAIRS]
    new[0] = [S[0], "something else"]
    new[1] = [S[2]]
    check(PAIRS, new, "incomparable")


def test_incomparable_disjoint_chains_of_ten_statements_each() -> None:
    check([[s] for s in S[:10]], [[s] for s in S[10:]], "incomparable")


def test_a_chain_that_always_holds_against_one_that_never_needs_more() -> None:
    # F implies G iff every clause of G contains a clause of F.
    f = formula([[S[0]], [S[1], S[2]]])
    assert implies(f, formula([[S[0], S[5]]]))
    assert not implies(formula([[S[0], S[5]]]), f)
    assert countermodel(f, f) is None


# ---- against brute force --------------------------------------------------------------------

ATOMS = [f"a{i}" for i in range(8)]
clauses = st.lists(st.sampled_from(ATOMS), min_size=1, max_size=4, unique=True)
chains = st.lists(clauses, min_size=1, max_size=5)


def _models(chain: Chain, atoms: Sequence[str]) -> set[frozenset[str]]:
    f = formula(chain)
    out = set()
    for bits in itertools.product((False, True), repeat=len(atoms)):
        true = frozenset(a for a, on in zip(atoms, bits, strict=True) if on)
        if satisfied(f, true):
            out.add(true)
    return out


@settings(max_examples=300, deadline=None)
@given(chains, chains)
def test_the_relation_agrees_with_brute_force(old: Chain, new: Chain) -> None:
    atoms = sorted({a for chain in (old, new) for c in chain for a in c})
    flagged_old, flagged_new = _models(old, atoms), _models(new, atoms)
    expected = {
        (True, True): "equivalent",
        (True, False): "stricter",  # every old model is a new model, not the reverse
        (False, True): "looser",
        (False, False): "incomparable",
    }[(flagged_old <= flagged_new, flagged_new <= flagged_old)]
    check(old, new, expected)


# ---- two policies compared --------------------------------------------------------------------

OLD = """\
name: colours
defaults:
  thresholds: {beta: 0.5}
rules:
  - id: red-and-blue
    text: No red with blue.
    preconditions:
      - a red shape
      - a blue shape
  - id: blue
    text: No blue.
    preconditions:
      - a blue shape
  - id: green
    text: No green.
    preconditions:
      - a green shape
  - id: yellow
    text: No yellow.
    preconditions:
      - a yellow shape
"""

NEW = """\
name: colours
defaults:
  thresholds: {beta: 0.5}
rules:
  - id: red-and-blue
    text: No red with blue.
    preconditions:
      - [a red shape, a green shape]
      - a blue shape
  - id: blue
    text: No blue at all.
    thresholds: {a2_scale: 0.5}
    preconditions:
      - A  Blue shape
  - id: green
    text: No green.
    enabled: false
    preconditions:
      - a green shape
  - id: purple
    text: No purple.
    preconditions:
      - a purple shape
"""


def _policy(folder: Path, text: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "colours.yaml"
    path.write_text(text)
    policy = Constitution.load(path)
    policy.compile(None)
    policy.save_lock()
    return path


def test_diff_names_every_kind_of_change(tmp_path: Path) -> None:
    old, new = _policy(tmp_path / "old", OLD), _policy(tmp_path / "new", NEW)
    d = diff_policies(old, new)
    by_id = {r.rule_id: r for r in d.rules}
    assert d.counts() == {"added": 1, "removed": 1, "changed": 3, "unchanged": 0}
    rab = by_id["red-and-blue"]
    assert rab.changes == ["chain"] and rab.relation is not None
    assert rab.relation.kind == "stricter"
    assert rab.relation.new_only == ["a blue shape", "a green shape"]
    blue = by_id["blue"]
    assert blue.changes == ["text", "chain", "thresholds"]
    assert blue.relation is not None and blue.relation.kind == "equivalent"
    assert blue.note == "the chain changed in case or spacing only"
    assert blue.thresholds == {"a2_scale": [None, 0.5]}
    assert by_id["green"].changes == ["enabled"]
    assert (by_id["purple"].status, by_id["yellow"].status) == ("added", "removed")
    assert d.old_lock_hash is not None and d.new_lock_hash is not None


def test_diff_of_a_policy_with_itself_is_empty() -> None:
    toy = Path(__file__).resolve().parent.parent / "constitutions" / "toy.yaml"
    d = diff_policies(toy, toy)
    assert not d.changed and d.counts()["unchanged"] == 10


def test_without_a_lock_the_chains_come_from_the_source(tmp_path: Path) -> None:
    old = tmp_path / "a" / "colours.yaml"
    old.parent.mkdir()
    old.write_text(OLD.replace("    preconditions:\n      - a yellow shape\n", ""))
    new = _policy(tmp_path / "b", OLD)
    d = diff_policies(old, new)
    yellow = next(r for r in d.rules if r.rule_id == "yellow")
    assert yellow.changes == ["chain"] and yellow.relation is None
    assert yellow.note is not None and "not known" in yellow.note
    assert d.old_lock_hash is None


# ---- judged on a set, answers shared --------------------------------------------------------

COLOURS = {"red": (220, 30, 30), "green": (30, 180, 30), "blue": (30, 30, 220)}
SCENES = {
    "r": {"red"},
    "rb": {"red", "blue"},
    "gb": {"green", "blue"},
    "g": {"green"},
    "b": {"blue"},
    "none": set(),
}
STATEMENTS = ["a red shape", "a blue shape", "a green shape", "a yellow shape", "a purple shape",
              "A  Blue shape"]


def _scenes(folder: Path) -> tuple[list[Path], dict[tuple[str, str | None], float | None]]:
    folder.mkdir()
    answers: dict[tuple[str, str | None], float | None] = {(s, None): 0.5 for s in STATEMENTS}
    paths = []
    for index, (name, colours) in enumerate(SCENES.items()):
        image = Image.new("RGB", (16 + index, 16), (255, 255, 255))
        for i, colour in enumerate(sorted(colours)):
            image.paste(COLOURS[colour], (i * 5, 0, i * 5 + 4, 4))
        path = folder / f"{name}.png"
        image.save(path)
        key = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
        for s in STATEMENTS:
            seen = normalise(s).split()[1] in colours
            answers[(s, key)] = 0.95 if seen else 0.05
        paths.append(path)
    return paths, answers


def test_judging_both_versions_shares_answers_and_lists_the_same_flips(tmp_path: Path) -> None:
    old, new = _policy(tmp_path / "old", OLD), _policy(tmp_path / "new", NEW)
    images, answers = _scenes(tmp_path / "img")
    shared = ScriptedBackend(answers)
    result = diff_on(old, new, images, backend=shared, relevance="off", locator="off",
                     store=tmp_path / "shared.sqlite3")
    # Judged twice apart: two Judges, two back ends, one store (as two runs of `judge`).
    apart = [ScriptedBackend(answers), ScriptedBackend(answers)]
    verdicts = []
    for policy, backend in zip((old, new), apart, strict=True):
        with Judge(policy, backend=backend, relevance="off", locator="off",
                   store=tmp_path / "apart.sqlite3") as judge:
            verdicts.append(judge.judge_many([str(p) for p in images]))
    per_rule, outcomes = flips(*verdicts)
    assert result.rules == per_rule and result.outcomes == outcomes
    sent_apart = sum(len(b.calls) for b in apart)
    assert len(shared.calls) == result.calls.sent < sent_apart
    assert result.calls.asked == sent_apart  # what judging each once sends
    assert result.calls.saved == sent_apart - len(shared.calls) > 0
    # What flips: red-and-blue now flags green with blue; blue is unchanged in effect;
    # green is disabled; yellow removed (never flagged here); purple added (never).
    flipped = {rule: [Path(f.image).stem for f in found] for rule, found in result.rules.items()}
    assert flipped == {"red-and-blue": ["gb"], "blue": [], "green": ["gb", "g"],
                       "yellow": [], "purple": []}
    assert [(Path(f.image).stem, f.old, f.new) for f in result.outcomes] == [
        ("g", "unsafe", "safe")
    ]


def test_a_flip_between_not_violated_and_irrelevant_is_no_flip() -> None:
    from judge.engine.verdict import RuleVerdict, Verdict

    def verdict(outcome: str) -> Verdict:
        return Verdict(image_id="x", outcome="safe",
                       rules=[RuleVerdict(rule_id="r", outcome=outcome)])  # type: ignore[arg-type]

    assert flips([verdict("irrelevant")], [verdict("not_violated")]) == ({"r": []}, [])
    per_rule, _ = flips([verdict("not_violated")], [verdict("undecided")])
    assert [(f.old, f.new) for f in per_rule["r"]] == [("not_violated", "undecided")]


@pytest.mark.parametrize("kind", ["equivalent", "stricter", "looser", "incomparable"])
def test_every_kind_has_its_examples_on_small_chains(kind: str) -> None:
    old: Chain = [["a"], ["b", "c"]]
    new = {
        "equivalent": [["B", "c"], ["a"]],
        "stricter": [["a", "d"], ["b", "c"]],
        "looser": [["a"], ["b"]],
        "incomparable": [["a"], ["b", "d"]],
    }[kind]
    check(old, new, kind)
