"""Vision stages that run in the judge process: relevance scan (CLIP/SigLIP or the served
model), region location (OWLv2), and masking/cropping of located regions.

torch and transformers are imported only when a model is built.
"""

from judge.vision.box import Box
from judge.vision.locator import DEFAULT_OWLV2, Owlv2Locator
from judge.vision.masking import FILL_METHODS, box_area_share, crop_box, fill_box, mean_colour
from judge.vision.relevance import (
    DEFAULT_CLIP,
    DEFAULT_SIGLIP,
    ClipRelevance,
    make_relevance,
)

__all__ = [
    "DEFAULT_CLIP",
    "DEFAULT_OWLV2",
    "DEFAULT_SIGLIP",
    "FILL_METHODS",
    "Box",
    "ClipRelevance",
    "Owlv2Locator",
    "box_area_share",
    "crop_box",
    "fill_box",
    "make_relevance",
    "mean_colour",
]
