"""`judge bench`: the naive reference algorithm agrees with the engine, and the benchmark
prints every ratio against the real vLLM server with the toy VLM.

The fast tests drive the engine's procedure and the naive algorithm over the same scripted
answers (random constitutions, boxes, relevance scores and answers, every stage switch),
and require the same outcome for every rule. The slow test runs a short `judge bench`.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Mapping, Sequence
from typing import Any

import pytest
from PIL import Image

from judge.bench.naive import NaiveJudge
from judge.bench.probes import RssSample, memory_trend, parse_prometheus
from judge.constitution.schema import CompiledRule, Lock, PreconditionSpec
from judge.engine.priors import PriorCache
from judge.engine.procedure import JudgeOptions, Setup, judge_image, rule_thresholds
from judge.engine.verdict import Box
from judge.models.scripted import ScriptedBackend
from judge.thresholds import Thresholds

IMG = "img"
SIDE = (100, 80)
STATEMENTS = [f"statement {c}" for c in "abcdef"]
WORDS = ["knife", "blood", "flame"]
REASON = "Step by step: I looked."
SUMMARIES = {
    "yes": '{"rating": "Yes", "rationale": "seen"}',
    "no": '{"rating": "No", "rationale": "not seen"}',
    "garbage": "I cannot tell.",
}


class FakeLocator:
    def __init__(self, boxes: Mapping[str, Box | None]) -> None:
        self.boxes = dict(boxes)

    def locate(self, image: Image.Image, words: Sequence[str]) -> dict[str, Box | None]:
        return {w: self.boxes.get(w) for w in words}


class FakeScorer:
    def __init__(self, scores: Mapping[str, float]) -> None:
        self.scores = dict(scores)

    def score(self, image: Image.Image, texts: Sequence[str]) -> list[float]:
        return [self.scores[t] for t in texts]


def _fill(image: Image.Image, box: Box) -> Image.Image:
    out = image.copy()
    out.paste((128, 128, 128), (int(box.x0), int(box.y0), int(box.x1), int(box.y1)))
    return out


def _crop(image: Image.Image, box: Box) -> Image.Image:
    return image.crop((int(box.x0), int(box.y0), int(box.x1), int(box.y1)))


def _lock(rules: list[CompiledRule]) -> Lock:
    return Lock(
        name="t",
        source="t.yaml",
        source_sha256="0" * 64,
        compiler_model="none",
        compiled_at="2026-01-01T00:00:00Z",
        rules=rules,
    )


def random_case(rng: random.Random) -> dict[str, Any]:
    """A random constitution, locator, scorer, options and scripted answers."""
    rules = []
    for i in range(rng.randint(1, 4)):
        pres = [
            PreconditionSpec.model_validate(
                {
                    # Some alternatives name their own object words (their own boxes).
                    "any_of": [
                        {"text": s, "objects": rng.sample(WORDS, 1)} if rng.random() < 0.3 else s
                        for s in rng.sample(STATEMENTS, rng.randint(1, 2))
                    ],
                    "objects": rng.sample(WORDS, rng.randint(0, 2)),
                }
            )
            for _ in range(rng.randint(1, 3))
        ]
        rules.append(
            CompiledRule(
                id=f"r{i}",
                source_text=f"source {i}",
                text=f"rule {i}",
                text_sha256="0" * 64,
                preconditions=pres,
            )
        )
    boxes: dict[str, Box | None] = {}
    for word in WORDS:
        kind = rng.choice(["none", "weak", "big", "small"])
        if kind == "none":
            boxes[word] = None
        elif kind == "small":  # under 1% of 100x80: cropped
            boxes[word] = Box(x0=10, y0=10, x1=16, y1=16, confidence=0.8, label=word)
        else:
            conf = 0.02 if kind == "weak" else rng.choice([0.3, 0.9])
            boxes[word] = Box(x0=20, y0=10, x1=70, y1=60, confidence=conf, label=word)
    keys = [IMG]
    for word in WORDS:
        keys += [f"{IMG}#crop:{word}", f"{IMG}#mask:{word}", f"{IMG}#crop:{word}#mask:{word}"]
    values = [0.02, 0.1, 0.3, 0.5, 0.6, 0.75, 0.9, 0.98]
    answers: dict[tuple[str, str | None], float | None] = {}
    cascades: dict[tuple[str, str | None], list[str]] = {}
    for s in STATEMENTS:
        answers[(s, None)] = None if rng.random() < 0.04 else rng.choice([0.2, 0.5, 0.8])
        for key in keys:
            answers[(s, key)] = None if rng.random() < 0.04 else rng.choice(values)
            summary = rng.choice(["yes", "no", "no", "yes", "garbage"])
            turn = [REASON, SUMMARIES[summary]]
            if summary == "garbage":
                turn.append(SUMMARIES["garbage"])  # the retry is unparseable too
            cascades[(s, key)] = turn * 12  # the naive algorithm may ask again
    options = JudgeOptions(
        relevance=rng.random() < 0.7,
        center=rng.random() < 0.8,
        cascade=rng.random() < 0.8,
        debias=rng.random() < 0.85,
        preconditions=rng.random() < 0.85,
        objectified=rng.random() < 0.85,
    )
    scores = {}
    for r in rules:
        scores[r.text] = rng.choice([0.1, 0.3, 0.3])
        scores[r.source_text] = rng.choice([0.1, 0.3, 0.3])
    # With preconditions off, the rule's text is the statement: script it too.
    for r in rules:
        for text in (r.text, r.source_text):
            answers[(text, None)] = rng.choice([0.2, 0.5])
            for key in keys:
                answers[(text, key)] = rng.choice(values)
                cascades[(text, key)] = [REASON, SUMMARIES[rng.choice(["yes", "no"])]] * 12
    return {
        "lock": _lock(rules),
        "locator": FakeLocator(boxes),
        "scorer": FakeScorer(scores),
        "answers": answers,
        "cascades": cascades,
        "options": options,
    }


def _engine(case: dict[str, Any], image: Image.Image) -> tuple[dict[str, str], ScriptedBackend]:
    backend = ScriptedBackend(case["answers"], case["cascades"])
    lock: Lock = case["lock"]
    setup = Setup(
        backend=backend,
        rules=lock.enabled_rules(),
        thresholds=rule_thresholds(lock, Thresholds.model_validate({})),
        options=case["options"],
        priors=PriorCache(backend, None),
        relevance=case["scorer"],
        locator=case["locator"],
        fill=_fill,
        crop=_crop,
    )
    result = asyncio.run(judge_image(setup, image, IMG))
    return {r.rule_id: r.outcome for r in result.rules}, backend


def _naive(case: dict[str, Any], image: Image.Image) -> tuple[dict[str, str], ScriptedBackend]:
    backend = ScriptedBackend(case["answers"], case["cascades"])
    naive = NaiveJudge(
        case["lock"],
        backend,
        options=case["options"],
        relevance=case["scorer"],
        locator=case["locator"],
        fill=_fill,
        crop=_crop,
    )
    rules, _ = asyncio.run(naive.judge_pixels(image, IMG))
    return {r.rule_id: r.outcome for r in rules}, backend


def test_naive_matches_engine_on_random_decision_tables() -> None:
    image = Image.new("RGB", SIDE, (200, 40, 40))
    rng = random.Random(7)
    seen: set[str] = set()
    for case_no in range(250):
        case = random_case(rng)
        engine, _engine_backend = _engine(case, image)
        naive, naive_backend = _naive(case, image)
        assert naive == engine, f"case {case_no}: engine {engine} vs naive {naive}"
        seen.update(engine.values())
        # The naive algorithm never batches: one query per request.
        assert naive_backend.batches == len(naive_backend.calls)
    # The random tables reach every rule outcome.
    assert seen == {"violated", "not_violated", "undecided", "irrelevant"}


def test_naive_asks_more_and_recomputes_priors() -> None:
    """Two rules share a statement: the engine asks it once with one prior; the naive
    algorithm asks it for each rule, each time with its prior."""
    shared = "statement a"
    rules = [
        CompiledRule(
            id=f"r{i}",
            source_text="s",
            text=f"rule {i}",
            text_sha256="0" * 64,
            preconditions=[PreconditionSpec(any_of=[shared])],
        )
        for i in range(2)
    ]
    case = {
        "lock": _lock(rules),
        "locator": None,
        "scorer": None,
        "answers": {(shared, IMG): 0.98, (shared, None): 0.2},
        "cascades": {},
        "options": JudgeOptions(),
    }
    image = Image.new("RGB", SIDE)
    engine, eb = _engine(case, image)
    naive, nb = _naive(case, image)
    assert engine == naive == {"r0": "violated", "r1": "violated"}
    assert eb.asked() == [(shared, IMG), (shared, None)]
    assert nb.asked() == [(shared, IMG), (shared, None)] * 2


def test_prometheus_parsing_sums_label_sets() -> None:
    text = (
        "# HELP vllm:prefix_cache_hits_total Prefix cache hits\n"
        "# TYPE vllm:prefix_cache_hits_total counter\n"
        'vllm:prefix_cache_hits_total{engine="0",model_name="m"} 896.0\n'
        'vllm:prefix_cache_hits_total{engine="1",model_name="m"} 104.0\n'
        "vllm:prefix_cache_queries_total 1250\n"
    )
    parsed = parse_prometheus(text)
    assert parsed["vllm:prefix_cache_hits_total"] == 1000.0
    assert parsed["vllm:prefix_cache_queries_total"] == 1250.0


def test_memory_trend_tells_flat_from_growing() -> None:
    mib = 1024 * 1024
    flat = [RssSample(i, i * 10, 500 * mib + (i % 3) * mib) for i in range(101)]
    growing = [RssSample(i, i * 10, 500 * mib + i * 2 * mib) for i in range(101)]
    assert memory_trend(flat, 1000).late_vs_early < 1.01
    trend = memory_trend(growing, 1000)
    assert trend.late_vs_early > 1.2
    assert trend.slope_mib_per_1k == pytest.approx(200.0, rel=0.01)


# ---- the real thing: a short `judge bench` against the real vLLM server -------------------

RATIO_ROWS = {
    "prefill": ["sent / ideal", "computed / ideal", "cache hit (usage.cached_tokens)",
                "cache hit (/metrics hits/queries)"],
    "naive": ["speed-up (engine / naive)", "same verdicts"],
    "scaling": ["images/s at concurrency 1", "images/s at concurrency 4",
                "images/s at concurrency 16", "images/s at concurrency 64"],
    "memory": ["RSS early -> late (after warm-up)"],
    "compile": ["speed-up (sequential / batched)"],
    "video": ["5 s clip: model queries, reuse on / off", "10 s clip: model queries, reuse on / off",
              "cost vs length (reuse on, s per clip)"],
}


@pytest.mark.slow
@pytest.mark.vllm
def test_bench_quick_against_real_vllm(
    vllm_server: Any, tmp_path: Any, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`judge bench --quick` runs every section against the real server, prints every
    ratio, and fails (exit 1) if any engine verdict differs from the naive algorithm's."""
    import json

    from judge.cli import main

    monkeypatch.setenv("COLUMNS", "200")
    out = tmp_path / "bench.json"
    with pytest.raises(SystemExit) as done:
        main(["bench", "--server", vllm_server.url, "--quick", "--json", str(out)])
    printed = capsys.readouterr().out
    result = json.loads(out.read_text())
    assert result["verdict_mismatches"] == [], result["verdict_mismatches"]
    assert done.value.code == 0, printed
    rows = {(r["section"], r["measure"].split(" (only")[0]): r for r in result["rows"]}
    for section, measures in RATIO_ROWS.items():
        for measure in measures:
            row = rows.get((section, measure))
            assert row is not None, f"missing {section}: {measure}\n{printed}"
            assert row["ratio"] is not None and row["ratio"] == row["ratio"], (section, measure)
    # The naive algorithm really is the chattier one: more model calls, more HTTP requests
    # and more Yes/No prompt tokens per image for the same verdicts. How much faster the
    # engine is depends on the machine, so it is measured and printed (the speed-up rows
    # above), never asserted.
    summary = result["summary"]
    assert sum(summary["naive_calls_per_image"].values()) > sum(
        summary["engine_calls_per_image"].values()
    )
    requests = rows[("naive", "HTTP requests / image (engine vs naive)")]
    assert requests["ratio"] is not None and requests["ratio"] > 1.0, requests
    tokens = rows[("prefill", "naive: Yes/No tokens sent / image")]
    assert tokens["ratio"] is not None and tokens["ratio"] > 1.0, tokens
    # The token accounting against the prefill limit: the server's prefix cache served
    # part of what the engine sent (its [instructions][image][statement] order shares an
    # image's prefix across statements), and what was left to compute is no less than the
    # ideal, which prefills each image and each distinct statement once (docs/toy-recipe.md:
    # 0.55 and 1.45). A prompt order that puts the statement before the image gives no
    # hits (the CPU build caches whole blocks of 128 tokens, and the text before the image
    # is shorter); a count that loses requests or double-counts cached tokens goes under
    # the ideal.
    assert summary["cache_hit_usage"] is not None and summary["cache_hit_usage"] > 0, summary
    assert summary["computed_over_ideal"] is not None, summary
    assert summary["computed_over_ideal"] >= 1.0, summary
    # Clips: reuse and early stopping ask fewer queries, and change no verdict.
    assert summary["video_early_stop_same"] is True, summary
    assert summary["video_early_stop_queries"] < summary["video_scan_all_queries"], summary
    for length, queries in summary["video_queries_per_clip"].items():
        assert queries < summary["video_queries_per_clip_no_reuse"][length], summary
    # The last line is the one-line summary, with every key ratio.
    last = printed.strip().splitlines()[-1]
    assert last.startswith("bench: ")
    for key in ("cache_hit=", "computed/ideal=", "speedup_vs_naive=", "verdicts_same=",
                "scaling_c64/c1=", "rss_late/early=", "compile_batched/seq=", "gpu=skipped",
                "video="):
        assert key in last, (key, last)
    assert "n/a" not in last.split("gpu=")[0], last


def test_prefill_ideal_counts_each_image_prefix_once() -> None:
    """The ideal: per distinct image its prefix once plus each distinct statement's own
    tokens; priors and repeats count as sent only."""
    from judge.bench.probes import QueryRecord
    from judge.bench.run import prefill_of

    def rec(digest: str | None, question: str, tokens: int, cached: int) -> QueryRecord:
        size = None if digest is None else (224, 224)
        return QueryRecord(digest, size, question, "instr", tokens, cached, True)

    records = [
        rec("img1", "q1", 400, 0),
        rec("img1", "q2", 410, 384),
        rec("img1", "q2", 410, 384),  # asked twice: sent twice, ideal once
        rec("img2", "q1", 400, 256),
        rec(None, "q1", 330, 256),  # a prior
    ]
    pre = prefill_of(records, 2, lambda size: 380)  # type: ignore[arg-type]
    assert pre.sent == 400 + 410 + 410 + 400 + 330
    assert pre.cached == 384 + 384 + 256 + 256
    assert pre.ideal == (380 + 20 + 30) + (380 + 20)
