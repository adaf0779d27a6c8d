"""Issue 13, item 2: central object words and boxes per OR alternative.

An alternative may name its own object words (`{text: ..., objects: [...]}` in `any_of`);
the precondition's `objects` stay the words of the alternatives that name none. The
locator runs once per image with every word; each alternative takes the box of its own
words only, so a small box's crop and the masked re-ask apply to the alternatives whose
word produced that box, and the others are asked on the whole image.

The decision tables run over the scripted back end, which raises on any call it was not
told about: asking "the torso is torn open" on the throat's crop fails the test.
"""

from __future__ import annotations

from pathlib import Path

import jsonschema
import pytest
import yaml

from judge.constitution import Constitution
from judge.constitution.loader import parse_spec, source_json_schema
from judge.constitution.lockfile import dump_lock, parse_lock
from judge.constitution.schema import PreconditionSpec
from judge.engine.verdict import Box
from judge.models.scripted import ScriptedBackend
from tests.test_engine_decisions import (
    IMG,
    NO,
    YES,
    FakeLocator,
    make_lock,
    only,
    rule,
    run,
)

# On the 100 x 80 test image (8,000 px, crop_area 1% = 80 px):
THROAT = Box(x0=40, y0=10, x1=47, y1=17, confidence=0.9, label="throat")  # 49 px: cropped
TORSO = Box(x0=20, y0=20, x1=80, y1=75, confidence=0.5, label="torso")  # 3,300 px: whole image
CROP = f"{IMG}#crop:throat"

CUT = "the throat is cut"
TORN = "the torso is torn open"
BLOOD = "blood is pooling on the floor"

FATAL = {
    "any_of": [{"text": CUT, "objects": ["throat"]}, {"text": TORN, "objects": ["torso"]}],
}


def test_small_object_alternative_on_its_crop_large_object_alternative_on_the_image() -> None:
    backend = ScriptedBackend(
        {
            (CUT, CROP): 0.7,  # uncertain on the crop
            (CUT, None): 0.5,
            (CUT, f"{CROP}#mask:throat"): 0.3,  # drop 0.4: not enough
            (TORN, IMG): 0.7,  # uncertain on the whole image
            (TORN, None): 0.5,
            (TORN, f"{IMG}#mask:torso"): 0.05,  # drop 0.65 > beta: met
        }
    )
    locator = FakeLocator({"throat": THROAT, "torso": TORSO})
    verdict = only(run(backend, make_lock(rule("fatal", FATAL)), locator=locator))
    assert verdict.outcome == "violated"
    cut, torn = verdict.preconditions[0].alternatives
    # Each alternative's evidence names its own box.
    assert (cut.box, cut.cropped, cut.outcome) == (THROAT, True, "skipped")
    assert (torn.box, torn.cropped, torn.outcome, torn.stage) == (TORSO, False, "met", "center")
    # The torso was never asked on the throat's crop, nor the throat on the whole image.
    asked = backend.asked()
    assert (TORN, IMG) in asked and (TORN, CROP) not in asked and (CUT, IMG) not in asked
    assert locator.calls == [["throat", "torso"]]  # one pass, every word


def test_alternative_without_words_is_asked_on_the_whole_image_and_never_masked() -> None:
    pre = {"any_of": [{"text": CUT, "objects": ["throat"]}, BLOOD]}
    backend = ScriptedBackend(
        {(CUT, CROP): 0.2, (CUT, None): 0.5, (BLOOD, IMG): 0.7, (BLOOD, None): 0.5},
        cascades={(BLOOD, IMG): ["looking at the floor", YES]},
    )
    verdict = only(run(backend, make_lock(rule("r", pre)), locator=FakeLocator({"throat": THROAT})))
    cut, blood = verdict.preconditions[0].alternatives
    assert verdict.outcome == "violated"
    assert (cut.outcome, cut.box, cut.cropped) == ("not_met", THROAT, True)
    assert (blood.outcome, blood.stage, blood.box, blood.cropped) == ("met", "cascade", None, False)
    assert blood.masked_m is None and blood.beta is None
    assert not any("#mask:" in str(key) for _, key in backend.asked())


def test_precondition_words_are_the_default_of_the_alternatives_that_name_none() -> None:
    pre = {"any_of": [{"text": CUT, "objects": ["throat"]}, TORN], "objects": ["torso"]}
    backend = ScriptedBackend(
        {(CUT, CROP): 0.2, (CUT, None): 0.5, (TORN, IMG): 0.91, (TORN, None): 0.5}
    )
    locator = FakeLocator({"throat": THROAT, "torso": TORSO})
    verdict = only(run(backend, make_lock(rule("r", pre)), locator=locator))
    cut, torn = verdict.preconditions[0].alternatives
    assert verdict.outcome == "violated"
    assert cut.box == THROAT and torn.box == TORSO and not torn.cropped
    assert locator.calls == [["throat", "torso"]]


def test_the_masked_re_ask_only_for_alternatives_with_a_box_then_the_cascade_for_the_rest() -> None:
    pre = {"any_of": [{"text": TORN, "objects": ["torso"]}, BLOOD]}
    backend = ScriptedBackend(
        {
            (TORN, IMG): 0.7,
            (TORN, None): 0.5,
            (TORN, f"{IMG}#mask:torso"): 0.4,  # drop 0.3: still uncertain
            (BLOOD, IMG): 0.7,
            (BLOOD, None): 0.5,
        },
        cascades={(TORN, IMG): ["hmm", NO], (BLOOD, IMG): ["hmm", NO]},
    )
    verdict = only(run(backend, make_lock(rule("r", pre)), locator=FakeLocator({"torso": TORSO})))
    torn, blood = verdict.preconditions[0].alternatives
    assert verdict.outcome == "not_violated"
    assert (torn.masked_m, torn.beta, torn.stage) == (0.4, 0.6, "cascade")
    assert (blood.masked_m, blood.beta, blood.stage) == (None, None, "cascade")
    masked = [c for c in backend.calls_of("yes_no") if "#mask:" in str(c.image_key)]
    assert [(c.statement, c.image_key) for c in masked] == [(TORN, f"{IMG}#mask:torso")]


def test_one_crop_serves_every_alternative_whose_word_found_it() -> None:
    # Two rules, each with an alternative on the throat: one crop, one question each.
    lock = make_lock(
        rule("a", {"any_of": [{"text": CUT, "objects": ["throat"]}, TORN]}),
        rule("b", {"any_of": [{"text": "a knife touches the throat", "objects": ["throat"]}]}),
    )
    backend = ScriptedBackend(
        {
            (CUT, CROP): 0.91,
            (CUT, None): 0.5,
            (TORN, IMG): 0.2,
            (TORN, None): 0.5,
            ("a knife touches the throat", CROP): 0.1,
            ("a knife touches the throat", None): 0.5,
        }
    )
    result = run(backend, lock, locator=FakeLocator({"throat": THROAT}))
    assert [r.outcome for r in result.rules] == ["violated", "not_violated"]
    assert result.calls["first_pass"] == 3 and result.calls["locator"] == 1


# ---- the schema: every current form stays valid; the mapping form round-trips ------------


def test_alternative_words_and_the_default() -> None:
    spec = PreconditionSpec.model_validate(
        {"any_of": [{"text": f" {CUT} ", "objects": ["throat"]}, TORN], "objects": ["torso"]}
    )
    assert spec.any_of == [CUT, TORN]  # readers see the statements
    assert spec.objects_of(CUT) == ["throat"] and spec.objects_of(TORN) == ["torso"]
    assert spec.all_objects() == ["torso", "throat"]
    # A mapping without words is a plain statement; the list shorthand takes mappings too.
    same = PreconditionSpec.model_validate([{"text": TORN}, {"text": CUT, "objects": ["throat"]}])
    assert same.any_of == [TORN, CUT] and same.objects_of(TORN) == []


@pytest.mark.parametrize(
    "written",
    ["people are visible", ["a", "b"], {"statement": "a", "objects": ["x"]},
     {"any_of": ["a"], "objects": ["x"]}],
)
def test_plain_forms_dump_and_hash_as_before(written: object) -> None:
    spec = PreconditionSpec.model_validate(written)
    dumped = spec.model_dump()
    assert all(isinstance(s, str) for s in dumped["any_of"])
    assert set(dumped) == {"any_of", "objects"}


def test_mapping_form_dumps_back_and_equality_sees_the_words() -> None:
    written = {"any_of": [{"text": CUT, "objects": ["throat"]}, TORN], "objects": ["torso"]}
    spec = PreconditionSpec.model_validate(written)
    assert spec.model_dump() == written
    assert PreconditionSpec.model_validate(spec.model_dump(mode="json")) == spec
    assert spec != PreconditionSpec.model_validate({"any_of": [CUT, TORN], "objects": ["torso"]})


@pytest.mark.parametrize(
    ("item", "problem"),
    [
        ({"txt": CUT}, "alternative 1: text: Field required"),
        ({"text": CUT, "objects": "throat"}, "alternative 1: objects: Input should be a valid"),
        ({"text": CUT, "object": ["throat"]}, "alternative 1: object: Extra inputs"),
    ],
)
def test_a_bad_alternative_mapping_is_a_readable_error(item: object, problem: str) -> None:
    text = yaml.safe_dump(
        {"name": "p", "rules": [{"id": "r", "text": "t", "preconditions": [{"any_of": [item]}]}]}
    )
    with pytest.raises(Exception, match=problem) as raised:
        parse_spec(text, file="p.yaml")
    assert "p.yaml" in str(raised.value)


POLICY = f"""\
name: per-alternative
rules:
  - id: fatal-injury
    text: Images must not show injuries that indicate imminent death.
    preconditions:
      - people are visible
      - any_of:
          - text: {CUT}
            objects: [throat]
          - {TORN}
        objects: [torso]
"""


def test_lock_round_trips_alternative_words_and_the_json_schema_accepts_them(
    tmp_path: Path,
) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(POLICY)
    jsonschema.validate(yaml.safe_load(POLICY), source_json_schema())
    policy = Constitution.load(path)
    policy.compile(None)  # hand-written preconditions: no model needed
    policy.save_lock()
    again = Constitution.load(path)  # the lock is fresh: its hash covers the words
    pre = again.lock.rules[0].preconditions[1]
    assert pre.any_of == [CUT, TORN] and pre.objects_of(CUT) == ["throat"]
    assert pre.objects_of(TORN) == ["torso"]
    assert parse_lock(dump_lock(again.lock)) == again.lock
    # Changing an alternative's words makes the lock stale for that rule.
    changed = parse_spec(POLICY.replace("objects: [throat]", "objects: [neck]"))
    assert changed.rules[0].text_sha256() != policy.spec.rules[0].text_sha256()
