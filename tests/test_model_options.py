"""One way inside: the model options are one value (judge.models.options.ModelOptions) that
every command hands to the Judges it builds, and `judge bench` treats a registered model
name ("toy" or a plugin's) like any other: no name is special-cased."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from PIL import Image

from judge import queries
from judge.engine.judge import Judge
from judge.errors import InputError
from judge.models.options import ModelOptions
from judge.models.resolve import NamedModels, named_models, register_model_name
from judge.models.scripted import ScriptedBackend
from tests.test_engine_decisions import make_lock, rule

SERVER = "http://127.0.0.1:9/v1"  # never contacted: nothing here opens a back end
RED = {("red", "*"): 0.95, ("red", None): 0.5}


def _writer(folder: Path) -> None:
    """Register "tiny-writer": a plugin's model name with a generation cap of 7 tokens."""
    register_model_name(
        "tiny-writer",
        lambda: NamedModels(vlm=lambda: str(folder), max_new_tokens=7),
        replace=True,
    )


def test_judge_kwargs_open_a_back_end_or_share_one() -> None:
    options = ModelOptions(model="m", backend="vllm-server", server=SERVER, api_key="k",
                           relevance="off", locator="off")
    assert options.judge_kwargs() == {
        "model": "m", "backend": "vllm-server", "server": SERVER, "api_key": "k",
        "relevance": "off", "locator": "off",
    }
    shared = ScriptedBackend(RED)
    # A back end already open replaces backend, server and key; the model still counts
    # (a registered name's relevance scorer and locator).
    assert options.judge_kwargs(backend=shared) == {
        "model": "m", "backend": shared, "relevance": "off", "locator": "off",
    }


def test_a_judge_built_from_the_options_judges() -> None:
    shared = ScriptedBackend(RED)
    options = ModelOptions(relevance="off", locator="off")
    lock = make_lock(rule("no-red", "red"))
    with Judge(lock, **options.judge_kwargs(backend=shared)) as judge:
        verdict = judge.judge(("img", Image.new("RGB", (16, 16), (220, 30, 30))))
    assert verdict.outcome == "unsafe" and verdict.violated == ["no-red"]
    assert judge.backend is shared


def test_the_key_never_shows_in_a_repr() -> None:
    text = repr(ModelOptions(model="m", server=SERVER, api_key="sk-secret-123"))
    assert "sk-secret-123" not in text and "model='m'" in text


def test_resolve_fills_in_the_policys_defaults(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("JUDGE_SERVER", raising=False)
    choice = ModelOptions(server=SERVER).resolve(default_model="toy")
    assert (choice.kind, choice.requested, choice.server) == ("vllm-server", "toy", SERVER)
    assert choice.named is not None  # nothing built: the parts are found when asked for
    own = ModelOptions(model=str(tmp_path)).resolve(default_model="toy", default_backend="hf")
    assert (own.kind, own.model) == ("hf", str(tmp_path))
    # A back end already open keeps its kind; the name still brings its other parts.
    opened = ModelOptions(backend=ScriptedBackend()).resolve(default_model="toy")
    assert opened.kind == "scripted" and opened.named is not None
    with pytest.raises(InputError, match="no judge model"):
        ModelOptions(backend="hf").resolve()


def test_the_toy_cap_is_the_registered_names_not_the_bench_commands() -> None:
    toy = named_models("toy")  # the registration only: nothing is built
    assert toy is not None and toy.max_new_tokens == 32


def test_bench_prefix_questions_come_from_judge_queries(monkeypatch: pytest.MonkeyPatch) -> None:
    from judge.bench import run

    asked: list[tuple[str, str]] = []

    def tokenize(url: str, model: str, instructions: str, question: str, image: Any) -> list[int]:
        asked.append((instructions, question))
        return [1, 2, 3, len(asked) + 10]

    monkeypatch.setattr(run, "tokenize_chat", tokenize)
    assert run.PrefixLength(SERVER, "m")((32, 32)) == 3
    image = Image.new("RGB", (32, 32))
    expected = [queries.visibility_query(s, image) for s in ("a red shape", "written text")]
    assert asked == [(q.instructions, q.question) for q in expected]


def _report(**_: Any) -> dict[str, Any]:
    return {"sequential_s": 2.0, "concurrent_s": 1.0, "sequential_calls": 4,
            "concurrent_calls": 4}


@pytest.mark.parametrize(("model", "cap"), [("tiny-writer", 7), ("org/some-model", None)])
def test_bench_compile_cap_comes_from_the_model_name(
    model: str, cap: int | None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from judge.bench.run import Bench, BenchConfig
    from judge.constitution import compiler

    _writer(tmp_path)
    seen: list[Any] = []

    async def benchmark(backend: Any, n: int, *, concurrency: int, options: Any) -> Any:
        seen.append(options)
        return _report()

    monkeypatch.setattr(compiler, "compile_benchmark_async", benchmark)
    config = BenchConfig(
        constitution=make_lock(rule("no-red", "red")),
        model_options=ModelOptions(model=model, server=SERVER),
        sections=("compile",),
        compile_rules=2,
    )
    bench = Bench(config)
    try:
        asyncio.run(bench._compile(SimpleNamespace(inner=None)))  # type: ignore[arg-type]
    finally:
        bench._tmp.cleanup()
    assert seen[0].max_tokens_score == (cap if cap is not None else 256)
    capped = [n for n in bench.result.notes if "capped" in n]
    assert capped == ([f"compile: answers capped at {cap} tokens"] if cap else [])
    # What the bench asks a server for: a registered name's served name (None: whatever
    # it serves), anything else as given.
    assert bench.served_model == (None if cap else model)
    assert config.server == SERVER


def test_bench_command_starts_a_registered_name_like_any_model(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No server: the command starts one on the name's folder, serves it under the name
    given, and hands the bench the same options it would for a folder."""
    import judge.bench.run as bench_run
    import judge.bench.server as bench_server
    from judge.cli import main

    _writer(tmp_path)
    monkeypatch.delenv("JUDGE_SERVER", raising=False)
    started: list[tuple[Path, str | None]] = []
    configs: list[Any] = []

    @contextlib.contextmanager
    def local(path: Path, served_model_name: str | None = None) -> Iterator[Any]:
        started.append((path, served_model_name))
        yield SimpleNamespace(url="http://127.0.0.1:9999/v1", model=served_model_name)

    def run_bench(config: Any, console: Any = None) -> Any:
        configs.append(config)
        return bench_run.BenchResult()

    monkeypatch.setattr(bench_server, "local_vllm_server", local)
    monkeypatch.setattr(bench_run, "run_bench", run_bench)
    with pytest.raises(SystemExit) as done:
        main(["bench", "--model", "tiny-writer", "--sections", "compile", "--quick"])
    assert done.value.code in (0, None)
    assert started == [(tmp_path, "tiny-writer")]
    (config,) = configs
    assert config.model_options == ModelOptions(
        model="tiny-writer", server="http://127.0.0.1:9999/v1"
    )
    assert config.compile_max_tokens is None  # the bench reads the name's own cap


def test_serve_holds_the_shared_options_and_builds_its_judge_from_them(tmp_path: Path) -> None:
    """`judge serve`'s options are the shared model options plus its own switches, and each
    policy it loads judges through the one back end the service opened."""
    from dataclasses import fields

    from judge.constitution import Constitution
    from judge.serve import ModelOptions as ServeOptions
    from judge.serve.policy import PolicyHolder
    from judge.store import Store

    shared_fields = {f.name for f in fields(ModelOptions)}
    assert issubclass(ServeOptions, ModelOptions)
    assert not shared_fields & set(inspect.get_annotations(ServeOptions))
    path = tmp_path / "policy.yaml"
    path.write_text("name: p\nrules:\n  - id: no-red\n    text: No red.\n"
                    "    preconditions:\n      - red\n")
    policy = Constitution.load(path)
    policy.compile(None)  # hand-written preconditions: no model needed
    policy.save_lock()
    shared = ScriptedBackend(RED)
    options = ServeOptions(relevance="off", locator="off", no_cascade=True)
    with Store(tmp_path / "store.sqlite3") as store:
        active = PolicyHolder(path, options, shared, store).build()
        judge = active.judge
        assert judge.backend is shared and judge.options.cascade is False
        verdict = judge.judge(("img", Image.new("RGB", (16, 16), (220, 30, 30))))
        assert verdict.outcome == "unsafe"
