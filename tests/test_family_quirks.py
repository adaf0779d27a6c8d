"""The family table (judge.models.family) and the generic fixes it documents: one BOS,
floating inputs in the model's dtype, a missing processor package named with its fix,
compact JSON grammars for vLLM servers, whitespace-padded JSON named as such, and a server
whose engine died on an image ending the run with the reason and the known workaround.

Fast: fake tokenizers and the scriptable server of tests/_servers.py; the real models are
in tests/test_family_engines.py.
"""

from __future__ import annotations

import asyncio
import io
import json
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from judge.engine.cascade import SUMMARY_SCHEMA, parse_rating
from judge.errors import BackendError
from judge.models.base import Message, YesNoQuery
from judge.models.doctor import Check, raise_for
from judge.models.family import (
    FAMILIES,
    GENERIC,
    added_bos,
    cast_floating,
    family_of,
    family_of_folder,
    leading_repeats,
    missing_dependency_hint,
    strip_added_bos,
)
from judge.models.json_grammar import compact_json_grammar, unreadable_json_reason
from judge.models.registry import load_backend
from judge.models.vllm_server import VLLMServerBackend

MODEL_TYPES = (
    "qwen2_5_vl",
    "qwen3_vl",
    "gemma3",
    "llava_onevision",
    "idefics3",
    "smolvlm",
    "internvl",
    "mistral3",
    "llama4",
)

# -- the table -----------------------------------------------------------------------------


@pytest.mark.parametrize("model_type", MODEL_TYPES)
def test_every_supported_model_type_has_its_family(model_type: str) -> None:
    family = family_of(model_type)
    assert family is not GENERIC and model_type in family.model_types


def test_unknown_model_types_get_the_generic_default() -> None:
    assert family_of("some_new_vlm") is GENERIC and family_of(None) is GENERIC
    assert GENERIC.needs == () and GENERIC.limits == () and not GENERIC.bos_in_template


def test_each_model_type_is_in_one_family_only() -> None:
    types = [t for f in FAMILIES for t in f.model_types]
    assert len(types) == len(set(types))


def test_the_recorded_differences() -> None:
    assert family_of("gemma3").system_role == "folded"
    assert family_of("mistral3").system_role == "marker"
    assert {f.name for f in FAMILIES if f.bos_in_template} >= {"Gemma 3", "Mistral 3", "Llama 4"}
    assert family_of("smolvlm").label_space and not family_of("qwen2_5_vl").label_space
    assert family_of("llava_onevision").images == "images_first"
    assert family_of("llama4").pixel_dtype == "bfloat16"


def test_smolvlm_needs_num2words_with_the_install_hint() -> None:
    [need] = family_of("smolvlm").needs
    assert need.hint("SmolVLM") == "SmolVLM needs `num2words`: pip install 'judge[smolvlm]'"


def test_llama4_limit_is_the_vllm_cpu_image_path() -> None:
    llama4 = family_of("llama4")
    [limit] = llama4.limits_for("vllm-server", "cpu")
    assert "Llama4UnfoldConvolution" in limit.reason and "--backend hf" in limit.workaround
    assert llama4.limits_for("vllm-server", "gpu") == []
    assert llama4.limits_for("hf") == []
    assert family_of("gemma3").limits_for("vllm-server") == []


def test_family_of_a_local_folder(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama4"}))
    assert family_of_folder(tmp_path).name == "Llama 4"
    assert family_of_folder(tmp_path / "absent") is GENERIC
    assert family_of_folder("Qwen/Qwen2.5-VL-7B-Instruct") is GENERIC  # a hub id: not read
    assert family_of_folder(None) is GENERIC


# -- one BOS -------------------------------------------------------------------------------


class FakeTokenizer:
    def __init__(self, adds_bos: bool) -> None:
        self.bos_token, self.bos_token_id, self.adds = "<bos>", 2, adds_bos

    def __call__(self, text: str) -> dict[str, list[int]]:
        return {"input_ids": [2, 7] if self.adds else [7]}


def test_a_rendered_bos_is_cut_only_where_the_tokenizer_adds_one() -> None:
    rendered = "<bos><start_of_turn>user\nIs it red?"
    adds = added_bos(FakeTokenizer(adds_bos=True))
    assert adds == "<bos>"
    assert strip_added_bos(rendered, adds) == "<start_of_turn>user\nIs it red?"
    # A tokenizer that adds nothing keeps the template's BOS.
    assert added_bos(FakeTokenizer(adds_bos=False)) is None
    assert strip_added_bos(rendered, None) == rendered
    # A template without BOS is left alone.
    assert strip_added_bos("<|im_start|>user", "<bos>") == "<|im_start|>user"


def test_a_doubled_bos_is_counted() -> None:
    assert leading_repeats([2, 2, 5, 2], 2) == 2
    assert leading_repeats([2, 5], 2) == 1
    assert leading_repeats([5, 2], 2) == 0
    assert leading_repeats([5], None) == 0


# -- pixel dtype ---------------------------------------------------------------------------


def test_floating_inputs_are_cast_to_the_model_dtype() -> None:
    torch = pytest.importorskip("torch")
    inputs = {
        "input_ids": torch.tensor([[1, 2, 3]]),
        "pixel_values": torch.ones(1, 3, 4, 4, dtype=torch.bfloat16),
        "attention_mask": torch.ones(1, 3, dtype=torch.long),
    }
    out = cast_floating(inputs, torch.float32)
    assert out["pixel_values"].dtype == torch.float32
    assert out["input_ids"].dtype == torch.int64 and out["attention_mask"].dtype == torch.long
    assert float(out["pixel_values"].sum()) == 48.0


# -- a missing package ---------------------------------------------------------------------


def test_transformers_missing_package_error_gets_the_family_fix() -> None:
    exc = ImportError(
        "Package `num2words` is required to run SmolVLM processor. "
        "Install it with `pip install num2words`."
    )
    assert missing_dependency_hint(exc, family_of("smolvlm")) == (
        "SmolVLM needs `num2words`: pip install 'judge[smolvlm]'"
    )
    # Known from the table even when the model's family is not (a fine-tune's own type).
    assert "judge[smolvlm]" in missing_dependency_hint(exc, GENERIC)


def test_an_unknown_missing_module_is_named() -> None:
    exc = ModuleNotFoundError("No module named 'einops.layers'", name="einops.layers")
    assert missing_dependency_hint(exc, GENERIC) == (
        "install the missing package: pip install einops"
    )


def test_doctor_keeps_the_fix_of_a_load_failure() -> None:
    found = (
        "cannot load the model 'm': a package it needs is missing (x). "
        "Fix: SmolVLM needs `num2words`: pip install 'judge[smolvlm]'"
    )
    with pytest.raises(BackendError) as info:
        raise_for([Check("load", False, found)])
    assert info.value.exit_code == 3
    assert "Fix: SmolVLM needs `num2words`: pip install 'judge[smolvlm]'" in str(info.value)


# -- JSON without free whitespace ------------------------------------------------------------


def test_the_grammar_takes_json_dumps_spacing_only() -> None:
    testing = pytest.importorskip("xgrammar.testing")
    xgrammar = pytest.importorskip("xgrammar")
    text = compact_json_grammar(SUMMARY_SCHEMA)
    assert text is not None and "root ::=" in text
    grammar = xgrammar.Grammar.from_ebnf(text)
    accept = testing._is_grammar_accept_string
    # json.dumps's spelling, and no other whitespace between tokens.
    assert accept(grammar, '{"rating": "Yes", "rationale": "a red circle"}')
    assert accept(grammar, '{"rating": "No", "rationale": ""}')
    assert not accept(grammar, '{"rating":"Yes","rationale":"x"}')
    assert not accept(grammar, '{\n"rating": "Yes", "rationale": "x"}')
    assert not accept(grammar, '{ "rating": "Yes", "rationale": "x" }')
    assert not accept(grammar, '{"rating":  "Yes", "rationale": "x"}')
    assert not accept(grammar, '{"rating":"Maybe","rationale":"x"}')


def test_whitespace_padded_json_is_named_as_such() -> None:
    padded = "{" + "\n" * 95
    assert parse_rating(padded) is None
    reason = unreadable_json_reason(padded)
    assert "padded with whitespace (95 of 96 characters)" in reason
    assert "disable_any_whitespace" in reason
    cut = '{"rating":"Ye'
    assert parse_rating(cut) is None
    assert unreadable_json_reason(cut).startswith("the JSON answer was cut off before a rating")
    assert unreadable_json_reason("   ") == "the answer was empty"
    assert unreadable_json_reason("I cannot tell").startswith("unparseable summary:")


# -- a vLLM server: the grammar per request ----------------------------------------------------


FAST = {"timeout": 5.0, "retries": 0, "backoff": 0.01, "breaker_threshold": 100}


def _answer(server: Any, handler: Any) -> None:
    """Let `handler(h, method, body)` answer first; it returns True when it did."""
    original = server._handle

    def handle(h: Any, method: str) -> None:
        length = int(h.headers.get("Content-Length") or 0)
        raw = h.rfile.read(length) if length else b""
        body = json.loads(raw) if raw else None
        if handler(h, method, body):
            return
        # The original reads the body again; the connection's own stream comes back
        # after, for the next request on this keep-alive connection.
        stream, h.rfile = h.rfile, io.BytesIO(raw)
        try:
            original(h, method)
        finally:
            h.rfile = stream

    server._handle = handle


def _vllm(server: Any, *, refuse_grammar: bool = False) -> list[dict[str, Any]]:
    """Make the scriptable server answer /version as vLLM 0.32 does; collect chat bodies."""
    bodies: list[dict[str, Any]] = []

    def handler(h: Any, method: str, body: Any) -> bool:
        if h.path == "/version":
            server._send(h, 200, {"version": "0.32.0"})
            return True
        if h.path == "/v1/chat/completions" and body and "max_tokens" in body:
            bodies.append(body)
            if refuse_grammar and "structured_outputs" in body:
                server._error(h, 400, "grammar is not supported")
                return True
        return False

    _answer(server, handler)
    return bodies


def _generate(backend: VLLMServerBackend) -> Any:
    chat = [Message.user("Summarise as JSON.")]

    async def main() -> Any:
        try:
            return await backend.generate([chat], 50, json_schema=SUMMARY_SCHEMA)
        finally:
            await backend.aclose()

    return asyncio.run(main())


def test_a_vllm_server_gets_a_compact_grammar_per_request(misbehaving_server: Any) -> None:
    server = misbehaving_server()
    bodies = _vllm(server)
    backend = load_backend("vllm-server", server=server.url, **FAST)
    [gen] = _generate(backend)
    assert gen.error is None
    [body] = bodies
    assert "response_format" not in body  # vLLM would take it over the grammar
    assert body["structured_outputs"]["grammar"] == compact_json_grammar(SUMMARY_SCHEMA)


def test_a_refused_grammar_falls_back_to_response_format(misbehaving_server: Any) -> None:
    server = misbehaving_server()
    bodies = _vllm(server, refuse_grammar=True)
    backend = load_backend("vllm-server", server=server.url, **FAST)
    [gen] = _generate(backend)
    assert gen.error is None
    assert ["structured_outputs" in b for b in bodies] == [True, False]
    assert bodies[1]["response_format"]["json_schema"]["schema"] == SUMMARY_SCHEMA


def test_a_server_that_is_not_vllm_gets_response_format(misbehaving_server: Any) -> None:
    server = misbehaving_server()  # no /version: 404
    backend = load_backend("vllm-server", server=server.url, **FAST)
    [gen] = _generate(backend)
    body = next(r["body"] for r in server.requests if r["path"] == "/v1/chat/completions")
    assert gen.error is None and "structured_outputs" not in body
    assert body["response_format"]["json_schema"]["schema"] == SUMMARY_SCHEMA


# -- a vLLM server whose engine died ---------------------------------------------------------


def _dead_engine(server: Any, root: Path) -> None:
    """Image requests answer 500 and /health 503, as vLLM does once its engine died; the
    model list names `root` as the served folder."""

    def handler(h: Any, method: str, body: Any) -> bool:
        if h.path == "/health":
            server._send(h, 503, {})
            return True
        if h.path == "/v1/models":
            server._send(
                h, 200, {"object": "list", "data": [{"id": server.model, "root": str(root)}]}
            )
            return True
        if h.path == "/v1/chat/completions" and any(
            isinstance(m.get("content"), list)
            and any(p.get("type") == "image_url" for p in m["content"])
            for m in body["messages"]
        ):
            server._error(h, 500, "EngineCore encountered an issue. See stack trace for the cause.")
            return True
        return False

    _answer(server, handler)


def _llama4_folder(tmp_path: Path) -> Path:
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama4"}))
    return tmp_path


def test_a_dead_engine_ends_the_run_with_the_known_limit(
    misbehaving_server: Any, tmp_path: Path
) -> None:
    server = misbehaving_server()
    _dead_engine(server, _llama4_folder(tmp_path))
    backend = load_backend("vllm-server", server=server.url, **FAST)
    image = Image.new("RGB", (16, 16), "red")

    async def main() -> Any:
        try:
            return await backend.yes_no([YesNoQuery("Look.", f"Q{i}?", image) for i in range(3)])
        finally:
            await backend.aclose()

    with pytest.raises(BackendError) as info:
        asyncio.run(main())
    text = str(info.value)
    assert info.value.exit_code == 3
    assert "engine died on an image request" in text and "/health answers HTTP 503" in text
    assert "Known limit of Llama 4" in text and "--backend hf" in text
    # Once dead, nothing more is sent: the next call fails at once.
    sent = server.count("/v1/chat/completions")
    with pytest.raises(BackendError):
        asyncio.run(main())
    assert server.count("/v1/chat/completions") == sent


def test_a_500_from_a_live_engine_stays_a_failed_query(misbehaving_server: Any) -> None:
    server = misbehaving_server(mode="500")  # /health answers 200
    backend = load_backend("vllm-server", server=server.url, **FAST)

    async def main() -> Any:
        try:
            return await backend.yes_no([YesNoQuery("Look.", "Q?", None)])
        finally:
            await backend.aclose()

    [result] = asyncio.run(main())
    assert result.error is not None and "HTTP 500" in result.error


def test_doctor_names_the_dead_engine_and_the_workaround(
    misbehaving_server: Any, tmp_path: Path
) -> None:
    from judge.models.doctor import diagnose

    server = misbehaving_server()
    _dead_engine(server, _llama4_folder(tmp_path))
    checks = diagnose("vllm-server", server=server.url, **FAST)
    by_name = {c.name: c for c in checks}
    assert by_name["logprobs"].ok and by_name["labels"].ok
    engine = by_name["engine"]
    assert not engine.ok and "vision" not in by_name
    assert "Llama4UnfoldConvolution" in engine.found
    assert "Fix: serve Llama 4 with vLLM on a GPU" in engine.found
    with pytest.raises(BackendError) as info:
        raise_for(checks)
    assert info.value.exit_code == 3 and "engine check failed" in str(info.value)
    assert "--backend hf" in str(info.value)


def test_a_server_that_exits_after_its_engine_died(misbehaving_server: Any) -> None:
    """vLLM's default: the engine dies (HTTP 500), then the server exits; the retry finds
    no server, and that is a dead engine too, not a failed query among others."""
    import socket
    import threading

    server = misbehaving_server()
    gone = threading.Event()

    def handler(h: Any, method: str, body: Any) -> bool:
        if gone.is_set():  # no server any more: every connection is dropped unanswered
            h.connection.shutdown(socket.SHUT_RDWR)
            h.close_connection = True
            return True
        if h.path == "/v1/chat/completions" and "image_url" in json.dumps(body):
            server._error(h, 500, "EngineCore encountered an issue.")
            gone.set()
            threading.Thread(target=server.stop, daemon=True).start()
            return True
        return False

    _answer(server, handler)
    backend = load_backend("vllm-server", server=server.url, **{**FAST, "retries": 1})
    image = Image.new("RGB", (16, 16), "red")

    async def main() -> Any:
        try:
            return await backend.yes_no([YesNoQuery("Look.", "Q?", image)])
        finally:
            await backend.aclose()

    with pytest.raises(BackendError) as info:
        asyncio.run(main())
    text = str(info.value)
    assert "engine died on an image request (HTTP 500: EngineCore encountered an issue.; " in text
    assert "; then connection " in text and "/health answers nothing" in text
