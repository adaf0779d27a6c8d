"""constitutions/clue.yaml is the paper's policy: the 14 scenarios of CLUE's Table 1, in
our own words, with hand-written chains, and a lock that says no model wrote any of it."""

from __future__ import annotations

import re

from judge.constitution import Constitution
from judge.constitution.lint import lint_file
from judge.resources import data_dir

CLUE = data_dir("constitutions") / "clue.yaml"

# One rule per scenario of the paper's Table 1, in the order.
SCENARIOS = {
    "nudity-genitals-anus-pubic": "genitals, anus or pubic area visible",
    "nudity-buttocks": "buttocks not fully covered by non-transparent clothing",
    "nudity-female-breast": "a woman's breast not fully covered by non-transparent clothing",
    "sexual-lying-on-bed-touching": "two people lying on a bed touching",
    "sexual-shower-or-bath": "a person taking a shower or bath",
    "sexual-kissing-teeth": "kissing with teeth exposed",
    "sexual-spread-legs": "swimwear or underwear, legs spread past 90 degrees",
    "sexual-kneeling-open-mouth": "kneeling with an open mouth",
    "sexual-bent-over": "bending at the waist, buttocks at or above the torso, even clothed",
    "harm-burning-or-charred": "people or animals on fire or charred",
    "harm-internal-organs": "visible internal organs",
    "harm-decay": "partially decayed bodies",
    "harm-fatal-injury": "bloody injuries that indicate imminent death",
    "harm-death-by-weapon-or-explosion": "death by gunfire, explosion or stabbing",
}
# A visibility question cannot confirm that something is missing.
ABSENCE = re.compile(r"\b(no|not|without|nothing|none|never|unless|uncovered)\b", re.I)


def test_exactly_the_fourteen_scenarios_each_with_a_topic_and_a_chain() -> None:
    spec = Constitution.load(CLUE).spec
    assert [r.id for r in spec.rules] == list(SCENARIOS)
    for rule in spec.rules:
        assert rule.topic and len(rule.topic) <= 60, rule.id
        assert rule.preconditions, rule.id
        assert all(p.all_objects() for p in rule.preconditions), rule.id


def test_no_statement_asserts_an_absence_and_lint_is_clean() -> None:
    spec = Constitution.load(CLUE).spec
    for rule in spec.rules:
        for pre in rule.preconditions or []:
            for statement in pre.any_of:
                assert not ABSENCE.search(statement), (rule.id, statement)
    assert lint_file(CLUE) == []


def test_any_of_is_always_a_block_list() -> None:
    text = CLUE.read_text(encoding="utf-8")
    assert not re.search(r"any_of:\s*\[", text)
    assert not re.search(r"preconditions:\s*\[", text)
    assert not re.search(r"^\s*- \[", text, re.MULTILINE)


def test_the_header_says_what_it_is() -> None:
    header = CLUE.read_text(encoding="utf-8").split("\nname:")[0]
    assert "14 safety scenarios of Table 1" in header
    assert "not its benchmark" in header
    assert "written by hand, not extracted by a model" in header


def test_the_lock_is_fresh_and_says_no_model_wrote_it() -> None:
    policy = Constitution.load(CLUE)
    assert policy.lock_status()[0] == "fresh"
    lock = policy.lock
    assert lock.compiler_model == "hand-written" and lock.prompt_versions == {}
    for rule in lock.rules:
        assert rule.objectiveness is None, rule.id  # nobody scored it
        assert rule.produced_by.models() == set(), rule.id
        assert rule.produced_by.preconditions == "hand-written"
        assert rule.produced_by.topic == "hand-written"
    assert lock.rules[-1].topic == "death by gunshot, explosion or stabbing"


def test_the_fatal_injury_alternatives_each_have_their_own_box_words() -> None:
    # Issue 13: a small box of the throat must not stand in for "the torso is torn open".
    rule = next(r for r in Constitution.load(CLUE).lock.rules if r.id == "harm-fatal-injury")
    last = rule.preconditions[-1]
    assert last.objects_of("the throat is cut open") == ["throat"]
    assert last.objects_of("the chest or belly is cut or torn open") == ["torso"]
