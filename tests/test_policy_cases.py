"""Cases files (judge.policy.cases): the format and its file:line errors, running cases
through a Judge, statuses over repeats, coverage counted by hand, and JUnit XML. The
model is a fake that reads the toy world's colours from the pixels (exact on the bundled
toy images), or the scripted back end; no toy model is loaded."""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from judge import Judge
from judge.constitution import Constitution
from judge.errors import DatasetError
from judge.models.base import Backend, Chat, Generation, YesNoQuery, YesNoResult
from judge.models.scripted import ScriptedBackend
from judge.policy import (
    cases_json_schema,
    coverage_of,
    evaluate_cases,
    junit_xml,
    load_cases,
    run_cases,
)
from judge.toy.world import COLOURS

ROOT = Path(__file__).resolve().parent.parent
TOY = ROOT / "constitutions" / "toy.yaml"
TOY_CASES = ROOT / "constitutions" / "toy.tests.yaml"
MODERATION = ROOT / "constitutions" / "moderation.yaml"
_STATEMENT = re.compile(r"Statement:\s*a (\w+) shape")


def has_colour(image: Image.Image, colour: str) -> bool:
    """Whether the toy colour `colour` covers at least 30 pixels (the toy world jitters
    each colour by up to 18 per channel; 24 of 24 bundled scenes read right)."""
    pixels = np.asarray(image.convert("RGB"), dtype=np.int16)
    distance = np.abs(pixels - np.array(COLOURS[colour], dtype=np.int16)).sum(axis=-1)
    return int((distance < 70).sum()) >= 30


class ToyColours(Backend):
    """Answers "a <colour> shape" from the pixels (M 0.95 or 0.05; 0.5 with no image),
    any other question with 0.9 (so a VLM relevance scan keeps every rule); the
    reasoning stage is never needed. `flip` names a colour it reads wrong in every other
    request about an image (for unstable verdicts)."""

    kind = "toy-colours"

    def __init__(self, model: str | None = None, flip: str | None = None, **_: Any) -> None:
        super().__init__()
        self._model = model or "toy-colours"
        self.flip = flip
        self.requests = 0

    @property
    def model_id(self) -> str:
        return self._model

    async def yes_no(self, queries: Sequence[YesNoQuery]) -> list[YesNoResult]:
        out = []
        self.requests += any(q.image is not None for q in queries)
        for query in queries:
            match = _STATEMENT.search(query.question)
            if query.image is None:
                m = 0.5
            elif match is None:
                m = 0.9
            else:
                seen = has_colour(query.image, match.group(1))
                if self.flip == match.group(1) and self.requests % 2 == 0:
                    seen = not seen
                m = 0.95 if seen else 0.05
            out.append(YesNoResult(p_yes=m, p_no=1.0 - m))
        self.stats.count_yes_no(out)
        return out

    async def generate(
        self, chats: Sequence[Chat], max_tokens: int, json_schema: dict[str, Any] | None = None
    ) -> list[Generation]:
        raise AssertionError("the colour reader never needs the reasoning stage")


def toy_judge(store: Path, backend: Backend | None = None, **kwargs: Any) -> Judge:
    """A Judge of the toy policy over the colour reader: no relevance scan, no locator."""
    return Judge(
        TOY,
        model="toy-colours",  # not "toy": nothing of the toy models is loaded
        backend=backend or ToyColours(),
        relevance="off",
        locator="off",
        store=store,
        **kwargs,
    )


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


# ---- the format ---------------------------------------------------------------------------


def test_the_shipped_toy_cases_load_and_name_real_images() -> None:
    cases = load_cases(TOY_CASES, Constitution.load(TOY))
    assert len(cases.cases) == 23
    assert all(p.is_file() for p in cases.images)
    # The expectations are the manifest's ground truth.
    truth = {
        json.loads(line)["image"].split("/")[-1]: json.loads(line)
        for line in (ROOT / "eval/toy/manifest.jsonl").read_text().splitlines()
    }
    for case, image in zip(cases.cases, cases.images, strict=True):
        row = truth[image.name]
        assert case.expect == row["label"]
        assert set(case.violated) <= set(row["violated"])  # a documented omission at most
        assert not set(case.not_violated) & set(row["violated"])


def test_the_moderation_example_loads_against_its_policy() -> None:
    cases = load_cases(MODERATION.with_name("moderation.tests.yaml"), Constitution.load(MODERATION))
    assert len(cases.cases) >= 3
    assert {c.expect for c in cases.cases} == {"safe", "unsafe"}


@pytest.mark.parametrize(
    ("text", "where", "message"),
    [
        ("cases:\n  - image: a.png\n    expect: unsafe\n    violated: [blue-anywher]\n",
         ":4:16:", "no rule 'blue-anywher'; did you mean 'blue-anywhere'?"),
        ("cases:\n  - image: a.png\n    expect: maybe\n", ":3:13:",
         "must be one of 'safe' or 'unsafe', not 'maybe'"),
        ("cases:\n  - image: a.png\n    expect: safe\n    violate: [blue-anywhere]\n",
         ":4:5:", "unknown key 'violate'"),
        ("cases:\n  - expect: safe\n", ":2:5:", "required key 'image' is missing"),
        ("cases:\n  - image: a.png\n    expect: safe\n    violated: [blue-anywhere]\n",
         ":4:15:", "expects 'safe' but names violated rules"),
        ("cases:\n  - image: a.png\n    expect: unsafe\n    violated: [blue-anywhere]\n"
         "    not_violated: [blue-anywhere]\n", ":5:19:", "both violated and not violated"),
        ("cases:\n  - image: a.png\n    expect: safe\n  - image: a.png\n    expect: unsafe\n",
         ":4:5:", "the name is used by the case at line 2"),
        ("cases: []\n", ":1:8:", "at least 1 item"),
        ("cases:\n  - image: a.png\n    expect: safe\n  expect: x\n", ":4:3:", ""),
        ("- image: a.png\n", ":1:1:", "a mapping with 'cases'"),
    ],
)
def test_bad_cases_files_name_file_line_and_column(
    tmp_path: Path, text: str, where: str, message: str
) -> None:
    path = write(tmp_path / "toy.tests.yaml", text)
    with pytest.raises(DatasetError) as error:
        load_cases(path, Constitution.load(TOY))
    assert f"{path}{where}" in str(error.value)
    assert message in str(error.value)


def test_a_disabled_rule_cannot_be_expected_violated(tmp_path: Path) -> None:
    policy = Constitution.from_yaml(
        "name: p\nrules:\n  - id: a\n    text: t\n    preconditions: [x y]\n"
        "  - id: b\n    text: t\n    enabled: false\n    preconditions: [x y]\n"
    )
    ok = write(tmp_path / "ok.yaml", "cases:\n  - image: i.png\n    expect: safe\n"
               "    not_violated: [b]\n")
    assert load_cases(ok, policy).cases[0].not_violated == ["b"]
    bad = write(tmp_path / "bad.yaml", "cases:\n  - image: i.png\n    expect: unsafe\n"
                "    violated: [b]\n")
    with pytest.raises(DatasetError, match="is disabled in the policy"):
        load_cases(bad, policy)


def test_the_json_schema_describes_the_format() -> None:
    import jsonschema

    schema = cases_json_schema()
    assert schema["title"] == "judge policy cases"
    validator = jsonschema.Draft202012Validator(schema)
    good = {"cases": [{"image": "a.png", "expect": "safe", "not_violated": ["x"]}]}
    assert not list(validator.iter_errors(good))
    assert list(validator.iter_errors({"cases": [{"image": "a.png", "expect": "maybe"}]}))
    assert list(validator.iter_errors({"cases": [{"image": "a", "expect": "safe", "x": 1}]}))


# ---- running ------------------------------------------------------------------------------


def test_the_toy_cases_pass_on_a_model_that_reads_colours_right(tmp_path: Path) -> None:
    with toy_judge(tmp_path / "s.sqlite3") as judge:
        report = run_cases(judge, TOY_CASES)
    assert report.passed, [(c.name, c.reason) for c in report.failures]
    assert report.counts() == {"passed": 23, "failed": 0, "undecided": 0, "error": 0}
    assert report.model_id == "toy-colours" and report.backend == "toy-colours"
    assert report.lock_hash == Constitution.load(TOY).lock.lock_hash()


def test_a_wrong_expectation_fails_that_case_with_the_rule_and_its_evidence(
    tmp_path: Path,
) -> None:
    text = TOY_CASES.read_text().replace("../eval", str(ROOT / "eval"))
    # sample-000013 is a blue shape alone: expect red-and-blue too, wrongly.
    text = text.replace(
        "    violated:\n      - blue-anywhere\n    not_violated:\n      - red-and-blue\n",
        "    violated:\n      - blue-anywhere\n      - red-and-blue\n    not_violated:\n",
        1,
    )
    cases = write(tmp_path / "toy.tests.yaml", text)
    with toy_judge(tmp_path / "s.sqlite3") as judge:
        report = run_cases(judge, cases)
    (failed,) = report.failures
    assert failed.name == "sample-000013 (blue)" and failed.status == "failed"
    (check,) = failed.differences
    assert (check.rule_id, check.expected) == ("red-and-blue", "violated")
    assert check.got == "not_violated"
    assert check.rule is not None and check.rule.decisive_precondition == 0
    assert check.rule.preconditions[0].alternatives[0].statement == "a red shape"
    # The image was unsafe, as expected: only the rule is named.
    assert failed.reason == "red-and-blue not violated (expected violated)"


def test_statuses_undecided_error_and_unstable(tmp_path: Path) -> None:
    images = tmp_path / "img"
    images.mkdir()
    Image.new("RGB", (32, 32), COLOURS["blue"]).save(images / "blue.png")
    (images / "broken.png").write_bytes(b"not an image")
    cases = write(
        tmp_path / "c.yaml",
        "cases:\n"
        "  - {name: blue, image: img/blue.png, expect: unsafe, violated: [blue-anywhere]}\n"
        "  - {name: broken, image: img/broken.png, expect: safe}\n",
    )
    # A model that misses some answers: the blue case stays undecided, not failed.
    missing = ToyColours()
    original = missing.yes_no

    async def holes(queries: Sequence[YesNoQuery]) -> list[YesNoResult]:
        return [YesNoResult.failed("timeout") if q.image is not None else r
                for q, r in zip(queries, await original(queries), strict=True)]

    missing.yes_no = holes  # type: ignore[method-assign]
    with toy_judge(tmp_path / "s.sqlite3", backend=missing) as judge:
        report = run_cases(judge, cases)
    statuses = {c.name: c.status for c in report.cases}
    assert statuses == {"blue": "undecided", "broken": "error"}
    # The same image read right on one run and wrong on the next: unstable, failed.
    with toy_judge(tmp_path / "s.sqlite3", backend=ToyColours(flip="blue")) as judge:
        report = run_cases(judge, cases, repeat=3)
    blue = report.cases[0]
    assert blue.unstable and blue.status == "failed" and len(blue.outcomes) == 3
    assert "unstable over 3 runs" in (blue.reason or "")
    assert "expected unsafe, judged safe; blue-anywhere not violated" in (blue.reason or "")
    with toy_judge(tmp_path / "s.sqlite3") as judge:
        steady = run_cases(judge, cases, repeat=3)
    assert not steady.cases[0].unstable and steady.cases[0].status == "passed"


# ---- coverage -----------------------------------------------------------------------------

SMALL = """\
name: small
rules:
  - id: red-and-blue
    text: no red with blue
    preconditions:
      - a red shape
      - [a blue shape, a green shape]
  - id: yellow
    text: no yellow
    preconditions:
      - a yellow shape
"""


def _small_policy(tmp_path: Path) -> Constitution:
    path = write(tmp_path / "small.yaml", SMALL)
    policy = Constitution.load(path)
    policy.compile(None)
    policy.save_lock()
    return Constitution.load(path)


def test_coverage_matches_a_hand_count(tmp_path: Path) -> None:
    policy = _small_policy(tmp_path)
    # Four images on the scripted back end (M 0.95 met, 0.05 not met, prior 0.5):
    #   A: red, blue  -> red-and-blue violated (pre 1 yes, pre 2 yes: blue yes, green no)
    #   B: red only   -> not violated at pre 2 (pre 1 yes, pre 2 no: blue no, green no)
    #   C: blue only  -> not violated at pre 1; pre 2 not reached
    #   D: nothing    -> not violated at pre 1; pre 2 not reached
    # yellow: never seen yes (no case has yellow): 4 no.
    present = {"A": {"red", "blue"}, "B": {"red"}, "C": {"blue"}, "D": set()}
    answers: dict[tuple[str, str | None], float | None] = {}
    statements = ["a red shape", "a blue shape", "a green shape", "a yellow shape"]
    for s in statements:
        answers[(s, None)] = 0.5
    for name, colours in present.items():
        Image.new("RGB", (8 + len(name), 8), (len(colours) * 40, ord(name), 0)).save(
            tmp_path / f"{name}.png"
        )
    keys = {}
    import hashlib

    for name in present:
        keys[name] = hashlib.sha256((tmp_path / f"{name}.png").read_bytes()).hexdigest()[:16]
    for name, colours in present.items():
        for s in statements:
            answers[(s, keys[name])] = 0.95 if s.split()[1] in colours else 0.05
    cases = write(
        tmp_path / "small.tests.yaml",
        "cases:\n"
        "  - {image: A.png, expect: unsafe, violated: [red-and-blue]}\n"
        "  - {image: B.png, expect: safe}\n"
        "  - {image: C.png, expect: safe}\n"
        "  - {image: D.png, expect: safe}\n",
    )
    backend = ScriptedBackend(answers)
    with Judge(policy, backend=backend, relevance="off", locator="off",
               store=tmp_path / "s.sqlite3") as judge:
        report = run_cases(judge, cases)
    assert report.passed, [(c.name, c.reason) for c in report.failures]
    cov = report.coverage
    rab = cov.rule("red-and-blue")
    assert (rab.counts.yes, rab.counts.no, rab.counts.not_reached) == (1, 3, 0)
    pre1, pre2 = rab.preconditions
    assert (pre1.counts.yes, pre1.counts.no, pre1.counts.not_reached) == (2, 2, 0)
    assert (pre2.counts.yes, pre2.counts.no, pre2.counts.not_reached) == (1, 1, 2)
    blue, green = pre2.alternatives
    assert (blue.counts.yes, blue.counts.no, blue.counts.not_reached) == (1, 1, 2)
    assert (green.counts.yes, green.counts.no, green.counts.not_reached) == (0, 2, 2)
    yellow = cov.rule("yellow")
    assert (yellow.counts.yes, yellow.counts.no) == (0, 4)
    # Alternatives seen both ways: red, blue (green and yellow only No): 2 of 4.
    assert (cov.alternatives_both_ways, cov.alternatives, cov.percent) == (2, 4, 50.0)
    # Least covered first: yellow (0 of 1) before red-and-blue (2 of 3).
    assert [r.rule_id for r in cov.rules] == ["yellow", "red-and-blue"]
    assert cov.never_reached == []


def test_coverage_lists_what_no_case_reached(tmp_path: Path) -> None:
    policy = _small_policy(tmp_path)
    rab = next(r for r in policy.lock.rules if r.id == "red-and-blue")
    from judge.engine.verdict import (
        AlternativeEvidence,
        PreconditionEvidence,
        RuleVerdict,
        Verdict,
    )

    def alt(s: str, outcome: Any) -> AlternativeEvidence:
        return AlternativeEvidence(statement=s, outcome=outcome, stage="prior")

    verdict = Verdict(
        image_id="x",
        outcome="safe",
        rules=[
            RuleVerdict(rule_id="red-and-blue", outcome="not_violated", decisive_precondition=0,
                        preconditions=[
                            PreconditionEvidence(index=0, outcome="not_met",
                                                 alternatives=[alt("a red shape", "not_met")]),
                            PreconditionEvidence(index=1, outcome="skipped", alternatives=[
                                alt("a blue shape", "not_met"), alt("a green shape", "met")]),
                        ]),
            RuleVerdict(rule_id="yellow", outcome="irrelevant"),
        ],
    )
    assert rab.preconditions[1].any_of == ["a blue shape", "a green shape"]
    cov = coverage_of(policy.lock, [verdict])
    # The first-pass answers of a skipped link do not count: the chain stopped before it.
    assert cov.never_reached == ["red-and-blue precondition 2", "yellow"]
    assert cov.rule("red-and-blue").preconditions[1].alternatives[1].counts.yes == 0


# ---- JUnit ---------------------------------------------------------------------------------


def test_junit_xml_has_the_junit_structure(tmp_path: Path) -> None:
    policy = _small_policy(tmp_path)
    cases = write(
        tmp_path / "small.tests.yaml",
        "cases:\n  - {name: 'a & <b>', image: a.png, expect: safe}\n"
        "  - {image: b.png, expect: unsafe, violated: [yellow]}\n"
        "  - {image: c.png, expect: safe}\n",
    )
    loaded = load_cases(cases, policy)
    from judge.engine.verdict import RuleVerdict, Verdict

    def rules(yellow: str) -> list[RuleVerdict]:
        return [RuleVerdict(rule_id="red-and-blue", outcome="not_violated"),
                RuleVerdict(rule_id="yellow", outcome=yellow)]  # type: ignore[arg-type]

    verdicts = [
        Verdict(image_id="a", outcome="safe", rules=rules("not_violated")),
        Verdict(image_id="b", outcome="safe", rules=rules("not_violated")),
        Verdict(image_id="c", outcome="undecided", undecided=["yellow"], rules=rules("undecided")),
    ]
    report = evaluate_cases(loaded, [verdicts], policy.lock, policy="small.yaml")
    assert [c.status for c in report.cases] == ["passed", "failed", "undecided"]
    root = ET.fromstring(junit_xml(report).encode("utf-8"))
    assert root.tag == "testsuites"
    (suite,) = root.findall("testsuite")
    assert suite.get("tests") == "3" and suite.get("failures") == "1" and suite.get("errors") == "1"
    cases_ = suite.findall("testcase")
    assert [c.get("name") for c in cases_] == ["a & <b>", "b.png", "c.png"]
    assert cases_[0].find("failure") is None and cases_[0].find("error") is None
    failure = cases_[1].find("failure")
    assert failure is not None and "yellow" in (failure.get("message") or "")
    assert cases_[2].find("error") is not None
    names = {p.get("name") for p in suite.find("properties") or []}
    assert {"policy", "lock_hash", "model_id", "backend"} <= names
