"""The decision thresholds of CLUE, with the paper's defaults.

For a precondition c with language prior p = M(None, c) and d = M(x, c) - p:
    d < -a1_scale * p        -> not met
    d >  a2_scale * (1 - p)  -> met
    otherwise, if the central object's box is found (confidence > box_confidence):
    M(x, c) - M(x minus box, c) > beta -> met
A box smaller than crop_area of the image replaces the image by its crop. A rule is
judged only if its relevance score exceeds `relevance`.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class Thresholds(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    a1_scale: float = Field(0.3, ge=0.0, le=10.0, description="a1 = -a1_scale * M(None,c)")
    a2_scale: float = Field(0.8, ge=0.0, le=10.0, description="a2 = a2_scale * (1 - M(None,c))")
    beta: float = Field(0.6, ge=-1.0, le=1.0, description="masked drop that means 'met'")
    relevance: float = Field(0.22, ge=-1.0, le=1.0, description="CLIP cosine threshold t")
    relevance_vlm: float = Field(
        0.5, ge=0.0, le=1.0, description="threshold on M for the served-model relevance scorer"
    )
    box_confidence: float = Field(0.05, ge=0.0, le=1.0, description="OWLv2 box confidence")
    crop_area: float = Field(0.01, ge=0.0, le=1.0, description="box area share below which to crop")

    def a1(self, prior: float) -> float:
        return -self.a1_scale * prior

    def a2(self, prior: float) -> float:
        return self.a2_scale * (1.0 - prior)

    def merged(self, overrides: ThresholdOverrides | None) -> Thresholds:
        """These thresholds with a rule's overrides applied."""
        if overrides is None:
            return self
        changes = overrides.model_dump(exclude_none=True)
        return self.model_copy(update=changes) if changes else self


class ThresholdOverrides(BaseModel):
    """Per-rule (or per-run) overrides: any field left out keeps the default."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    a1_scale: float | None = Field(None, ge=0.0, le=10.0)
    a2_scale: float | None = Field(None, ge=0.0, le=10.0)
    beta: float | None = Field(None, ge=-1.0, le=1.0)
    relevance: float | None = Field(None, ge=-1.0, le=1.0)
    relevance_vlm: float | None = Field(None, ge=0.0, le=1.0)
    box_confidence: float | None = Field(None, ge=0.0, le=1.0)
    crop_area: float | None = Field(None, ge=0.0, le=1.0)
