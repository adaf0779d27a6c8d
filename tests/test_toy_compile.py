"""CLUE's stages 1 and 2 on real engines: `judge compile --model toy` on toy-grammar rules.

The toy VLM is trained on the compiler's own prompts for the toy grammar
(judge/toy/compile_tasks.py), with 20 chains held out of training in every wording. It
must write the right chain, statements and object words for them, through transformers
and through a real vLLM server with structured output. The issue's target is 18 of 20;
the recipe reaches 20 / 20 / 19 on seeds 0 / 1 / 2 (transformers; seed 0 also 20 through
vLLM), so the floor is the target (docs/toy-recipe.md).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from judge.constitution import Constitution
from judge.toy.compile_check import held_out_rules, held_out_yaml, score_lock
from judge.toy.compile_tasks import split, toy_constitution_chains

pytestmark = pytest.mark.slow

EXACT_FLOOR = 18  # of 20: the target (90%)


def test_held_out_chains_never_appear_in_training() -> None:
    train, held = split()
    assert len(held) == 20
    trained_chains = {r.chain for r in train}
    assert not trained_chains & {r.chain for r in held}
    assert {r.text for r in train}.isdisjoint(r.text for r in held)
    assert toy_constitution_chains() <= trained_chains


def _compile(tmp_path: Path, *args: str) -> tuple[int, Any]:
    from judge.cli import main

    source = tmp_path / "held.yaml"
    source.write_text(held_out_yaml())
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
            assert rule.objectiveness is not None and rule.objectiveness.score >= 9


def test_compile_held_out_rules_on_transformers(toy_models: Any, tmp_path: Path) -> None:
    code, lock = _compile(tmp_path)
    assert lock.compiler_model == str(toy_models.vlm)
    _check(code, lock, "transformers")


@pytest.mark.vllm
def test_compile_held_out_rules_on_a_real_vllm_server(vllm_server: Any, tmp_path: Path) -> None:
    code, lock = _compile(tmp_path, "--server", vllm_server.url)
    assert lock.compiler_model == vllm_server.model
    _check(code, lock, "vLLM, structured output")
