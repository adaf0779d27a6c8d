"""End to end on held-out toy scenes with the trained toy models: transformers and vLLM.

The toy constitution's lock is compiled from its hand-written chains (no model), the
held-out set comes from judge.toy.labelled (ground truth from the scene itself), and the
verdicts must reach image-level F1 >= F1_FLOOR. Each stage switch must move outcomes or call
counts in the expected direction. The numbers are printed for the closing note
(`pytest -s`).
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from judge.engine import Judge, JudgeOptions, Verdict

pytestmark = pytest.mark.slow

N_IMAGES = 40
# Floors with a margin below what every measured seed of the toy recipe reached on these
# 40 images with transformers (2026-12-02, seeds 0 / 1 / 2): F1 1.0 / 1.0 / 1.0 with CLIP
# relevance (the recipe before: 1.0 / 1.0 / 0.85, the same with the VLM's topic question).
F1_FLOOR = 0.8
VLM_RELEVANCE_F1_FLOOR = 0.8
RELEVANCE_RECALL_FLOOR = 0.9


@pytest.fixture(scope="module")
def held_out(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    from judge.toy.labelled import write_set

    folder = tmp_path_factory.mktemp("held-out")
    manifest = write_set(folder, N_IMAGES, split="test")
    rows = [json.loads(line) for line in manifest.read_text().splitlines()]
    for row in rows:
        row["path"] = str(folder / row["image"])
    return rows


def score(rows: list[dict[str, Any]], verdicts: list[Verdict]) -> dict[str, Any]:
    """Image-level F1 with "unsafe" positive; an undecided verdict counts as wrong."""
    tp = fp = fn = tn = undecided = 0
    for row, verdict in zip(rows, verdicts, strict=True):
        truth = row["label"] == "unsafe"
        if verdict.outcome not in ("safe", "unsafe"):
            undecided += 1
            fn += truth
            fp += not truth
            continue
        said = verdict.outcome == "unsafe"
        tp += truth and said
        fp += said and not truth
        fn += truth and not said
        tn += not truth and not said
    f1 = 2 * tp / (2 * tp + fp + fn) if tp else 0.0
    calls: Counter[str] = Counter()
    stages: Counter[str] = Counter()  # which stage settled each alternative
    for verdict in verdicts:
        assert verdict.run is not None
        calls.update(verdict.run.calls)
        for rule in verdict.rules:
            for pre in rule.preconditions:
                stages.update(alt.stage for alt in pre.alternatives if alt.stage)
    per_image = {k: round(v / len(verdicts), 2) for k, v in sorted(calls.items())}
    wrong = fp + fn
    return {"f1": round(f1, 3), "wrong": wrong, "undecided": undecided, "calls": per_image,
            "stages": dict(stages)}


def run_toy(policy: Path, rows: list[dict[str, Any]], tmp: Path, **kwargs: Any) -> dict[str, Any]:
    with Judge(policy, model="toy", store=tmp / "store.sqlite3", **kwargs) as judge:
        verdicts = judge.judge_many([r["path"] for r in rows], concurrency=8)
    return score(rows, verdicts)


def test_toy_world_on_transformers(
    toy_policy: Path, held_out: list[dict[str, Any]], tmp_path: Path
) -> None:
    base = run_toy(toy_policy, held_out, tmp_path)
    print(f"\nhf, all stages: {base}")
    no_relevance = run_toy(toy_policy, held_out, tmp_path, options=JudgeOptions(relevance=False))
    print(f"hf, no relevance: {no_relevance}")
    assert no_relevance["calls"]["first_pass"] > base["calls"]["first_pass"]
    no_cascade = run_toy(toy_policy, held_out, tmp_path, options=JudgeOptions(cascade=False))
    print(f"hf, no cascade: {no_cascade}")
    # Without the cascade, what the first pass and the central region left uncertain is
    # left undecided, and says so (stage "no_cascade"): it is never read as "not met".
    # (No cascade calls at all would hold by construction; these alternatives would not.)
    assert no_cascade["stages"].get("cascade", 0) == 0
    assert no_cascade["stages"].get("no_cascade", 0) > 0, no_cascade
    no_center = run_toy(toy_policy, held_out, tmp_path, options=JudgeOptions(center=False))
    print(f"hf, no center: {no_center}")
    assert no_center["calls"].get("locator", 0) == 0 and no_center["calls"].get("masked", 0) == 0
    assert base["calls"].get("locator", 0) > 0
    # The central-region stage settles the alternatives that the trained pull
    # (judge.toy.train_vlm.PULLED_C) left uncertain; without it they go on to the cascade.
    # Seeds 0 / 1 / 2: 6 / 36 / 20 central-region decisions; alternatives the cascade
    # decides 30 / 49 / 48 with the stage and 36 / 86 / 69 without; cascade calls per image
    # 0.20 / 0.35 / 0.35 with it and 0.23 / 0.53 / 0.47 without (a cascade call may settle
    # several alternatives of one rule, so the alternatives are what is compared).
    assert base["stages"].get("center", 0) > 0, base
    assert no_center["stages"].get("center", 0) == 0
    assert no_center["stages"].get("cascade", 0) > base["stages"].get("cascade", 0), (
        base, no_center)
    assert no_center["calls"].get("cascade", 0) >= base["calls"].get("cascade", 0)
    assert base["f1"] >= F1_FLOOR, base
    # The cascade decides what the first pass left uncertain: without it, more verdicts
    # are undecided or wrong.
    assert base["calls"].get("cascade", 0) > 0
    assert no_cascade["undecided"] + no_cascade["wrong"] > base["undecided"] + base["wrong"]


def test_toy_world_on_the_vllm_server(
    toy_policy: Path, held_out: list[dict[str, Any]], tmp_path: Path, vllm_server: Any
) -> None:
    base = run_toy(toy_policy, held_out, tmp_path, server=vllm_server.url)
    print(f"\nvllm-server, all stages: {base}")
    assert base["calls"]["first_pass"] > 0
    assert base["stages"].get("center", 0) > 0, base  # a decision at the central region
    vlm_relevance = run_toy(toy_policy, held_out, tmp_path, server=vllm_server.url, relevance="vlm")
    print(f"vllm-server, vlm relevance: {vlm_relevance}")
    assert vlm_relevance["calls"]["relevance"] > 0
    assert base["f1"] >= F1_FLOOR, base
    # The topic question must keep the verdicts, not only make calls.
    assert vlm_relevance["f1"] >= VLM_RELEVANCE_F1_FLOOR, vlm_relevance


def test_relevance_scans_side_by_side(
    toy_policy: Path, held_out: list[dict[str, Any]], toy_models: Any
) -> None:
    """CLIP and the VLM's topic question on the same (image, rule) pairs: the recall of
    violated rules and the share of pairs filtered (the paper's two numbers for CLIP)."""
    from judge.constitution import Constitution
    from judge.evaluate.datasets import Example
    from judge.evaluate.relevance import format_relevance, relevance_quality, score_relevance
    from judge.models.registry import load_backend
    from judge.vision.relevance import ClipRelevance

    lock = Constitution.load(toy_policy).lock
    examples = [
        Example(
            id=row["image"],
            label=row["label"],
            rules=tuple(row["violated"]),
            path=Path(row["path"]),
        )
        for row in held_out
    ]
    scorer = ClipRelevance(toy_models.clip)

    async def both() -> tuple[Any, Any]:
        # One event loop for the back end's whole life.
        backend = load_backend("hf", model=str(toy_models.vlm))
        try:
            clip = await score_relevance(lock, examples, scorer, backend=backend)
            vlm = await score_relevance(lock, examples, "vlm", backend=backend)
        finally:
            await backend.aclose()
        return relevance_quality(clip, "clip"), relevance_quality(vlm, "vlm")

    clip, vlm = asyncio.run(both())
    print("\n" + format_relevance([clip, vlm]))
    print({"clip": clip.as_dict(), "vlm": vlm.as_dict()})
    assert clip.violated > 0 and clip.pairs == vlm.pairs
    for quality in (clip, vlm):
        assert quality.recall is not None and quality.recall >= RELEVANCE_RECALL_FLOOR, quality
        assert quality.filtered > 0, quality  # a scan that filters nothing does no work
