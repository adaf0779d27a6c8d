"""The constitution (authored YAML) and its lock (compiled YAML), as pydantic models.

Source form, e.g. `policy.yaml`:

    name: my-policy
    version: "1"
    description: ...
    defaults:                      # optional
      model: Qwen/Qwen2.5-VL-7B-Instruct
      thresholds: {relevance: 0.22}
    rules:
      - id: fatal-injury           # slug, unique
        text: Images must not show a person with injuries that indicate imminent death.
        topic: fatal injuries      # optional: what the VLM relevance scan asks about
        category: violence         # optional
        severity: high             # optional: low | medium | high | critical
        enabled: true              # optional
        thresholds: {beta: 0.5}    # optional per-rule overrides
        preconditions:             # optional, hand-written; AND of the items
          - people are visible                                  # a statement
          - [the body has bloody injuries, the body is burnt]   # OR alternatives
          - any_of: [the throat is cut]                         # mapping form, with
            objects: [throat]                                   # central object words

Lock form, `policy.lock.yaml`: see `Lock`.
"""

from __future__ import annotations

import hashlib
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from judge.thresholds import ThresholdOverrides

Slug = Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9._-]{0,63}$")]
Text = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=2000)]
Severity = Literal["low", "medium", "high", "critical"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PreconditionSpec(_Strict):
    """One precondition: met if any alternative is visible."""

    any_of: list[Text] = Field(min_length=1, max_length=16)
    objects: list[Text] = Field(default_factory=list, max_length=8)

    @model_validator(mode="before")
    @classmethod
    def _short_forms(cls, value: Any) -> Any:
        # "statement" and ["alt", "alt"] are shorthands for {any_of: [...]}.
        if isinstance(value, str):
            return {"any_of": [value]}
        if isinstance(value, list):
            return {"any_of": value}
        if isinstance(value, dict) and "statement" in value and "any_of" not in value:
            value = dict(value)
            value["any_of"] = [value.pop("statement")]
        return value


class Defaults(_Strict):
    model: str | None = None
    backend: str | None = None
    relevance_model: str | None = None
    locator_model: str | None = None
    thresholds: ThresholdOverrides | None = None


class RuleSpec(_Strict):
    id: Slug
    text: Text
    # A short phrase naming what the rule is about ("nudity", "a syringe or needle"):
    # the VLM relevance scan asks whether the image shows anything related to it.
    topic: Text | None = Field(default=None, max_length=120)
    category: str | None = None
    severity: Severity | None = None
    enabled: bool = True
    thresholds: ThresholdOverrides | None = None
    preconditions: list[PreconditionSpec] | None = Field(default=None, min_length=1, max_length=16)

    def text_sha256(self) -> str:
        """Hash of what the compiler reads: a change here means re-compiling this rule."""
        payload = self.text + "\x00" + repr(
            [p.model_dump() for p in self.preconditions] if self.preconditions else None
        )
        return hashlib.sha256(payload.encode("utf-8")).hexdigest()


class ConstitutionSpec(_Strict):
    name: Slug
    version: str = "1"
    description: str = ""
    defaults: Defaults = Field(default_factory=Defaults)
    rules: list[RuleSpec] = Field(min_length=1, max_length=1000)


# ---- the lock -----------------------------------------------------------------------


class Objectiveness(_Strict):
    score: int = Field(ge=1, le=10)
    explanation: str = ""
    rewritten: bool = False
    reached: bool = True  # False: never reached 9 within the retry limit; author must review
    attempts: int = 0


class CompiledRule(_Strict):
    id: Slug
    source_text: str  # the author's text
    text: str  # the objectified text: what relevance and the baselines use
    text_sha256: str  # RuleSpec.text_sha256() of the source this was compiled from
    topic: Text | None = None  # the relevance topic; None in locks made before topics
    category: str | None = None
    severity: Severity | None = None
    enabled: bool = True
    thresholds: ThresholdOverrides | None = None
    objectiveness: Objectiveness | None = None
    extraction: Literal["llm", "hand-written", "fallback"] = "hand-written"
    preconditions: list[PreconditionSpec] = Field(min_length=1)


class Calibration(_Strict):
    dataset_sha256: str
    objective: str
    relevance: float | None = None
    rules: dict[str, ThresholdOverrides] = Field(default_factory=dict)


class Lock(_Strict):
    lock_version: Literal[1] = 1
    name: str
    source: str  # file name of the constitution, relative to the lock
    source_sha256: str
    compiler_model: str
    prompt_versions: dict[str, int] = Field(default_factory=dict)
    compiled_at: str
    defaults: Defaults = Field(default_factory=Defaults)
    calibration: Calibration | None = None
    rules: list[CompiledRule]

    def lock_hash(self) -> str:
        """A stable hash of the compiled content, recorded in every verdict."""
        body = self.model_dump(mode="json", exclude={"compiled_at"})
        import json

        return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:16]

    def enabled_rules(self) -> list[CompiledRule]:
        return [r for r in self.rules if r.enabled]
