"""CLUE's stages 1 and 2 on real engines: `judge compile --model toy` on toy-grammar rules.

The toy VLM is trained on the compiler's own prompts for the toy grammar
(judge/toy/compile_tasks.py), with 20 chains held out of training in every wording. It
must write the right chain, statements and object words for them, through transformers
and through a real vLLM server with structured output. The target is 18 of 20, so the
floor is the target (docs/toy-recipe.md has each seed's figures).

Stage 1 runs for real too: the same held-out chains written vaguely ("a menacing shape"
for a red one) score under the target, are rewritten into the grammar by the loop, and
the rewrite scores 10; rules already in the grammar keep their text after one scoring.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from judge.constitution import Constitution
from judge.toy.compile_check import held_out_rules, held_out_yaml, score_lock
from judge.toy.compile_tasks import VAGUE_SCORE, split, toy_constitution_chains

pytestmark = pytest.mark.slow

EXACT_FLOOR = 18  # of 20: the target (90%)
REWRITE_FLOOR = 16  # of 20 vague held-out rules rewritten exactly and then extracted exactly


def test_held_out_chains_never_appear_in_training() -> None:
    train, held = split()
    assert len(held) == 20
    trained_chains = {r.chain for r in train}
    assert not trained_chains & {r.chain for r in held}
    assert {r.text for r in train}.isdisjoint(r.text for r in held)
    assert toy_constitution_chains() <= trained_chains


def _compile(tmp_path: Path, *args: str, vague: bool = False) -> tuple[int, Any]:
    from judge.cli import main

    source = tmp_path / "held.yaml"
    source.write_text(held_out_yaml(vague))
    with pytest.raises(SystemExit) as done:
        main(["compile", str(source), "--model", "toy", *args])
    return int(done.value.code or 0), Constitution.load(source).lock


def _check(code: int, lock: Any, label: str) -> None:
    score = score_lock(lock)
    print(f"\n{label}: {score.right}/{score.total} exact chains, "
          f"{score.from_model} written by the model")
    for rule_id, got in score.wrong.items():
        print(f"  {rule_id}: {got}")
    # 0: compiled cleanly; 8: compiled, with some rules listed for review.
    assert code in (0, 8)
    assert score.right >= EXACT_FLOOR, score.wrong
    right = {f"held-{i + 1:02d}" for i in range(20)} - set(score.wrong)
    topics = sum(rule.topic == held_out_rules()[int(rule.id[-2:]) - 1].topic
                 for rule in lock.rules)
    print(f"  topics right: {topics}/20")
    for rule in lock.rules:
        if rule.id in right:
            # Scored once, 10, and kept as written: nothing to rewrite in the grammar.
            assert rule.objectiveness is not None
            assert (rule.objectiveness.score, rule.objectiveness.attempts) == (10, 1)
            assert rule.text == rule.source_text and not rule.objectiveness.rewritten


def _check_vague(code: int, lock: Any, label: str) -> None:
    score = score_lock(lock, vague=True)
    print(f"\n{label}, vague rules: {score.rewritten}/20 rewritten exactly, "
          f"{score.right}/20 rewritten and extracted exactly")
    for rule_id, got in score.wrong.items():
        print(f"  {rule_id}: {got}")
    assert code in (0, 8)
    assert score.right >= REWRITE_FLOOR, score.wrong
    for rule in lock.rules:
        if rule.id not in score.wrong:
            # The first score was under the target (else no rewrite), the rewrite's is 10.
            assert rule.objectiveness is not None and rule.objectiveness.rewritten
            assert rule.objectiveness.attempts >= 2 and rule.objectiveness.score == 10
            assert rule.objectiveness.reached


def test_compile_held_out_rules_on_transformers(toy_models: Any, tmp_path: Path) -> None:
    code, lock = _compile(tmp_path)
    assert lock.compiler_model == str(toy_models.vlm)
    _check(code, lock, "transformers")


@pytest.mark.vllm
def test_compile_held_out_rules_on_a_real_vllm_server(vllm_server: Any, tmp_path: Path) -> None:
    code, lock = _compile(tmp_path, "--server", vllm_server.url)
    assert lock.compiler_model == vllm_server.model
    _check(code, lock, "vLLM, structured output")


def test_vague_rules_are_rewritten_on_transformers(toy_models: Any, tmp_path: Path) -> None:
    code, lock = _compile(tmp_path, vague=True)
    _check_vague(code, lock, "transformers")


@pytest.mark.vllm
def test_vague_rules_are_rewritten_on_a_real_vllm_server(vllm_server: Any,
                                                         tmp_path: Path) -> None:
    code, lock = _compile(tmp_path, "--server", vllm_server.url, vague=True)
    _check_vague(code, lock, "vLLM, structured output")


def test_the_vague_score_is_under_the_compile_target() -> None:
    from judge.constitution.compiler import CompileOptions

    assert CompileOptions().target_score > VAGUE_SCORE  # else the loop would not rewrite
