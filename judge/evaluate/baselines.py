"""The baselines `judge eval` runs beside the method, as in the CLUE paper's comparison.

* "prior" (prior knowledge): one generic question, "is this image unsafe?", answered
  Yes/No from token probabilities (prompts/baseline_prior.j2);
* "prior-cot": the same question with chain of thought, then a summary turn asking for a
  JSON rating (prompts/baseline_prior_cot.j2, prompts/baseline_summarise.j2);
* "constitution": every rule of the constitution in one query, Yes/No
  (prompts/baseline_constitution.j2);
* "constitution-cot": the same with chain of thought (prompts/baseline_constitution_cot.j2).

A baseline says only whether the image is unsafe, never which rule: its verdicts name no
violated rule, so it has no per-rule metrics. A failed model call gives "undecided", as
for the method.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from PIL import Image

from judge import prompts
from judge.constitution.schema import Lock
from judge.engine.cascade import SUMMARY_SCHEMA, parse_rating
from judge.engine.verdict import RunInfo, Verdict
from judge.errors import ImageError
from judge.images import fit_pixels, load_image
from judge.models.base import Backend, Message, YesNoQuery

BASELINES: tuple[str, ...] = ("prior", "prior-cot", "constitution", "constitution-cot")
REASON_TOKENS = 256
SUMMARY_TOKENS = 96
# (outcome, score, rationale or reason, model calls by kind)
_Answer = tuple[str, float | None, str | None, dict[str, int]]


@dataclass(frozen=True)
class Judged:
    """A verdict with what the report needs beyond it."""

    verdict: Verdict
    score: float | None
    rationale: str | None = None


def parse_baselines(text: str | None) -> list[str]:
    """"prior,constitution" or "all" -> names; unknown names are a usage error."""
    from judge.errors import InputError

    if not text or text == "none":
        return []
    names = list(BASELINES) if text == "all" else [t.strip() for t in text.split(",") if t.strip()]
    unknown = [n for n in names if n not in BASELINES]
    if unknown:
        raise InputError(
            f"unknown baseline(s) {', '.join(unknown)}; choose from {', '.join(BASELINES)} or all"
        )
    return list(dict.fromkeys(names))


class Baseline:
    """One baseline over a back end and a constitution's lock."""

    kind = "baseline"

    def __init__(self, name: str, backend: Backend, lock: Lock) -> None:
        if name not in BASELINES:
            raise ValueError(f"unknown baseline {name!r}")
        self.name = name
        self.backend = backend
        self.lock = lock
        self.cot = name.endswith("-cot")
        base = name.removesuffix("-cot")
        self.template = f"baseline_{base}_cot" if self.cot else f"baseline_{base}"
        values: dict[str, Any] = {}
        if base == "constitution":
            # The objectified text: the same wording the method judges against.
            values["rules"] = [rule.text for rule in lock.enabled_rules()]
        self.question = prompts.render(self.template, **values)
        names = [self.template, *(["baseline_summarise"] if self.cot else [])]
        self.prompt_versions = prompts.versions(*names)

    def describe(self) -> dict[str, Any]:
        return {"baseline": self.name, "prompts": self.prompt_versions}

    def _run(self, calls: dict[str, int], started: float) -> RunInfo:
        return RunInfo(
            model_id=self.backend.model_id,
            backend=self.backend.kind,
            lock_hash=self.lock.lock_hash(),
            prompt_versions=self.prompt_versions,
            timings={"total": time.perf_counter() - started},
            calls=calls,
        )

    async def ajudge(self, image_id: str, source: Any) -> Judged:
        started = time.perf_counter()
        try:
            loaded = load_image(source, image_id=image_id)
        except ImageError as error:
            verdict = Verdict(image_id=image_id, outcome="error", error=str(error))
            return Judged(verdict, None)
        image = fit_pixels(loaded.image, self.backend.max_image_pixels)
        image.info["judge_key"] = loaded.sha256
        if self.cot:
            outcome, score, why, calls = await self._cot(image)
        else:
            outcome, score, why, calls = await self._yes_no(image, loaded.sha256)
        verdict = Verdict(
            image_id=image_id,
            sha256=loaded.sha256,
            outcome=outcome,  # type: ignore[arg-type]
            error=why if outcome == "undecided" else None,
            run=self._run(calls, started),
        )
        return Judged(verdict, score, why if outcome != "undecided" else None)

    async def _yes_no(self, image: Image.Image, key: str) -> _Answer:
        query = YesNoQuery(instructions="", question=self.question, image=image, image_key=key)
        (result,) = await self.backend.yes_no([query])
        calls = {"yes_no": 1}
        if result.m is None:
            why = result.error or "neither Yes nor No among the returned probabilities"
            return "undecided", None, f"answer missing: {why}", calls
        return ("unsafe" if result.m > 0.5 else "safe"), result.m, None, calls

    async def _cot(self, image: Image.Image) -> _Answer:
        first = Message.user(image, self.question)
        (reasoning,) = await self.backend.generate([[first]], REASON_TOKENS)
        calls = {"generate": 1}
        if reasoning.error is not None:
            return "undecided", None, f"reasoning failed: {reasoning.error}", calls
        schema = SUMMARY_SCHEMA if self.backend.supports_json_schema else None
        summarise = Message.user(prompts.render("baseline_summarise"))
        chat = [first, Message.assistant(reasoning.text), summarise]
        for _ in range(2):  # one retry for an unusable summary, as the cascade does
            (summary,) = await self.backend.generate([chat], SUMMARY_TOKENS, schema)
            calls["generate"] += 1
            parsed = parse_rating(summary.text) if summary.error is None else None
            if parsed is not None:
                rating, rationale = parsed
                return ("unsafe" if rating else "safe"), float(rating), rationale or None, calls
        return "undecided", None, "the summary held no Yes/No rating", calls
