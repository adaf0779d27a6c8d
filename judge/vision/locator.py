"""Stage 4b, part 1: find the central object words of the preconditions with OWLv2.

One forward pass per image, with every word as a text query; for each word the most
confident box. Boxes are in the pixel coordinates of the image given (EXIF-transposed by
`judge.images`, so what the model sees).

Coordinates: OWLv2's processor pads the image at the bottom and right to a square of side
max(width, height), then resizes that square. Its predicted boxes are normalised to the
padded square, so they scale by that side (not by width and height separately) and are
then clipped to the image; a box lying wholly in the padding is no detection.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from PIL import Image

from judge.errors import InputError
from judge.vision._hf import load_pretrained, pick_device, require_hf
from judge.vision.box import Box
from judge.vision.masking import shrink

DEFAULT_OWLV2 = "google/owlv2-base-patch16-ensemble"
DEFAULT_QUERY = "a photo of a {}"


class Owlv2Locator:
    """Open-vocabulary box finder.

    Args:
        model: hub id or local `save_pretrained` folder (model and processor).
        query_template: how a word becomes a text query. None: the model config's
            `judge_query_template` if it has one (a model trained on bare words, like the
            toy OWLv2, saves "{}" there), else OWL-ViT's "a photo of a {}".
        device: torch device; None picks CUDA when present, else CPU.
    """

    def __init__(
        self,
        model: str | Path = DEFAULT_OWLV2,
        *,
        query_template: str | None = None,
        device: str | None = None,
    ) -> None:
        require_hf("locator")
        from transformers import AutoProcessor, Owlv2ForObjectDetection

        self.model_id = str(model)
        what, option = "locator model", "--locator /path/to/owlv2"
        self.device = pick_device(device)
        self._model: Any = load_pretrained(
            Owlv2ForObjectDetection.from_pretrained, model, what=what, option=option
        )
        self._model.to(self.device).eval()
        self._processor: Any = load_pretrained(
            AutoProcessor.from_pretrained, model, what=what, option=option
        )
        if query_template is None:
            saved = getattr(self._model.config, "judge_query_template", None)
            query_template = saved if isinstance(saved, str) else DEFAULT_QUERY
        if query_template.count("{}") != 1:
            raise InputError(f"query_template {query_template!r} needs one '{{}}' for the word")
        self.query_template = query_template
        size = getattr(self._processor.image_processor, "size", None) or {}
        self._input_side = int(size.get("height", 960))
        self._max_len = int(self._model.config.text_config.max_position_embeddings)
        self._lock = threading.Lock()

    def locate(
        self, image: Image.Image, words: Sequence[str], min_confidence: float = 0.0
    ) -> dict[str, Box | None]:
        """The most confident box of each word (label = the word), or None when no box
        inside the image reaches `min_confidence`."""
        unique = list(dict.fromkeys(w for w in words if w.strip()))
        out: dict[str, Box | None] = {w: None for w in words}
        if not unique:
            return out
        with self._lock:
            logits, boxes = self._forward(image, unique)
        found = best_boxes(logits, boxes, image.size, unique, min_confidence)
        out.update(found)
        return out

    def _forward(self, image: Image.Image, queries: list[str]) -> tuple[Any, Any]:
        import torch

        # Shrinking first keeps the aspect ratio, so the normalised boxes are unchanged.
        rgb = shrink(image.convert("RGB"), 2 * self._input_side)
        texts = [self.query_template.replace("{}", w) for w in queries]
        # Queries are padded to, and cut at, the text tower's length (16 for OWLv2).
        inputs = self._processor(
            text=[texts],
            images=rgb,
            padding="max_length",
            truncation=True,
            max_length=self._max_len,
            return_tensors="pt",
        )
        inputs = {k: v.to(self.device) for k, v in inputs.items()}
        with torch.inference_mode():
            outputs = self._model(**inputs)
        return outputs.logits[0].float().cpu(), outputs.pred_boxes[0].float().cpu()


def to_pixel_boxes(pred_boxes: Any, size: tuple[int, int]) -> Any:
    """OWLv2's (cx, cy, w, h) boxes, normalised to the padded square, as (x0, y0, x1, y1)
    pixels of an image of `size`, clipped to it."""
    import torch

    w, h = size
    side = float(max(w, h))
    cx, cy, bw, bh = pred_boxes.unbind(-1)
    corners = torch.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], dim=-1) * side
    limits = torch.tensor([w, h, w, h], dtype=corners.dtype)
    return torch.minimum(corners.clamp(min=0.0), limits)


def best_boxes(
    logits: Any,
    pred_boxes: Any,
    size: tuple[int, int],
    words: Sequence[str],
    min_confidence: float = 0.0,
) -> dict[str, Box | None]:
    """For each word (query column of `logits`, shape [boxes, queries]) its most confident
    box with some area inside the image; None when there is none, or its confidence is
    under `min_confidence` or exactly 0 (a query OWLv2 masked as padding)."""
    import torch

    pixels = to_pixel_boxes(pred_boxes, size)
    inside = (pixels[:, 2] > pixels[:, 0]) & (pixels[:, 3] > pixels[:, 1])
    scores = torch.sigmoid(logits).masked_fill(~inside[:, None], -1.0)
    out: dict[str, Box | None] = {}
    for q, word in enumerate(words):
        best = int(torch.argmax(scores[:, q]))
        confidence = float(scores[best, q])
        if confidence <= 0.0 or confidence < min_confidence:
            out[word] = None
            continue
        x0, y0, x1, y1 = (float(v) for v in pixels[best])
        out[word] = Box(x0=x0, y0=y0, x1=x1, y1=y1, confidence=confidence, label=word)
    return out
