"""Issue 13, item 5: the region-removal fill can be chosen (mean colour, blur, black).

From `JudgeOptions` / `Judge(fill=...)`, `judge --fill` and `judge eval --fill`, with an
ablation for each fill other than the default; the verdict's run info records the fill.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from judge.engine.judge import Judge
from judge.engine.priors import PriorCache
from judge.engine.procedure import JudgeOptions, Setup, judge_image, rule_thresholds
from judge.engine.verdict import Box
from judge.errors import InputError
from judge.evaluate.ablations import ABLATIONS, method_options, parse_ablations
from judge.models.base import YesNoQuery, YesNoResult
from judge.models.scripted import ScriptedBackend
from judge.thresholds import Thresholds
from judge.vision.masking import FILL_METHODS, fill_box
from tests.test_engine_decisions import FakeLocator, answers, make_lock, rule
from tests.test_eval_command import FAKE, cli, make_policy, make_set

BOX = Box(x0=10, y0=10, x1=60, y1=60, confidence=0.5, label="knife")  # large: no crop


def _image() -> Image.Image:
    # Some detail inside the box, so that blur, black and mean all differ.
    image = Image.new("RGB", (100, 80), (200, 40, 40))
    for x in range(10, 60, 4):
        image.paste((10, 220, 30), (x, 10, x + 2, 60))
    return image


class Recording(ScriptedBackend):
    """Remembers the image of every masked query."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.masked: list[Image.Image] = []

    async def yes_no(self, queries: Any) -> list[YesNoResult]:
        self.masked += [
            q.image for q in queries if isinstance(q, YesNoQuery) and "#mask:" in str(q.image_key)
        ]
        return await super().yes_no(queries)


def _backend(key: str = "img") -> Recording:
    backend = Recording(answers(c=0.7))
    backend.script({("c", "img"): 0.7, ("c", f"{key}#mask:knife"): 0.05})
    return backend


@pytest.mark.parametrize("method", FILL_METHODS)
def test_the_options_fill_removes_the_box(method: str) -> None:
    backend = _backend()
    lock = make_lock(rule("r", {"any_of": ["c"], "objects": ["knife"]}))
    options = JudgeOptions(fill=method)  # type: ignore[arg-type]
    setup = Setup(  # no fill passed: the options' fill
        backend=backend,
        rules=lock.enabled_rules(),
        thresholds=rule_thresholds(lock, Thresholds()),
        options=options,
        priors=PriorCache(backend, None),
        locator=FakeLocator({"knife": BOX}),
    )
    image = _image()
    result = asyncio.run(judge_image(setup, image, "img"))
    assert result.rules[0].outcome == "violated"
    (masked,) = backend.masked
    assert masked.tobytes() == fill_box(image, BOX, method).tobytes()  # type: ignore[arg-type]


def test_default_fill_is_mean_and_unknown_fill_is_a_usage_error() -> None:
    assert JudgeOptions().fill == "mean"
    with pytest.raises(InputError, match="unknown fill 'sepia'"):
        JudgeOptions(fill="sepia")  # type: ignore[arg-type]


def _png(tmp_path: Path) -> Path:
    path = tmp_path / "x.png"
    _image().save(path)
    return path


@pytest.mark.parametrize("method", ["blur", "black"])
def test_judge_fill_reaches_the_masked_query_and_the_run_info(
    method: str, tmp_path: Path
) -> None:
    from judge.images import load_image

    path = _png(tmp_path)
    key = load_image(str(path)).sha256[:16]
    backend = Recording(answers(c=0.7))
    backend.script({("c", key): 0.7, ("c", None): 0.5, ("c", f"{key}#mask:knife"): 0.05})
    lock = make_lock(rule("r", {"any_of": ["c"], "objects": ["knife"]}))
    with Judge(
        lock, backend=backend, relevance="off", locator="off", fill=method, store=tmp_path / "s"
    ) as judge:
        assert judge.options.fill == method
        judge._locator = FakeLocator({"knife": BOX})  # an OWLv2 stand-in, before first use
        verdict = judge.judge(str(path))
    assert verdict.outcome == "unsafe"
    assert verdict.run is not None and verdict.run.fill == method
    (masked,) = backend.masked
    assert masked.tobytes() == fill_box(_image(), BOX, method).tobytes()  # type: ignore[arg-type]


def test_run_info_has_no_fill_without_a_locator(tmp_path: Path) -> None:
    backend = ScriptedBackend(answers(c=0.95))
    lock = make_lock(rule("r", "c"))
    backend.script({("c", "*"): 0.95})
    with Judge(lock, backend=backend, relevance="off", locator="off", store=tmp_path / "s") as j:
        verdict = j.judge(str(_png(tmp_path)))
    assert verdict.run is not None and verdict.run.fill is None


def test_judge_cli_fill(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import judge.commands.judge_cmd as judge_cmd

    seen: list[JudgeOptions] = []

    class Stop(Exception):
        pass

    def fake_judge(*args: Any, options: JudgeOptions, **kwargs: Any) -> Any:
        seen.append(options)
        raise Stop

    monkeypatch.setattr(judge_cmd, "Judge", fake_judge)
    policy, image = make_policy(tmp_path), _png(tmp_path)
    with pytest.raises(Stop):
        cli("run", str(image), "--constitution", str(policy), "--fill", "blur", *FAKE[:2])
    assert seen[0].fill == "blur"
    assert cli("run", str(image), "--constitution", str(policy), "--fill", "sepia") == 2


def test_fill_ablations_and_the_runs_fill() -> None:
    assert {"fill-blur", "fill-black"} <= set(ABLATIONS)
    assert "fill-mean" not in ABLATIONS  # the default is the full method itself
    assert {"fill-blur", "fill-black"} <= set(parse_ablations("all"))
    assert method_options("full", "black").fill == "black"
    assert method_options("no-debias", "blur") == JudgeOptions(debias=False, fill="blur")
    assert method_options("fill-blur", "black").fill == "blur"  # an ablation keeps its own


def test_eval_fill_and_fill_ablations(tmp_path: Path) -> None:
    policy, data = make_policy(tmp_path), make_set(tmp_path)
    out = tmp_path / "out"
    args = ["eval", str(data), "--constitution", str(policy), "--out", str(out)]
    code = cli(*args, "--fill", "black", "--ablations", "fill-blur,fill-black,no-debias",
               "--bootstrap", "10", *FAKE)
    assert code == 0
    report = json.loads((out / "report.json").read_text())
    fills = {m["method"]: m["run"]["method_config"]["options"]["fill"] for m in report["methods"]}
    assert fills == {"full": "black", "fill-blur": "blur", "fill-black": "black",
                     "no-debias": "black"}
    assert cli(*args, "--fill", "sepia", *FAKE) == 2
