"""`judge compile` against real tiny models: transformers in process here (and the real
vLLM server in test_constitution_vllm.py). An untrained tiny VLM answers nonsense, so
these prove the whole path runs and degrades to flagged fallbacks, never a crash."""

from __future__ import annotations

import pytest

from judge.constitution import CompileOptions, Constitution

pytestmark = pytest.mark.slow

# Short answers keep the CPU time small; nonsense is nonsense at any length.
SHORT = CompileOptions(
    max_tokens_score=16,
    max_tokens_rewrite=16,
    max_tokens_preconditions=16,
    parse_retries=1,
    max_rewrites=1,
)

POLICY = """\
name: tiny
rules:
  - id: knives
    text: Images must not show a knife blade longer than 10 cm.
  - id: guns
    text: Images must not show a gun.
    preconditions: [a gun is visible]
"""


@pytest.fixture(scope="module")
def tiny_vlm(tmp_path_factory):
    from judge.toy.arch import build_vlm

    return build_vlm(tmp_path_factory.mktemp("tiny") / "vlm", seed=0)


def test_compile_with_transformers_survives_nonsense(tiny_vlm, tmp_path):
    from judge.models.hf import HFBackend

    backend = HFBackend(model=str(tiny_vlm))
    path = tmp_path / "tiny.yaml"
    path.write_text(POLICY)
    policy = Constitution.load(path)
    lock = policy.compile(backend, options=SHORT)
    policy.save_lock()
    report = policy.last_report
    assert report is not None
    assert report.model_calls == backend.stats.generations > 0
    knives, guns = lock.rules
    # Whatever the tiny model said, every rule has a usable chain and a recorded outcome.
    assert knives.extraction in ("llm", "fallback") and knives.preconditions
    assert guns.extraction == "hand-written" and guns.preconditions[0].any_of == [
        "a gun is visible"
    ]
    if knives.extraction == "fallback":
        assert report.fallbacks == ["knives"]
        assert knives.preconditions[0].any_of == [knives.text]
    assert lock.compiler_model == str(tiny_vlm)
    assert Constitution.load(path).lock == lock
