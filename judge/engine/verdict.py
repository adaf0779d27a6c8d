"""Verdicts: what judge decided for an image, with the evidence, as stable JSON."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

ImageOutcome = Literal["safe", "unsafe", "undecided", "error"]
# "skipped": not judged because the image was already decided (JudgeOptions.first_violation).
RuleOutcome = Literal["violated", "not_violated", "undecided", "irrelevant", "skipped"]
PreconditionOutcome = Literal["met", "not_met", "undecided", "skipped"]
# Which stage settled a precondition (or alternative).
Stage = Literal["prior", "center", "cascade", "no_cascade", "error", "skipped"]


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Box(_Frozen):
    """A box in the pixel coordinates of the image as the model sees it."""

    x0: float
    y0: float
    x1: float
    y1: float
    confidence: float
    label: str

    def area(self) -> float:
        return max(0.0, self.x1 - self.x0) * max(0.0, self.y1 - self.y0)


class AlternativeEvidence(_Frozen):
    statement: str
    outcome: PreconditionOutcome
    stage: Stage
    m: float | None = None  # M(x, c)
    prior: float | None = None  # M(None, c)
    d: float | None = None  # M(x,c) - M(None,c)
    a1: float | None = None
    a2: float | None = None
    beta: float | None = None
    masked_m: float | None = None  # M(x minus region, c)
    box: Box | None = None
    cropped: bool = False  # the crop of a small box replaced the image
    rationale: str | None = None
    error: str | None = None


class PreconditionEvidence(_Frozen):
    index: int
    outcome: PreconditionOutcome
    alternatives: list[AlternativeEvidence] = Field(default_factory=list)


class RuleVerdict(_Frozen):
    rule_id: str
    outcome: RuleOutcome
    relevance: float | None = None  # similarity (CLIP) or M (served-model scorer)
    relevance_threshold: float | None = None
    decisive_precondition: int | None = None  # index that decided the outcome
    preconditions: list[PreconditionEvidence] = Field(default_factory=list)
    reason: str | None = None  # for undecided: why


class RunInfo(_Frozen):
    model_id: str
    backend: str
    lock_hash: str
    prompt_versions: dict[str, int]
    timings: dict[str, float] = Field(default_factory=dict)  # seconds per stage
    calls: dict[str, int] = Field(default_factory=dict)  # model calls by kind
    # How stage 4b removed the central region ("mean", "blur", "black"); None when it was
    # off (no locator, or JudgeOptions.center False).
    fill: str | None = None


class Verdict(_Frozen):
    image_id: str
    sha256: str | None = None
    outcome: ImageOutcome
    violated: list[str] = Field(default_factory=list)
    undecided: list[str] = Field(default_factory=list)
    rules: list[RuleVerdict] = Field(default_factory=list)
    error: str | None = None  # for outcome "error": why the image could not be judged
    # Rules judged from a compile that needs review (allowed with --allow-unreviewed):
    # their part of the verdict rests on output no one has checked.
    needs_review: list[str] = Field(default_factory=list)
    frame: int | None = None  # for animated images: which frame
    run: RunInfo | None = None
