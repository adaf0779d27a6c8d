"""`judge compile` end to end against the tiny model on a real vLLM server, the compile
benchmark (concurrent against one at a time), and a misbehaving server."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from typing import Any

import pytest
from typer.testing import CliRunner

import judge.commands.constitution  # noqa: F401  (registers the commands)
from judge.bench.probes import RecordingBackend
from judge.commands.app import app
from judge.constitution import CompileOptions, Constitution
from judge.constitution.compiler import compile_benchmark_async
from judge.errors import BackendError, ReviewError
from judge.models.base import Backend, Chat, Generation
from judge.toy.compile_check import in_grammar

runner = CliRunner()

POLICY = """\
name: served
rules:
  - id: knives
    text: Images must not show a knife blade longer than 10 cm.
  - id: gore
    text: Images must not show gory or disturbing injuries.
  - id: guns
    text: Images must not show a gun.
    preconditions: [a gun is visible]
  - id: shapes
    text: Images must not show a yellow shape together with a red or a blue shape.
"""

# The benchmark measures how well requests overlap, not answer quality: short answers.
TINY = CompileOptions(max_tokens_score=32, max_tokens_rewrite=32, max_tokens_preconditions=32)


@pytest.mark.slow
@pytest.mark.vllm
def test_judge_compile_against_real_vllm_survives_nonsense(vllm_server, tmp_path):
    path = tmp_path / "served.yaml"
    path.write_text(POLICY)
    result = runner.invoke(
        app,
        [
            "compile",
            str(path),
            "--server",
            vllm_server.url,
            "--model",
            vllm_server.model,
            "--concurrency",
            "4",
        ],
    )
    # The toy VLM knows only its own grammar: for the other rules it answers nonsense, the
    # lock is written, and those rules need review.
    review = isinstance(result.exception, ReviewError)
    assert result.exit_code == 0 or review, (
        f"{result.output}\n{result.exception!r}\n{vllm_server.log_tail()}"
    )
    assert "wrote" in result.output
    lock = Constitution.load(path).lock
    assert lock.compiler_model == vllm_server.model
    for rule in lock.rules:
        assert rule.preconditions and all(p.any_of for p in rule.preconditions)
        assert rule.extraction in ("llm", "fallback", "hand-written")
        if rule.extraction == "fallback":
            assert f"{rule.id}: " in result.output and "FALLBACK" in result.output
            assert "NEED REVIEW" in result.output
    assert lock.rules[2].extraction == "hand-written"
    # A rule of the toy grammar, which the toy VLM learnt to compile: the model writes its
    # chain in the grammar's statements (exact chains: tests/test_toy_compile.py).
    shapes = lock.rules[3]
    assert shapes.extraction == "llm" and shapes.objectiveness.score >= 9
    print("shapes:", [list(p.any_of) for p in shapes.preconditions])
    assert all(in_grammar(a) for p in shapes.preconditions for a in p.any_of)
    check = runner.invoke(app, ["compile", str(path), "--check"])
    assert (check.exit_code == 0) is (not review), check.output


class InFlight(RecordingBackend):
    """Records, for each `generate` call in the order they start, how many were open."""

    def __init__(self, inner: Backend) -> None:
        super().__init__(inner)
        self.open = 0
        self.levels: list[int] = []

    async def generate(
        self, chats: Sequence[Chat], max_tokens: int, json_schema: dict[str, Any] | None = None
    ) -> list[Generation]:
        self.open += 1
        self.levels.append(self.open)
        try:
            return await self.inner.generate(chats, max_tokens, json_schema)
        finally:
            self.open -= 1


async def _benchmark(url: str, model: str, n_rules: int) -> tuple[dict[str, Any], list[int]]:
    from judge.models.registry import load_backend

    backend = InFlight(load_backend("vllm-server", model=model, server=url))
    try:
        result = await compile_benchmark_async(backend, n_rules, concurrency=8, options=TINY)
    finally:
        await backend.aclose()
    return result, backend.levels


@pytest.mark.slow
@pytest.mark.vllm
def test_compile_benchmark_sends_requests_concurrently(vllm_server, tmp_path):
    """The batched compile sends its requests to the server at the same time, the
    sequential one one by one, for the same work. How much faster that is depends on the
    machine: `judge bench` measures it (its compile row), no test compares the times."""
    import asyncio

    n_rules = int(os.environ.get("JUDGE_COMPILE_BENCH_RULES", "8"))
    result, levels = asyncio.run(_benchmark(vllm_server.url, vllm_server.model, n_rules))
    print("\ncompile benchmark:", json.dumps(result))
    (tmp_path / "compile_benchmark.json").write_text(json.dumps(result))
    seq, conc = result["sequential_calls"], result["concurrent_calls"]
    assert seq >= 2 * n_rules and conc >= 2 * n_rules  # a score and a chain per rule
    assert len(levels) == 1 + seq + conc  # the warm-up, then the two runs in order
    sequential, concurrent = levels[1 : 1 + seq], levels[1 + seq :]
    assert max(sequential) == 1
    # Up to 8 rules at once, each with one request open: every rule's first call starts
    # before any of them is answered.
    assert max(concurrent) == min(8, n_rules), concurrent
    # What it reports is what ran: the rules, the bound and the model asked for, both runs
    # timed, and the speed-up their ratio (its size is the machine's, never asserted).
    assert (result["n_rules"], result["concurrency"]) == (n_rules, 8)
    assert result["model"] == vllm_server.model
    assert result["sequential_s"] > 0 and result["concurrent_s"] > 0
    assert result["speedup"] == round(result["sequential_s"] / result["concurrent_s"], 2)
    for run_ in ("sequential", "concurrent"):
        assert 0 <= result[f"{run_}_fallbacks"] <= n_rules


def test_compile_through_a_server_answering_nonsense_falls_back(misbehaving_server, tmp_path):
    server = misbehaving_server(mode="ok", text="Yes Yes <|im_end|> blue")
    path = tmp_path / "p.yaml"
    path.write_text(POLICY)
    result = runner.invoke(
        app, ["compile", str(path), "--server", server.url, "--model", server.model]
    )
    # Written, but every rule needs review: nothing the model said could be used.
    assert isinstance(result.exception, ReviewError), f"{result.output}\n{result.exception!r}"
    lock = Constitution.load(path).lock
    assert [r.extraction for r in lock.rules] == [
        "fallback", "fallback", "hand-written", "fallback"]
    assert "4 rule(s) NEED REVIEW" in result.output
    said = " ".join(result.output.split())  # the report wraps to the terminal's width
    assert "knives: the model's objectiveness score could not be read; precondition " in said
    assert all(r.objectiveness is None for r in lock.rules)
    assert all(r.produced_by.objectiveness == "fallback" for r in lock.rules)


def test_compile_through_a_failing_server_is_a_backend_error(misbehaving_server, tmp_path):
    server = misbehaving_server(mode="500")
    path = tmp_path / "p.yaml"
    path.write_text(POLICY)
    result = runner.invoke(
        app, ["compile", str(path), "--server", server.url, "--model", server.model]
    )
    assert isinstance(result.exception, BackendError), result.output
    assert not (tmp_path / "p.lock.yaml").exists()
