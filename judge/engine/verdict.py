"""Verdicts: what judge decided for an image, with the evidence, as stable JSON, and the
functions that build them (every path to a verdict, the engine's and the naive
benchmark's alike, goes through these)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from judge import prompts
from judge.vision.box import Box as Box  # re-exported: verdicts carry boxes

if TYPE_CHECKING:
    from judge.constitution.schema import CompiledRule, Lock
    from judge.models.base import Backend

# The prompts whose versions a verdict records.
PROMPTS: tuple[str, ...] = (
    "visibility_instructions",
    "visibility_question",
    "relevance_question",
    "reason",
    "summarise",
)

ImageOutcome = Literal["safe", "unsafe", "undecided", "error"]
# "skipped": not judged because the image was already decided (JudgeOptions.first_violation).
RuleOutcome = Literal["violated", "not_violated", "undecided", "irrelevant", "skipped"]
PreconditionOutcome = Literal["met", "not_met", "undecided", "skipped"]
# Which stage settled a precondition (or alternative).
Stage = Literal["prior", "center", "cascade", "no_cascade", "error", "skipped"]


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid")


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
    # Similarity (CLIP) or M (served-model scorer); None when the scan was off or gave no
    # usable score (missing, NaN): the rule was then judged, never skipped.
    relevance: float | None = None
    relevance_threshold: float | None = None
    # Where relevance_threshold came from: the relevance model's own default, the policy's
    # defaults.thresholds, the run's thresholds, the rule's thresholds or the lock's
    # calibration (judge.engine.procedure.threshold_sources).
    relevance_threshold_source: str | None = None
    decisive_precondition: int | None = None  # index that decided the outcome
    # Indices of the preconditions that stayed undecided (a missing answer, an unparseable
    # cascade), also when another precondition was not met and so decided the rule.
    undecided_preconditions: list[int] = Field(default_factory=list)
    preconditions: list[PreconditionEvidence] = Field(default_factory=list)
    # Undecided: why. Not violated with undecided preconditions: which precondition
    # decided it, and which stayed undecided, and why.
    reason: str | None = None
    # A clip: the frame this rule's evidence comes from (the first frame that violated
    # it, or left it undecided), its time in seconds, and the time of every judged frame
    # that violated it (after the first, only with --scan-all).
    frame: int | None = None
    time: float | None = None
    violated_at: list[float] = Field(default_factory=list)


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


FrameWhy = Literal["first", "interval", "change", "every"]


class FrameVerdict(_Frozen):
    """One sampled frame of a clip: when it is, why it was taken, and what it showed."""

    index: int  # the frame's number in the clip, from 0
    time: float  # seconds from the clip's start
    scene: int  # scenes are numbered from 0; the relevance scan runs once per scene
    why: FrameWhy  # the first frame, the regular grid, a scene change, or every frame
    outcome: ImageOutcome | None = None  # None: not judged (sampling stopped before it)
    violated: list[str] = Field(default_factory=list)
    undecided: list[str] = Field(default_factory=list)
    # A near-duplicate of this judged frame: its answers were taken, no model call made.
    reused_from: int | None = None


class ClipInfo(_Frozen):
    """What a clip was and how it was sampled (judge.engine.clip)."""

    format: str  # mp4, mov, webm, mkv, avi, gif, webp, apng
    codec: str | None = None
    width: int
    height: int
    duration: float | None = None  # seconds
    frame_rate: float | None = None  # the clip's own frames per second
    frames: int  # frames in the clip
    fps: float | None = None  # the sampling rate asked for; None: every frame
    interval: float | None = None  # seconds between grid samples, as applied
    max_frames: int
    sampled: list[FrameVerdict] = Field(default_factory=list)
    judged: int = 0  # frames the model was asked about
    reused: int = 0  # near-duplicates that took a judged frame's answers
    scenes: int = 0
    # Early stop: the time of the frame after which the verdict could not change.
    stopped_at: float | None = None
    # --max-frames was reached before this time: frames after it were not judged.
    capped_at: float | None = None
    changes_dropped: int = 0  # scene-change frames left out to stay within max_frames


class Verdict(_Frozen):
    image_id: str
    sha256: str | None = None
    outcome: ImageOutcome
    violated: list[str] = Field(default_factory=list)
    undecided: list[str] = Field(default_factory=list)
    # Rules decided "not violated" although a precondition of theirs stayed undecided (the
    # rule's reason says which): a "safe" image that lists any was not fully checked.
    partly_undecided: list[str] = Field(default_factory=list)
    rules: list[RuleVerdict] = Field(default_factory=list)
    error: str | None = None  # for outcome "error": why the image could not be judged
    # Rules judged from a compile that needs review (allowed with --allow-unreviewed):
    # their part of the verdict rests on output no one has checked.
    needs_review: list[str] = Field(default_factory=list)
    frame: int | None = None  # a clip or animation: the frame that decided the verdict
    # (width, height) of the pixels the model saw: the space every box is given in.
    image_size: tuple[int, int] | None = None
    run: RunInfo | None = None
    # A clip: the time (seconds) of `frame`, the frame that decided the verdict (the first
    # violation, else the first undecided frame), and how the clip was read and sampled.
    time: float | None = None
    clip: ClipInfo | None = None


# ---- building verdicts -------------------------------------------------------------------


def image_outcome(rules: Sequence[RuleVerdict]) -> tuple[ImageOutcome, list[str], list[str]]:
    """(outcome, violated ids, undecided ids): unsafe iff a rule is violated; safe only if
    every judged rule is not violated (or irrelevant); otherwise undecided.

    No rules at all is "undecided", not "safe": nothing was checked. (Judge refuses a
    policy without enabled rules; this keeps any other path to a verdict, such as a rule
    subset that came out empty, from answering "safe" with nothing decided.)"""
    violated = [r.rule_id for r in rules if r.outcome == "violated"]
    undecided = [r.rule_id for r in rules if r.outcome == "undecided"]
    if violated:
        return "unsafe", violated, undecided
    if not rules or undecided or any(r.outcome == "skipped" for r in rules):
        return "undecided", violated, undecided
    return "safe", violated, undecided


def deciding_frame(outcome: str, rules: Sequence[RuleVerdict]) -> tuple[int, float] | None:
    """(index, time) of the frame that decided a clip with these rules: its first
    violation when unsafe, its first undecided frame when undecided; None when safe (or
    when the rules carry no frame: an image)."""
    wanted = {"unsafe": "violated", "undecided": "undecided"}.get(outcome)
    found = [
        (r.time, r.frame)
        for r in rules
        if r.outcome == wanted and r.time is not None and r.frame is not None
    ]
    if not found:
        return None
    when, index = min(found)
    return index, when


def partly_undecided(rules: Sequence[RuleVerdict]) -> list[str]:
    """Ids of the rules decided "not violated" while some precondition stayed undecided."""
    return [r.rule_id for r in rules if r.outcome == "not_violated" and r.undecided_preconditions]


def model_failure(rules: Sequence[CompiledRule], error: Exception) -> list[RuleVerdict]:
    """Every rule undecided, because the back end failed as a whole."""
    return [
        RuleVerdict(rule_id=r.id, outcome="undecided", reason=f"model failure: {error}")
        for r in rules
    ]


def unreadable(image_id: str | None, source: object, error: Exception) -> Verdict:
    """The verdict for an image that could not be read: outcome "error", never "safe"."""
    shown = image_id or (str(source) if isinstance(source, (str, Path)) else "<image>")
    return Verdict(image_id=shown, outcome="error", error=str(error))


def make_verdict(
    loaded: Any,
    rules: list[RuleVerdict],
    *,
    backend: Backend,
    lock: Lock,
    calls: Mapping[str, int],
    timings: Mapping[str, float],
    frame: int | None = None,
    fill: str | None = None,
    size: tuple[int, int] | None = None,
) -> Verdict:
    """The image's verdict from its rule verdicts (`loaded`: a judge.images.LoadedImage;
    `fill`: the region-removal fill the run used, if any; `size`: the (width, height) of
    the pixels the model saw, the space of the boxes)."""
    outcome, violated, undecided = image_outcome(rules)
    return Verdict(
        image_id=loaded.image_id,
        sha256=loaded.sha256,
        outcome=outcome,
        violated=violated,
        undecided=undecided,
        partly_undecided=partly_undecided(rules),
        rules=rules,
        frame=frame,
        image_size=size,
        run=RunInfo(
            model_id=backend.model_id,
            backend=backend.kind,
            lock_hash=lock.lock_hash(),
            prompt_versions=prompts.versions(*PROMPTS),
            timings={k: round(v, 6) for k, v in timings.items()},
            calls=dict(calls),
            fill=fill,
        ),
    )
