"""The trained toy models on held-out scenes (slow: trains them once per recipe).

Figures are printed (run with -s) so the closing note can quote them.
"""

from __future__ import annotations

from typing import Any

import pytest

pytestmark = pytest.mark.slow

# Floors with a margin below what every measured seed reached (seeds 0, 1 and 2 of the
# recipe, 2026-12-01): plain 0.5-threshold accuracy of the topic question (0.88 / 0.80 /
# 0.90), of colour statements (0.98 / 1.0 / 0.98) and of each case on its own (worst:
# small dots 0.93 / 1.0 / 0.89).
RELEVANCE_FLOOR = 0.7
PULL_FLOOR = 0.01  # how much lower pulled dots score (seeds: 0.043 / 0.020 / 0.080)
KIND_FLOOR = 0.9
CASE_FLOOR = 0.85


@pytest.fixture(scope="module")
def vlm_report(toy_models: Any) -> Any:
    from judge.toy.check import vlm_report as measure

    rep = measure(toy_models.vlm, n_scenes=50)
    print("\nVLM accuracy by kind and case:", rep.accuracy, "\ncounts:", rep.counts,
          "\nby kind:", rep.kind_accuracy, "\nbiased:", rep.biased)
    return rep


def test_vlm_puts_its_mass_on_yes_no(toy_models: Any) -> None:
    import torch

    from judge.toy.check import ToyVLM
    from judge.toy.world import make_scene

    vlm = ToyVLM(toy_models.vlm)
    msgs = vlm.messages("a red shape", with_image=True)
    text = vlm.processor.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
    enc = vlm.processor(text=[text], images=[make_scene(123).image], return_tensors="pt")
    with torch.no_grad():
        probs = vlm.model(**enc).logits[0, -1].softmax(-1)
    assert float(probs[vlm.yes_ids].sum() + probs[vlm.no_ids].sum()) > 0.9


def test_vlm_language_prior_is_the_deliberate_bias(vlm_report: Any) -> None:
    from judge.toy.train_vlm import BIASED, PRIOR

    priors = vlm_report.priors
    for text, (prior, _false) in BIASED.items():
        others = [p for t, p in priors.items() if t not in BIASED and not t.startswith("a yellow")]
        assert priors[text] > 0.7, (text, priors[text])
        assert priors[text] > max(others) + 0.2
        assert abs(prior - priors[text]) < 0.2
    assert max(p for t, p in priors.items() if not t.startswith("a yellow")) < 0.5
    assert set(PRIOR) == {"colour", "text"}
    # Debiased, the first pass never decides the biased statement wrongly (uncertain goes
    # on to the later stages). A build that also pulled yellow dots answered 0.54 for a
    # yellow shape beside a red one: 7 of 63 held-out queries wrongly "not met", and every
    # miss of the 24 sample scenes a yellow rule; the shipped build: none.
    for text in BIASED:
        assert vlm_report.debiased_wrong[text] <= 0.05, vlm_report.debiased_wrong


def test_vlm_accuracy_per_statement_kind(vlm_report: Any) -> None:
    """Plain Yes/No accuracy for every statement kind the toy constitution uses (>= 90%),
    and in each case (large, small, absent) on its own (>= 85%); the deliberately biased
    statement apart: a plain 0.5 threshold is wrong for it by design."""
    from judge.toy import world
    from judge.toy.labelled import toy_constitution

    used = {world.parse_statement(a).kind  # type: ignore[union-attr]
            for r in toy_constitution().rules for p in r.preconditions or [] for a in p.any_of}
    for kind in used:
        acc = vlm_report.kind_accuracy[kind]
        assert acc >= KIND_FLOOR, (kind, acc, vlm_report.accuracy[kind])
        for case, case_acc in vlm_report.accuracy[kind].items():
            assert case_acc >= CASE_FLOOR, (kind, case, case_acc, vlm_report.counts[kind])


def test_vlm_cascade_turns(toy_models: Any) -> None:
    """Free generation (no schema): the step-by-step turn, then JSON that parses and whose
    rating is right, for the statements the toy constitution uses."""
    from judge.toy.check import cascade_report

    rep = cascade_report(toy_models.vlm, n=16)
    print("\ncascade:", rep)
    assert rep["parsed"] >= 0.9, rep
    assert rep["right"] >= 0.7, rep  # seeds 0 / 1 / 2: 16 / 16 / 12 of 16


def test_build_matches_the_recorded_sha256(toy_models: Any) -> None:
    """The same recipe gives the same bits on any x86-64 CPU with AVX2 or better (kernels
    pinned in the training processes): each model's sha256 is the one recorded in
    judge/toy/expected.json for this recipe."""
    from judge.toy.build import build_report

    report = build_report(toy_models)
    assert report["expected"] is not None, (
        f"no sha256 recorded for recipe {toy_models.recipe_hash}: add {report['sha256']} "
        "to judge/toy/expected.json")
    assert report["matched"], (report["sha256"], report["expected"])
    assert report["vlm"]["cpu_capability"] == "AVX2"


def test_trained_questions(toy_models: Any) -> None:
    """The VLM-relevance topic question is learnt, and so is the central-region bias
    (`PULLED_C`): a small dot beside a large object of another colour scores lower than
    other small dots (seeds 0 / 1 / 2: mean M 0.85 / 0.89 / 0.86 against 0.90 / 0.91 /
    0.94). The baselines' questions were trained on true labels too: their figures are
    printed, whichever way they come out."""
    from judge.toy.check import trained_biases_report

    rep = trained_biases_report(toy_models.vlm)
    print("\ntrained biases and questions:", rep)
    assert rep["pulled_n"] >= 5 and rep["small_n"] >= 5, rep
    assert rep["relevance"] >= RELEVANCE_FLOOR, rep
    assert rep["pulled_mean_m"] < rep["small_mean_m"] - PULL_FLOOR, rep


def test_clip_relevance_threshold_is_measured_and_saved(toy_models: Any) -> None:
    import json

    from judge.toy.train_clip import KEEP_VIOLATED, RELEVANCE_FILE

    saved = json.loads((toy_models.clip / RELEVANCE_FILE).read_text())
    print("\ntoy CLIP relevance threshold:", saved)
    assert saved["kept_violated"] >= KEEP_VIOLATED
    assert 0.0 < saved["filtered"] < 1.0


def test_clip_ranks_the_right_caption_first(toy_models: Any) -> None:
    from judge.toy.train_clip import clip_top1

    top1 = clip_top1(toy_models.clip, n=20, rounds=3)
    print(f"\nCLIP top-1 among 20 captions: {top1:.2f}")
    assert top1 >= 0.5


def test_owl_box_overlaps_the_true_box(toy_models: Any) -> None:
    from judge.toy.train_owl import owl_hit_rate

    rate = owl_hit_rate(toy_models.owlv2, n=40)
    print("\nOWLv2 hit rate (IoU > 0.3):", rate)
    assert rate["large"] >= 0.6
    # Among objects of other colours, the box follows the name more often than not
    # (measured 0.51-0.59; a detector that ignores the name was measured at 0.38).
    assert rate["named"] >= 0.45


def test_models_reload_through_auto_classes(toy_models: Any) -> None:
    from transformers import (
        AutoModelForImageTextToText,
        AutoProcessor,
        CLIPModel,
        Owlv2ForObjectDetection,
    )

    AutoModelForImageTextToText.from_pretrained(toy_models.vlm)
    AutoProcessor.from_pretrained(toy_models.vlm)
    CLIPModel.from_pretrained(toy_models.clip)
    AutoProcessor.from_pretrained(toy_models.clip)
    Owlv2ForObjectDetection.from_pretrained(toy_models.owlv2)
    AutoProcessor.from_pretrained(toy_models.owlv2)
    assert (toy_models.root / "toy-models.json").is_file()


def test_cli_toy_build_writes_models_and_set(toy_models: Any, tmp_path: Any) -> None:
    import json

    from typer.testing import CliRunner

    import judge.commands.toy  # noqa: F401  (registers `judge toy`)
    from judge.commands.app import app

    result = CliRunner().invoke(app, ["toy", "build", "--out", str(tmp_path), "--images", "6"])
    assert result.exit_code == 0, result.output
    for name in ("vlm", "clip", "owlv2"):
        assert (tmp_path / "models" / name / "config.json").is_file()
    rows = [json.loads(x) for x in (tmp_path / "set" / "manifest.jsonl").read_text().splitlines()]
    assert len(rows) == 6 and all((tmp_path / "set" / r["image"]).is_file() for r in rows)
