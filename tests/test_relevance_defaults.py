"""Issue 12, finding 4: relevance is never a silent "safe".

Each relevance model has its own default threshold, kept with the model: a model folder
may carry `judge-relevance.json` (`{"threshold": t}`), which the toy build writes for the
toy CLIP; CLIP ViT-B/16 keeps the paper's 0.22; SigLIP's comes from its own sigmoid. A
policy's threshold overrides the model's. The summary line and the table say how many rule
checks were skipped as irrelevant and at which threshold; `--explain` shows each rule's
score against it. A tiny random CLIP built from a config stands in for a real one.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import re
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from judge.errors import InputError
from judge.models.scripted import ScriptedBackend
from tests._tiny_clip import build_tiny_clip
from tests.test_cli_judge import world  # noqa: F401  (the fixture: a red image, a policy)

pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def clip_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("relevance-models")
    plain = build_tiny_clip(root / "plain")
    out = {"plain": plain}
    # The tiny CLIP scores the red test image at about -0.67 against "a red shape" rules.
    for name, threshold in (("keeps", -1.0), ("skips", 0.99)):
        folder = root / name
        folder.mkdir()
        for item in plain.iterdir():
            (folder / item.name).write_bytes(item.read_bytes())
        (folder / "judge-relevance.json").write_text(json.dumps({"threshold": threshold}))
        out[name] = folder
    return out


def _policy(extra: str = "") -> Any:
    from judge.constitution import Constitution

    policy = Constitution.from_yaml(
        "name: p\n"
        + extra
        + "rules:\n  - id: no-red\n    text: No red shapes.\n    preconditions: [a red shape]\n"
    )
    policy.compile(None)
    return policy


def test_the_model_folder_carries_its_default_threshold(
    clip_dirs: dict[str, Path], tmp_path: Path
) -> None:
    from judge import Judge

    def judge_with(folder: str, policy: Any = None) -> Any:
        return Judge(
            policy or _policy(),
            backend=ScriptedBackend(),
            relevance=f"clip:{clip_dirs[folder]}",
            locator="off",
            store=tmp_path / "s.db",
        )

    for name, expected in (("keeps", -1.0), ("skips", 0.99)):
        with judge_with(name) as j:
            assert j.thresholds.relevance == expected
            assert j.relevance_source.endswith("judge-relevance.json")
    # Without the file: the paper's 0.22, said to be unmeasured for this model.
    with judge_with("plain") as j:
        assert j.thresholds.relevance == 0.22 and "not measured" in j.relevance_source
    # The policy's own threshold overrides the model's.
    with judge_with("keeps", _policy("defaults:\n  thresholds: {relevance: 0.3}\n")) as j:
        assert j.thresholds.relevance == 0.3 and "policy" in j.relevance_source


def test_a_malformed_threshold_file_is_a_clear_error(
    clip_dirs: dict[str, Path], tmp_path: Path
) -> None:
    from judge.vision.relevance import model_threshold

    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "judge-relevance.json").write_text('{"threshold": "high"}')
    with pytest.raises(InputError, match=r"judge-relevance\.json"):
        model_threshold(SimpleNamespace(model_id=str(bad), kind="clip"))  # type: ignore[arg-type]


def test_siglip_default_comes_from_its_own_sigmoid() -> None:
    import torch

    from judge.vision.relevance import SIGLIP_MATCH_PROBABILITY, model_threshold

    model = SimpleNamespace(
        logit_scale=torch.tensor(math.log(100.0)), logit_bias=torch.tensor(-10.0)
    )
    scorer = SimpleNamespace(model_id="/nowhere", kind="siglip", _model=model)
    value, source = model_threshold(scorer)  # type: ignore[arg-type]
    p = 1 / (1 + math.exp(-(100.0 * value - 10.0)))
    assert p == pytest.approx(SIGLIP_MATCH_PROBABILITY, rel=0.02) and "SigLIP" in source


def _judge(setup: dict[str, Any], *args: str) -> SimpleNamespace:
    """`judge ...` in this process with the scripted back end of tests/test_cli_judge.py."""
    sys.path.insert(0, str(setup["dir"]))
    try:
        import plugin_scripted_cli  # noqa: F401  (registers the back end)
    finally:
        sys.path.remove(str(setup["dir"]))
    from judge.cli import main

    out, err = io.StringIO(), io.StringIO()
    code = 0
    argv = [*args, "--constitution", str(setup["policy"]), "--backend", "scripted-cli"]
    argv += ["--locator", "off", "--store", str(setup["dir"] / "s.db")]
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            main(argv)
        except SystemExit as done:
            code = int(done.code or 0)
    return SimpleNamespace(returncode=code, stdout=out.getvalue(), stderr=err.getvalue())


def test_skipped_rules_are_counted_with_their_threshold(
    world: dict[str, Any],  # noqa: F811
    clip_dirs: dict[str, Path],
) -> None:
    red = str(world["images"] / "red.png")
    # The model's own threshold keeps the rule: the red image is found unsafe.
    kept = _judge(world, red, "--relevance", f"clip:{clip_dirs['keeps']}")
    assert kept.returncode == 1, kept.stdout + kept.stderr
    said = " ".join(kept.stdout.split())  # the summary line wraps at 80 columns
    assert "0 of 1 rule checks skipped as irrelevant (relevance at or below -1.000" in said
    # A threshold that skips it: "safe", and the summary and the table say why.
    skipped = _judge(world, red, "--relevance", f"clip:{clip_dirs['skips']}", "--explain")
    assert skipped.returncode == 0
    said = " ".join(skipped.stdout.split())
    assert "1 of 1 rule checks skipped as irrelevant (relevance at or below 0.990" in said
    assert "judge-relevance.json" in said
    assert "irrelevant" in skipped.stdout.splitlines()[0]  # the table's header
    assert "safe 1/1" in said  # the table: 1 of 1 rules skipped
    # --explain: the score against the threshold.
    assert re.search(r"irrelevant \(relevance <= 0\.990\): no-red -?\d\.\d\d", said), said
    document = json.loads(
        _judge(world, red, "--relevance", f"clip:{clip_dirs['skips']}", "--json").stdout
    )
    summary = document["summary"]
    assert (summary["irrelevant"], summary["rule_checks"]) == (1, 1)
    assert summary["relevance_thresholds"] == [0.99]


@pytest.mark.slow
def test_the_toy_clip_carries_its_measured_threshold(toy_models: Any, tmp_path: Path) -> None:
    """The toy build measures the toy CLIP's threshold and saves it beside the model; a
    policy naming `model: toy` with no threshold of its own then uses it, not 0.22."""
    from judge import Judge

    saved = toy_models.clip / "judge-relevance.json"
    assert saved.is_file(), "the toy build must write judge-relevance.json into the toy CLIP"
    measured = float(json.loads(saved.read_text())["threshold"])
    policy = _policy("defaults:\n  model: toy\n")
    with Judge(policy, backend=ScriptedBackend(), locator="off", store=tmp_path / "s.db") as j:
        assert j.thresholds.relevance == measured != 0.22
        assert j.relevance_source == str(saved)
