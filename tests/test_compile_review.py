"""Issue 12, finding 3: nonsense compiles are not accepted.

A compile whose rules all missed the objectiveness target, with statements such as ':'
and 'image image image', used to exit 0; `judge check` and `compile --check` said OK, and
judging with the lock said "safe". Now such rules *need review*: `judge compile` lists them
and exits 8 (ReviewError), `check` and `compile --check` report them, judging is refused
unless --allow-unreviewed (and the verdicts then name them), and `judge --compile` prints
the same compile report.
"""

from __future__ import annotations

import contextlib
import io
import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from PIL import Image

from judge.constitution.review import review_reasons, text_problems
from judge.constitution.schema import CompiledRule, Objectiveness, PreconditionSpec, Provenance
from judge.errors import ReviewError
from judge.models.base import Backend, Chat, Generation, YesNoQuery, YesNoResult
from judge.models.registry import _registry, register_backend

POLICY = """\
name: demo
rules:
  - id: no-knife
    text: Images must not show a knife.
  - id: no-gun
    text: Images must not show a gun.
"""


class Nonsense(Backend):
    """A compiler model that scores every rule 3, rewrites it to ':' and answers the chain
    [':'] AND ['image image image']; every Yes/No answer is a clear "No"."""

    kind = "nonsense"

    @property
    def model_id(self) -> str:
        return "nonsense/compiler"

    async def yes_no(self, queries: Sequence[YesNoQuery]) -> list[YesNoResult]:
        return [
            YesNoResult(0.5, 0.5) if q.image is None else YesNoResult(0.05, 0.95) for q in queries
        ]

    async def generate(
        self, chats: Sequence[Chat], max_tokens: int, json_schema: dict[str, Any] | None = None
    ) -> list[Generation]:
        fields = (json_schema or {}).get("properties", {})
        if "score" in fields:
            text = json.dumps({"explanation": "it is", "score": 3})
        elif "rule" in fields:
            text = json.dumps({"rule": ":"})
        else:
            chain = [{"any_of": [":"], "objects": []}, {"any_of": ["image image image"]}]
            text = json.dumps({"preconditions": chain})
        return [Generation(text=text) for _ in chats]


@pytest.fixture
def nonsense() -> Iterator[None]:
    saved = dict(_registry)
    register_backend("nonsense", lambda model=None, server=None, api_key=None: Nonsense())
    yield
    _registry.clear()
    _registry.update(saved)


def judge(*args: str) -> SimpleNamespace:
    """`judge ARGS` through the real entry point: its exit code, stdout and stderr."""
    from judge.cli import main

    out, err = io.StringIO(), io.StringIO()
    code = 0
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            main(list(args))
        except SystemExit as done:
            code = int(done.code or 0)
    return SimpleNamespace(code=code, out=out.getvalue(), err=err.getvalue())


@pytest.fixture
def compiled(tmp_path: Path, nonsense: None) -> dict[str, Any]:
    source = tmp_path / "policy.yaml"
    source.write_text(POLICY)
    image = tmp_path / "knife.png"
    Image.new("RGB", (64, 48), (200, 30, 30)).save(image)
    result = judge("compile", str(source), "--backend", "nonsense", "--model", "m")
    return {"source": source, "image": image, "compile": result, "dir": tmp_path}


def test_compile_lists_the_rules_that_need_review_and_exits_8(compiled: dict[str, Any]) -> None:
    result = compiled["compile"]
    assert result.code == ReviewError.exit_code == 8, result.out + result.err
    text = result.out + result.err
    assert "2 rule(s) NEED REVIEW" in text
    assert "objectiveness 3 stayed below the target" in text
    assert "the rewritten rule text has no letters" in text
    assert "precondition 2: 'image image image' repeats 'image' three times" in text
    # The lock is written all the same, and says so at its top.
    lock_text = compiled["source"].with_name("policy.lock.yaml").read_text()
    assert "# NEEDS REVIEW: no-knife, no-gun" in lock_text


def test_check_and_compile_check_report_them(compiled: dict[str, Any]) -> None:
    source = str(compiled["source"])
    check = judge("check", source)
    assert check.code == 8 and "REVIEW" in check.out and "no-knife:" in check.out
    gate = judge("compile", source, "--check")
    assert gate.code == 8 and "need review" in gate.err


def test_judging_with_such_a_lock_is_refused_unless_allowed(compiled: dict[str, Any]) -> None:
    args = [str(compiled["image"]), "-c", str(compiled["source"]), "--backend", "nonsense"]
    args += ["--relevance", "off", "--locator", "off", "--store", str(compiled["dir"] / "s.db")]
    refused = judge(*args)
    assert refused.code == 8 and "--allow-unreviewed" in refused.err
    allowed = judge(*args, "--allow-unreviewed", "--json")
    document = json.loads(allowed.out)
    assert document["verdicts"][0]["needs_review"] == ["no-knife", "no-gun"]
    assert document["summary"]["needs_review"] == ["no-gun", "no-knife"]
    table = judge(*args, "--allow-unreviewed")
    assert "NEED REVIEW: no-gun, no-knife" in " ".join(table.out.split())  # wrapped to 80


def test_judge_compile_prints_the_compile_report(tmp_path: Path, nonsense: None) -> None:
    source = tmp_path / "policy.yaml"
    source.write_text(POLICY)
    image = tmp_path / "knife.png"
    Image.new("RGB", (64, 48), (200, 30, 30)).save(image)
    args = [str(image), "-c", str(source), "--compile", "--model", "m", "--backend", "nonsense"]
    result = judge(*args, "--relevance", "off", "--locator", "off", "--store", str(tmp_path / "s"))
    said = " ".join(result.err.split())  # the report wraps to the terminal's width
    assert f"wrote {tmp_path / 'policy.lock.yaml'}: 2 rules, 2 sent to nonsense/compiler" in said
    assert "2 rule(s) NEED REVIEW" in said
    assert result.code == 8  # and then judging is refused


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        (":", "has no letters"),
        ("image image image", "repeats 'image' three times in a row"),
        ("knife", "is under two words"),
        ("a knife is visible", None),
        ("the person's bare buttocks are visible", None),
    ],
)
def test_statement_sanity(text: str, problem: str | None) -> None:
    assert text_problems(text) == ([problem] if problem else [])


def test_review_reasons() -> None:
    def rule(made: Provenance, *chain: list[str], score: int | None = None) -> CompiledRule:
        return CompiledRule(
            id="r",
            source_text="Images must not show a knife.",
            text="Images must not show a knife.",
            text_sha256="0",
            objectiveness=None if score is None else Objectiveness(score=score, reached=score >= 9),
            produced_by=made,
            preconditions=[PreconditionSpec(any_of=alts) for alts in chain],
        )

    model = Provenance(text="hand-written", objectiveness="m", preconditions="m")
    assert review_reasons(rule(model, ["a knife is visible"], score=10)) == []
    duplicate = review_reasons(rule(model, ["a knife is visible", "a knife is  visible"], score=9))
    assert duplicate == ["precondition 1: 'a knife is  visible' is a duplicate alternative"]
    own = review_reasons(rule(model, ["Images must not show a knife."], score=9))
    assert own == [
        "precondition 1: 'Images must not show a knife.' is the rule's own text, not a precondition"
    ]
    fallback = Provenance(objectiveness="m", preconditions="fallback")
    assert (
        "fell back" in review_reasons(rule(fallback, ["Images must not show a knife."], score=9))[0]
    )
    unscored = Provenance(objectiveness="fallback", preconditions="hand-written")
    assert review_reasons(rule(unscored, ["a knife is visible"])) == [
        "the model's objectiveness score could not be read"
    ]
    # A hand-written chain is the author's own: nothing to review without a model.
    assert review_reasons(rule(Provenance(), ["knife"])) == []
