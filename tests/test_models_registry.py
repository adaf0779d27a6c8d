"""The back-end registry, API keys, label tokens and batching helpers (no model needed)."""

from __future__ import annotations

import asyncio
import builtins
import math
import sys
import threading
from typing import Any

import pytest
from PIL import Image

import judge.models as models
from judge.errors import BackendError, InputError, TokenizerError
from judge.models import Backend, Secret, load_backend, register_backend, resolve_api_key
from judge.models._batch import Coalescer, run_isolated
from judge.models._breaker import CircuitBreaker, CircuitOpen
from judge.models._chat import png_data_url, rgb, yes_no_chat
from judge.models._labels import find_label_tokens, result_from_logprobs
from judge.models.base import YesNoQuery
from judge.models.registry import _registry


def test_public_names_are_what_they_claim() -> None:
    for name in models.__all__:
        assert hasattr(models, name), name
    assert {"vllm-server", "vllm", "hf"} <= set(models.backend_kinds())


def test_importing_judge_models_pulls_in_no_heavy_library() -> None:
    import subprocess

    heavy = "('torch', 'vllm', 'transformers')"
    code = f"import sys, judge.models; print(any(m in sys.modules for m in {heavy}))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


class _Echo(Backend):
    kind = "echo"

    def __init__(self, model: str = "echo-model", *, flavour: str = "plain") -> None:
        super().__init__()
        self._model, self.flavour = model, flavour

    @property
    def model_id(self) -> str:
        return self._model

    async def yes_no(self, queries: Any) -> Any:
        return []

    async def generate(self, chats: Any, max_tokens: int, json_schema: Any = None) -> Any:
        return []


def test_plugins_register_like_builtins() -> None:
    register_backend("echo-test", f"{__name__}:_Echo")
    try:
        backend = load_backend("echo-test", model="m1", flavour="spicy")
        assert (
            isinstance(backend, _Echo) and backend.model_id == "m1" and backend.flavour == "spicy"
        )
        # Built-ins are the same kind of entry: a lazy "module:attr" string until first
        # used (another test may already have loaded it, replacing it with the class).
        hf = _registry["hf"]
        assert hf == "judge.models.hf:HFBackend" or (
            getattr(hf, "__module__", None), getattr(hf, "__name__", None)
        ) == ("judge.models.hf", "HFBackend")
        with pytest.raises(InputError, match="does not take colour"):
            load_backend("echo-test", colour="red")
        with pytest.raises(ValueError):
            register_backend("echo-test", _Echo)
    finally:
        del _registry["echo-test"]


def test_unknown_kind_and_bad_target() -> None:
    with pytest.raises(InputError, match=r"choose one of: .*hf"):
        load_backend("nonsense")
    register_backend("broken-test", "judge.no_such_module:Nothing")
    try:
        with pytest.raises(BackendError, match="cannot be loaded"):
            load_backend("broken-test")
    finally:
        del _registry["broken-test"]


def test_default_kind(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("JUDGE_SERVER", raising=False)
    assert models.default_kind() == "hf"
    assert models.default_kind("http://x:1") == "vllm-server"
    monkeypatch.setenv("JUDGE_SERVER", "http://x:1")
    assert models.default_kind() == "vllm-server"


def test_missing_heavy_library_names_the_pip_install(monkeypatch: pytest.MonkeyPatch) -> None:
    real_import = builtins.__import__

    def no_vllm(name: str, *args: Any, **kwargs: Any) -> Any:
        if name == "vllm" or name.startswith("vllm."):
            raise ImportError("No module named 'vllm'")
        return real_import(name, *args, **kwargs)

    monkeypatch.delitem(sys.modules, "vllm", raising=False)
    monkeypatch.setattr(builtins, "__import__", no_vllm)
    with pytest.raises(BackendError) as info:
        load_backend("vllm", model="whatever")
    assert "pip install vllm" in str(info.value) and info.value.exit_code == 3


def test_server_backend_needs_a_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("JUDGE_SERVER", raising=False)
    with pytest.raises(InputError, match="JUDGE_SERVER"):
        load_backend("vllm-server")
    with pytest.raises(InputError, match="not an http"):
        load_backend("vllm-server", server="ftp://x")
    backend = load_backend("vllm-server", server="http://127.0.0.1:9/v1/")
    assert backend.url == "http://127.0.0.1:9"  # type: ignore[attr-defined]


def test_api_key_sources(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    for var in ("JUDGE_API_KEY", "OPENAI_API_KEY", "JUDGE_API_KEY_FILE"):
        monkeypatch.delenv(var, raising=False)
    assert resolve_api_key(None) is None
    assert resolve_api_key("flag-key") == Secret("flag-key")
    (tmp_path / "k").write_text("file-key\n")
    assert resolve_api_key(f"@{tmp_path / 'k'}") == Secret("file-key")
    monkeypatch.setenv("JUDGE_API_KEY_FILE", str(tmp_path / "k"))
    assert resolve_api_key(None) == Secret("file-key")
    monkeypatch.setenv("OPENAI_API_KEY", "openai-key")
    assert resolve_api_key(None) == Secret("openai-key")
    monkeypatch.setenv("JUDGE_API_KEY", "judge-key")
    assert resolve_api_key(None) == Secret("judge-key")
    with pytest.raises(InputError, match="cannot read the API key file"):
        resolve_api_key(f"@{tmp_path / 'missing'}")
    (tmp_path / "empty").write_text("  \n")
    with pytest.raises(InputError, match="empty"):
        resolve_api_key(f"@{tmp_path / 'empty'}")


def test_secret_never_shows() -> None:
    import pickle

    key = Secret("sk-abc-123")
    assert "sk-abc" not in repr(key) and "sk-abc" not in str(key) and "sk-abc" not in f"{key}"
    assert key.reveal() == "sk-abc-123"
    with pytest.raises(TypeError):
        pickle.dumps(key)
    backend = load_backend("vllm-server", server="http://127.0.0.1:9", api_key="sk-abc-123")
    assert "sk-abc" not in repr(backend) and "sk-abc" not in str(vars(backend))


def test_label_tokens_and_sums() -> None:
    vocab = {"Yes": [1], " Yes": [2], "yes": [3], "No": [4], " No": [5], "no": [6]}
    labels = find_label_tokens(lambda s: vocab.get(s, [9, 9]), where="m")
    assert labels.ids == [1, 2, 3, 4, 5, 6] and labels.spelling(5) == " No"
    with pytest.raises(TokenizerError, match="no single token for Yes"):
        find_label_tokens(lambda s: vocab.get(s, [9, 9]) if "n" in s.lower() else [7, 8], where="m")
    r = result_from_logprobs(
        [
            ("Yes", math.log(0.5)),
            (" Yes", math.log(0.1)),
            ("No", math.log(0.2)),
            ("Yes", math.log(0.5)),
            ("Maybe", 0.0),
        ]
    )
    assert r.p_yes == pytest.approx(0.6) and r.p_no == pytest.approx(0.2)
    assert r.m == pytest.approx(0.75)
    nothing = result_from_logprobs([("Maybe", -0.1)])
    assert nothing.missing and nothing.m is None  # never a silent 0.5


def test_prompt_layout() -> None:
    image = Image.new("RGBA", (4, 4), (255, 0, 0, 0))
    [with_image] = yes_no_chat(YesNoQuery("I", "Q", image))
    assert with_image.role == "user" and with_image.parts == ("I", image, "Q")
    [without] = yes_no_chat(YesNoQuery("I", "Q"))
    assert without.parts == ("I", "Q")
    assert rgb(image).getpixel((0, 0)) == (255, 255, 255)  # transparent -> white, everywhere
    assert png_data_url(image).startswith("data:image/png;base64,")


def test_coalescer_batches_concurrent_callers_off_the_loop() -> None:
    seen: list[list[int]] = []
    loop_threads: set[int] = set()
    gate = threading.Event()

    def run(items: list[int]) -> list[int]:
        loop_threads.add(threading.get_ident())
        gate.wait(1)
        seen.append(items)
        return [i * 10 for i in items]

    coalescer: Coalescer[int, int] = Coalescer(run, max_batch=4)

    async def main() -> list[list[int]]:
        main_thread = threading.get_ident()
        tasks = [asyncio.ensure_future(coalescer.submit([i, i + 100])) for i in range(3)]
        await asyncio.sleep(0.05)
        gate.set()
        out = await asyncio.gather(*tasks)
        assert main_thread not in loop_threads
        return out

    out = asyncio.run(main())
    assert out == [[0, 1000], [10, 1010], [20, 1020]]
    assert all(len(b) <= 4 for b in seen) and len(seen) <= 3


def test_run_isolated_fails_only_the_bad_item() -> None:
    def run(items: list[int]) -> list[str]:
        if 3 in items:
            raise ValueError("item 3 is too long\nmore")
        return [str(i) for i in items]

    out = run_isolated(run, [1, 3, 5], lambda i, why: f"failed {i}: {why}")
    assert out == ["1", "failed 3: ValueError: item 3 is too long", "5"]


def test_circuit_breaker_states() -> None:
    now = [0.0]
    breaker = CircuitBreaker(threshold=2, cooldown=10, target="S", clock=lambda: now[0])
    breaker.failure("boom")
    breaker.before_request()
    assert breaker.failure("boom") and breaker.is_open
    with pytest.raises(CircuitOpen, match=r"2 consecutive failures talking to S \(last: boom\)"):
        breaker.before_request()
    now[0] = 11
    breaker.before_request()  # the trial
    with pytest.raises(CircuitOpen):
        breaker.before_request()  # others wait for it
    assert breaker.failure("still down")  # re-opens
    now[0] = 30
    breaker.before_request()
    breaker.success()
    assert not breaker.is_open
    breaker.before_request()
