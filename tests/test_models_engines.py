"""The three back ends on real engines: transformers, vLLM in process, the vLLM server.

All three serve the same tiny Qwen2-VL folder in float32, so they must give the same
P(Yes)/P(No) (within 1e-3) and see the same prompt tokens; the image must change the
answer; a no-image query must carry no image tokens.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from judge import prompts
from judge.bench.server import server_env
from judge.models import Message, YesNoQuery, YesNoResult, load_backend
from judge.models.doctor import diagnose, raise_for
from judge.models.hf import HFBackend
from tests._servers import ServedModel

pytestmark = [pytest.mark.slow, pytest.mark.vllm]

TOLERANCE = 1e-3


def scene(objects: tuple[tuple[str, str, str], ...], seed: int) -> Image.Image:
    from judge.toy import world

    spec = world.SceneSpec(objects=objects, text="", distractors=(0, 0))
    image = world.make_scene(seed, spec).image
    assert image is not None
    return image


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Image.Image, Path]]:
    from judge.toy import world

    a, b = list(world.COLOURS)[:2]
    made = {
        a: scene(((a, world.SHAPES[0], "large"),), seed=1),
        b: scene(((b, world.SHAPES[1], "large"),), seed=2),
    }
    folder = tmp_path_factory.mktemp("images")
    out = {}
    for name, image in made.items():
        path = folder / f"{name}.png"
        image.save(path)
        out[name] = (Image.open(path).convert("RGB"), path)
    return out


def make_queries(
    images: dict[str, tuple[Image.Image, Path]],
) -> list[tuple[YesNoQuery, str | None]]:
    """(query, image path) for every statement x (each image, no image)."""
    instructions = prompts.render("visibility_instructions")
    colours = list(images)
    out: list[tuple[YesNoQuery, str | None]] = []
    for colour in colours:
        question = prompts.render("visibility_question", statement=f"a {colour} shape")
        for name in [*colours, None]:
            image, path = images[name] if name else (None, None)
            out.append((YesNoQuery(instructions, question, image), str(path) if path else None))
    return out


@pytest.fixture(scope="module")
def hf(vllm_server: ServedModel) -> HFBackend:
    backend = load_backend("hf", model=str(vllm_server.model_dir))
    assert isinstance(backend, HFBackend)
    return backend


@pytest.fixture(scope="module")
def server_results(
    vllm_server: ServedModel, images: dict[str, tuple[Image.Image, Path]]
) -> list[YesNoResult]:
    queries = [q for q, _ in make_queries(images)]

    async def main() -> list[YesNoResult]:
        backend = load_backend(
            "vllm-server", server=vllm_server.url, model=vllm_server.model, timeout=300
        )
        try:
            return await backend.yes_no(queries)
        finally:
            await backend.aclose()

    return asyncio.run(main())


def max_delta(a: list[YesNoResult], b: list[YesNoResult]) -> float:
    deltas = []
    for x, y in zip(a, b, strict=True):
        assert x.m is not None and y.m is not None
        deltas += [abs(x.p_yes - y.p_yes), abs(x.p_no - y.p_no), abs(x.m - y.m)]
    return max(deltas)


def test_hf_and_server_agree(
    hf: HFBackend, server_results: list[YesNoResult], images: dict[str, Any]
) -> None:
    queries = [q for q, _ in make_queries(images)]
    local = asyncio.run(hf.yes_no(queries))
    assert all(r.error is None and not r.missing for r in [*local, *server_results])
    delta = max_delta(local, server_results)
    sys.stderr.write(f"\n[agreement] hf vs vllm-server: max |delta| = {delta:.2e}\n")
    assert delta < TOLERANCE
    # The same prompts, token for token in length (the server shows only the count).
    assert [r.prompt_tokens for r in local] == [r.prompt_tokens for r in server_results]


def test_vllm_engine_agrees_with_hf(
    hf: HFBackend, vllm_server: ServedModel, images: dict[str, Any], tmp_path: Path
) -> None:
    pairs = make_queries(images)
    job = {
        "model": str(vllm_server.model_dir),
        "queries": [
            {"instructions": q.instructions, "question": q.question, "image": path}
            for q, path in pairs
        ],
    }
    (tmp_path / "job.json").write_text(json.dumps(job))
    script = Path(__file__).with_name("_vllm_engine_job.py")
    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, str(script), str(tmp_path / "job.json"), str(tmp_path / "out.json")],
        env={**server_env(), "PYTHONPATH": str(Path(__file__).resolve().parents[1])},
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = json.loads((tmp_path / "out.json").read_text())
    engine = [YesNoResult(**r) for r in out["results"]]
    local = asyncio.run(hf.yes_no([q for q, _ in pairs]))
    delta = max_delta(local, engine)
    sys.stderr.write(
        f"\n[agreement] hf vs vllm in-process: max |delta| = {delta:.2e} "
        f"(engine set-up {out['setup_seconds']:.0f} s, run {time.monotonic() - started:.0f} s)\n"
    )
    assert delta < TOLERANCE
    # Token for token: the engine builds exactly the ids transformers builds.
    assert out["token_ids"][0] == hf.prompt_token_ids(pairs[0][0])
    assert out["token_ids"][1] == hf.prompt_token_ids(pairs[1][0])


def test_the_image_changes_the_answer(
    vllm_server: ServedModel, server_results: list[YesNoResult], images: dict[str, Any]
) -> None:
    # Per statement: [image a, image b, no image].
    a, b = list(images)
    by_statement = [server_results[i : i + 3] for i in (0, 3)]
    for with_a, with_b, without in by_statement:
        assert with_a.m is not None and with_b.m is not None and without.m is not None
        assert abs(with_a.m - with_b.m) > 1e-4
        assert abs(with_a.m - without.m) > 1e-4
    if vllm_server.trained:
        # The trained toy model sees colour well: "a <colour> shape" is likelier with it.
        about_a, about_b = by_statement
        assert about_a[0].m > about_a[1].m + 0.1, (a, about_a)  # type: ignore[operator]
        assert about_b[1].m > about_b[0].m + 0.1, (b, about_b)  # type: ignore[operator]


def test_no_image_query_has_no_image_tokens(
    hf: HFBackend, server_results: list[YesNoResult], images: dict[str, Any]
) -> None:
    pairs = make_queries(images)
    with_image, without = pairs[0][0], pairs[2][0]
    assert without.image is None
    ids = hf.prompt_token_ids(without)
    assert hf.image_token_id is not None and hf.image_token_id not in ids
    assert hf.image_token_id in hf.prompt_token_ids(with_image)
    # The server saw the same counts, so it added no image tokens either.
    assert server_results[2].prompt_tokens == len(ids)
    assert server_results[0].prompt_tokens == len(hf.prompt_token_ids(with_image)) > len(ids)


def test_prefix_cache_serves_repeated_prefixes(
    vllm_server: ServedModel, images: dict[str, Any]
) -> None:
    import dataclasses

    # A prefix is cached in whole 128-token CPU blocks: a longer shared text makes sure
    # that these queries share whole blocks beyond the image.
    long = " ".join(["Look at every part of the picture with care."] * 20)
    queries = [dataclasses.replace(q, instructions=long) for q, _ in make_queries(images)][:2]

    async def main() -> list[YesNoResult]:
        backend = load_backend("vllm-server", server=vllm_server.url, timeout=300)
        try:
            await backend.yes_no(queries)
            return await backend.yes_no(queries)
        finally:
            await backend.aclose()

    again = asyncio.run(main())
    # The CPU block is 128 tokens: at least the first full block is reused.
    assert all(r.cached_tokens >= 128 for r in again), again


def test_generation_agrees_and_json_schema_constrains(
    hf: HFBackend, vllm_server: ServedModel, images: dict[str, Any]
) -> None:
    image = next(iter(images.values()))[0]
    chats = [
        [Message.user("Describe", image, "the picture.")],
        [
            Message.user("Is there", image, "a shape?"),
            Message.assistant("Yes."),
            Message.user("Summarise."),
        ],
        [Message.user("Say something.")],
    ]
    schema = {
        "type": "object",
        "properties": {"rating": {"type": "string", "enum": ["Yes", "No"]}},
        "required": ["rating"],
    }

    async def main() -> tuple[Any, Any]:
        backend = load_backend("vllm-server", server=vllm_server.url, timeout=300)
        try:
            plain = await backend.generate(chats, 8)
            constrained = await backend.generate(chats[:1], 40, json_schema=schema)
        finally:
            await backend.aclose()
        return plain, constrained

    plain, constrained = asyncio.run(main())
    local = asyncio.run(hf.generate(chats, 8))
    assert hf.supports_json_schema  # xgrammar, installed with judge[hf]
    local_constrained = asyncio.run(hf.generate(chats[:1], 40, json_schema=schema))
    assert [g.error for g in plain] == [None, None, None]
    assert [g.text for g in plain] == [g.text for g in local]
    assert [g.prompt_tokens for g in plain] == [g.prompt_tokens for g in local]
    # Constrained decoding, on both: the answer is a prefix of JSON for the schema (an
    # untrained model may spend its tokens on the whitespace JSON allows), unlike free text.
    for text in (constrained[0].text, local_constrained[0].text):
        compact = "".join(text.split())
        assert compact == "{" or compact.startswith('{"rating"'), text
    assert not "".join(plain[0].text.split()).startswith("{") or vllm_server.trained


def test_doctor_passes_on_the_real_server(vllm_server: ServedModel) -> None:
    checks = diagnose(server=vllm_server.url, model=vllm_server.model)
    assert {c.name for c in checks} >= {"server", "model", "labels", "logprobs", "vision"}
    assert all(c.ok for c in checks), checks
    raise_for(checks)


def test_doctor_passes_on_transformers(vllm_server: ServedModel) -> None:
    checks = diagnose("hf", model=str(vllm_server.model_dir))
    assert all(c.ok for c in checks), checks
    assert any(c.name == "vision" and "prompt tokens" in c.found for c in checks)
