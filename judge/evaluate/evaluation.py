"""`judge eval` as a function: run the method, its ablations and the baselines on a
labelled set, resumably, and write report.json, report.md and report.html."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from judge.constitution.schema import Lock
from judge.engine.judge import Judge, ThresholdsInput
from judge.evaluate.ablations import FULL, JudgeMethod, method_options
from judge.evaluate.baselines import Baseline, Judged
from judge.evaluate.datasets import Example, LabelledSet
from judge.evaluate.report import EvalProgress, MethodResult, build_report, write_json
from judge.evaluate.report_html import write_html
from judge.evaluate.report_md import write_markdown
from judge.evaluate.runs import EvalStore, Method, run_key, run_log, run_method, to_scored
from judge.models.base import Backend
from judge.models.options import ModelOptions
from judge.store import Store


@dataclass
class EvalSpec:
    """Everything `judge eval` was asked to do."""

    dataset: LabelledSet  # already narrowed to the split and limit
    lock: Lock
    constitution_name: str
    # The model, back end, server, key, relevance scorer and locator, as for `judge`.
    model_options: ModelOptions = field(default_factory=ModelOptions)
    # Several models to compare, each in place of `model_options.model`; empty: that one.
    models: Sequence[str | None] = ()
    thresholds: ThresholdsInput = None
    fill: str = "mean"  # region removal of the method and its ablations (not "fill-*")
    ablations: Sequence[str] = ()
    baselines: Sequence[str] = ()
    split: str | None = None
    fresh: bool = False
    concurrency: int = 8
    resamples: int = 1000
    seed: int = 0
    progress: bool = True
    extra_options: dict[str, Any] = field(default_factory=dict)


def dataset_info(spec: EvalSpec) -> dict[str, Any]:
    data = spec.dataset
    return {
        "name": data.name,
        "format": data.format,
        "sha256": data.sha256,
        "split": spec.split,
        "images": len(data),
        "unsafe": sum(e.unsafe for e in data),
    }


async def run_evaluation(spec: EvalSpec, store: Store) -> dict[str, Any]:
    """Run everything (resuming what is stored) and return report.json's content."""
    evals = EvalStore(store)
    examples = list(spec.dataset)
    results: list[MethodResult] = []
    with EvalProgress(enabled=spec.progress) as progress:
        for model in spec.models or [spec.model_options.model]:
            results += await _run_model(spec, model, evals, store, examples, progress)
    by_id = {e.id: e for e in examples}
    return build_report(
        dataset=dataset_info(spec),
        constitution={"name": spec.constitution_name, "lock_hash": spec.lock.lock_hash(),
                      "rules": [r.id for r in spec.lock.enabled_rules()]},
        results=results,
        examples=by_id,
        rule_ids=[r.id for r in spec.lock.enabled_rules()],
        resamples=spec.resamples,
        seed=spec.seed,
    )


async def _run_model(
    spec: EvalSpec,
    model: str | None,
    evals: EvalStore,
    store: Store,
    examples: list[Example],
    progress: EvalProgress,
) -> list[MethodResult]:
    models = replace(spec.model_options, model=model)
    first = Judge(
        spec.lock, **models.judge_kwargs(), thresholds=spec.thresholds,
        options=method_options(FULL, spec.fill), store=store,
    )
    judges = [first]
    try:
        backend = first.backend
        label = model or backend.model_id
        methods: list[Method] = [JudgeMethod(FULL, first)]
        for name in spec.ablations:
            judge = Judge(
                spec.lock, **models.judge_kwargs(backend=backend), thresholds=spec.thresholds,
                options=method_options(name, spec.fill), store=store,
            )
            judges.append(judge)
            methods.append(JudgeMethod(name, judge))
        methods += [Baseline(name, backend, spec.lock) for name in spec.baselines]
        out = []
        for method in methods:
            out.append(await _run_one(spec, method, label, backend, evals, examples, progress))
        return out
    finally:
        for judge in reversed(judges):  # the first owns the back end: close it last
            await judge.aclose()


async def _run_one(
    spec: EvalSpec,
    method: Method,
    label: str,
    backend: Backend,
    evals: EvalStore,
    examples: list[Example],
    progress: EvalProgress,
) -> MethodResult:
    models = spec.model_options
    log = run_log(
        method=method, model=backend.model_id, backend=backend.kind, server=models.server,
        lock_hash=spec.lock.lock_hash(), dataset=dataset_info(spec),
        options={"relevance": models.relevance, "locator": models.locator,
                 **spec.extra_options},
    )
    log["model_label"] = label
    key = run_key(log)
    evals.open_run(key, log, fresh=spec.fresh)
    by_id = {e.id: e for e in examples}
    wanted = set(by_id)
    stored = [r for r in evals.results(key) if r.example_id in wanted]
    task = progress.start(f"{method.name} · {label}", len(examples),
                          [to_scored(by_id[r.example_id], r) for r in stored])

    def on_result(example: Example, judged: Judged) -> None:
        from judge.evaluate.runs import StoredResult

        row = StoredResult(example.id, judged.verdict, judged.score, 0.0, judged.rationale, "")
        progress.advance(task, to_scored(example, row))

    await run_method(method, examples, evals, key, concurrency=spec.concurrency,
                     stats=backend.stats.snapshot, on_result=on_result)
    stored = [r for r in evals.results(key) if r.example_id in wanted]
    return MethodResult(
        method=method.name,
        kind=method.kind,
        model=label,
        records=[to_scored(by_id[r.example_id], r) for r in stored],
        verdicts={r.example_id: r.verdict for r in stored},
        rationales={r.example_id: r.rationale for r in stored},
        wall_s=evals.wall_s(key) or None,
        log={**log, "run_key": key, "invocations": evals.invocations(key)},
    )


def write_reports(
    out: Path, report: dict[str, Any], examples: Sequence[Example], lock: Lock
) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    by_id = {e.id: e for e in examples}
    texts = {r.id: r.text for r in lock.rules}
    files = {
        "report.json": write_json(report),
        "report.md": write_markdown(report),
        "report.html": write_html(report, by_id, texts),
    }
    written = []
    for name, text in files.items():
        path = out / name
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(path)  # never a half-written report
        written.append(path)
    return written
