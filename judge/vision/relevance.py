"""Stage 3, the relevance scan: is a rule about anything in this image at all?

Two scorers:

* `ClipRelevance`: cosine similarity of CLIP (or SigLIP) image and rule-text embeddings,
  computed in the judge process; a rule is judged only if it exceeds `t` (paper: 0.22 with
  `openai/clip-vit-base-patch16`). SigLIP cosines live in another range: calibrate `t`.
* "vlm": for deployments with only a served judge model, one Yes/No query per rule about
  the rule's short topic ("does the image show anything related to nudity?"), asked by
  the engine with the same instructions+image prefix as the visibility queries
  (`judge.queries.relevance_query`). Not in the paper: see docs/deviations.md.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from PIL import Image

from judge.errors import InputError
from judge.vision._hf import first_tensor, load_pretrained, pick_device, require_hf
from judge.vision.masking import mean_colour, shrink

if TYPE_CHECKING:
    import torch

DEFAULT_CLIP = "openai/clip-vit-base-patch16"
DEFAULT_SIGLIP = "google/siglip-base-patch16-224"

EncoderKind = Literal["clip", "siglip"]
_TEXT_CACHE_SIZE = 4096
# Images are shrunk to this side before padding: CLIP/SigLIP see 224-384 px anyway.
_LONGEST = 1024


class ClipRelevance:
    """Relevance by CLIP/SigLIP embedding similarity.

    Args:
        model: hub id or local folder (a `save_pretrained` folder with its processor).
        kind: "clip" or "siglip"; None reads it from the model's config.
        device: torch device; None picks CUDA when present, else CPU.
    """

    def __init__(
        self,
        model: str | Path = DEFAULT_CLIP,
        kind: EncoderKind | None = None,
        *,
        device: str | None = None,
    ) -> None:
        require_hf("relevance scan")
        from transformers import AutoConfig, AutoImageProcessor, AutoTokenizer

        self.model_id = str(model)
        option = f"--relevance {kind or 'clip'}:/path/to/model"
        what = "relevance model"
        config = load_pretrained(AutoConfig.from_pretrained, model, what=what, option=option)
        found = str(getattr(config, "model_type", ""))
        if found not in ("clip", "siglip"):
            raise InputError(f"{what} {self.model_id!r} is a {found!r} model, not CLIP or SigLIP")
        if kind is not None and kind != found:
            raise InputError(
                f"{what} {self.model_id!r} is a {found} model; name it as {found}:{self.model_id}"
            )
        self.kind: EncoderKind = "siglip" if found == "siglip" else "clip"
        if self.kind == "clip":
            from transformers import CLIPModel as ModelClass
        else:
            from transformers import SiglipModel as ModelClass  # type: ignore[assignment]
        self.device = pick_device(device)
        self._model: Any = load_pretrained(
            ModelClass.from_pretrained, model, what=what, option=option
        )
        self._model.to(self.device).eval()
        self._images: Any = load_pretrained(
            AutoImageProcessor.from_pretrained, model, what=what, option=option
        )
        self._tokenizer: Any = load_pretrained(
            AutoTokenizer.from_pretrained, model, what=what, option=option
        )
        self._max_len = int(self._model.config.text_config.max_position_embeddings)
        self._texts: OrderedDict[str, torch.Tensor] = OrderedDict()
        self._lock = threading.Lock()

    def score(self, image: Image.Image, texts: Sequence[str]) -> list[float]:
        """Cosine similarity of `image` with each text, in order."""
        if not texts:
            return []
        with self._lock:
            image_emb = self.image_embedding(image)
            text_emb = self.text_embeddings(texts)
        return [float(v) for v in (text_emb @ image_emb).tolist()]

    def image_embedding(self, image: Image.Image) -> torch.Tensor:
        """The unit-norm embedding of `image`."""
        import torch

        pixels = self._images(images=[self._square(image)], return_tensors="pt")["pixel_values"]
        with torch.inference_mode():
            out = first_tensor(self._model.get_image_features(pixel_values=pixels.to(self.device)))
        return torch.nn.functional.normalize(out[0].float(), dim=-1).cpu()

    def text_embeddings(self, texts: Sequence[str]) -> torch.Tensor:
        """Unit-norm embeddings of `texts` (rows), each computed once and cached."""
        import torch

        missing = list(dict.fromkeys(t for t in texts if t not in self._texts))
        if missing:
            # SigLIP was trained on texts padded to the full length; CLIP pools at the
            # end token, so padding to the longest is enough.
            padding = "max_length" if self.kind == "siglip" else True
            batch = self._tokenizer(
                missing,
                padding=padding,
                truncation=True,
                max_length=self._max_len,
                return_tensors="pt",
            )
            inputs = {"input_ids": batch["input_ids"].to(self.device)}
            if self.kind == "clip" and "attention_mask" in batch:
                inputs["attention_mask"] = batch["attention_mask"].to(self.device)
            with torch.inference_mode():
                out = first_tensor(self._model.get_text_features(**inputs))
            for text, row in zip(
                missing, torch.nn.functional.normalize(out.float(), dim=-1), strict=True
            ):
                self._texts[text] = row.cpu()
        for text in texts:
            self._texts.move_to_end(text)
        while len(self._texts) > _TEXT_CACHE_SIZE:
            self._texts.popitem(last=False)
        return torch.stack([self._texts[t] for t in texts])

    def _square(self, image: Image.Image) -> Image.Image:
        # CLIP's processor centre-crops to a square, which would drop the sides of a wide
        # image (and whatever unsafe content is there). Pad to a square with the image's
        # mean colour instead, so the whole image is scored.
        rgb = shrink(image.convert("RGB"), _LONGEST)
        if not getattr(self._images, "do_center_crop", False) or rgb.width == rgb.height:
            return rgb
        side = max(rgb.size)
        canvas = Image.new("RGB", (side, side), mean_colour(rgb))
        canvas.paste(rgb, ((side - rgb.width) // 2, (side - rgb.height) // 2))
        return canvas


def make_relevance(spec: str | None) -> ClipRelevance | Literal["vlm"] | None:
    """A scorer from a `--relevance` value: "clip:<id|path>", "siglip:<id|path>", "vlm",
    "off", or a bare id/path (kind read from its config). None means the default CLIP."""
    if spec is None or spec == "clip":
        return ClipRelevance(DEFAULT_CLIP, "clip")
    if spec == "siglip":
        return ClipRelevance(DEFAULT_SIGLIP, "siglip")
    if spec == "off":
        return None
    if spec == "vlm":
        return "vlm"  # asked of the judge model by the engine: nothing to load here
    kind, sep, rest = spec.partition(":")
    if sep and kind in ("clip", "siglip") and rest:
        return ClipRelevance(rest, kind)  # type: ignore[arg-type]
    return ClipRelevance(spec)


# ---- each model's own default threshold -------------------------------------------------

RELEVANCE_FILE = "judge-relevance.json"
PAPER_CLIP_THRESHOLD = 0.22  # the paper's t, measured for openai/clip-vit-base-patch16
# SigLIP's default: the cosine at which its own pairwise sigmoid says "1% match". Low, for
# recall, as the paper's CLIP threshold kept 96.6% of truly violated rules; calibrate it.
SIGLIP_MATCH_PROBABILITY = 0.01


def model_threshold(scorer: ClipRelevance) -> tuple[float, str]:
    """The default relevance threshold of `scorer`'s model, and where it came from.

    In order: the model folder's `judge-relevance.json` (`{"threshold": t, ...}`, written
    by whoever measured t for that model, e.g. the toy build for the toy CLIP); for
    SigLIP, the cosine where the model's own sigmoid gives `SIGLIP_MATCH_PROBABILITY`; for
    CLIP, the paper's 0.22 (measured for CLIP ViT-B/16 only). A policy's or a run's own
    threshold overrides this.
    """
    import json
    import math

    path = Path(scorer.model_id).expanduser() / RELEVANCE_FILE
    if path.is_file():
        try:
            value = float(json.loads(path.read_text(encoding="utf-8"))["threshold"])
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise InputError(
                f"{path}: expected JSON with a number 'threshold' ({error})"
            ) from None
        if not -1.0 <= value <= 1.0:
            raise InputError(f"{path}: threshold {value} is not a cosine (-1 to 1)")
        return value, str(path)
    if scorer.kind == "siglip":
        model = scorer._model
        scale = float(model.logit_scale.exp())
        bias = float(model.logit_bias)
        p = SIGLIP_MATCH_PROBABILITY
        value = (math.log(p / (1 - p)) - bias) / scale
        return round(value, 4), f"SigLIP's own sigmoid at {p:.0%} match"
    if scorer.model_id == DEFAULT_CLIP:
        return PAPER_CLIP_THRESHOLD, "the paper's threshold for CLIP ViT-B/16"
    return (
        PAPER_CLIP_THRESHOLD,
        f"the paper's threshold for CLIP ViT-B/16 (not measured for this model: add "
        f"{RELEVANCE_FILE} to its folder or calibrate)",
    )
