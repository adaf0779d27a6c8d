"""A located region: what the locator finds, masking fills and crops, and a verdict shows.

It lives here, below the engine, because the vision stages make and use boxes and the
engine only records them (`judge.engine.verdict` re-exports it for the public API).
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Box(BaseModel):
    """A box in the pixel coordinates of the image as the model sees it."""

    model_config = ConfigDict(extra="forbid")

    x0: float
    y0: float
    x1: float
    y1: float
    confidence: float
    label: str

    def area(self) -> float:
        return max(0.0, self.x1 - self.x0) * max(0.0, self.y1 - self.y0)
