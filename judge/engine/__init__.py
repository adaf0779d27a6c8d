"""The engine: the decision procedure of CLUE (stages 3-5), the Judge, and verdicts."""

from __future__ import annotations

from judge.engine.judge import ImageInput, Judge, load_thresholds
from judge.engine.procedure import JudgeOptions
from judge.engine.verdict import (
    AlternativeEvidence,
    Box,
    PreconditionEvidence,
    RuleVerdict,
    RunInfo,
    Verdict,
    image_outcome,
)

__all__ = [
    "AlternativeEvidence",
    "Box",
    "ImageInput",
    "Judge",
    "JudgeOptions",
    "PreconditionEvidence",
    "RuleVerdict",
    "RunInfo",
    "Verdict",
    "image_outcome",
    "load_thresholds",
]
