"""judge: a zero-shot image-safety judge (CLUE) over a multimodal LLM."""

from __future__ import annotations

__version__ = "0.1.0"
