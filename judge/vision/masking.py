"""Stage 4b helpers: remove a box from an image, or cut it out.

The paper removes the central object's region and asks again, without saying how. We fill
the box with the image's mean colour by default: a flat patch carries no object evidence
and, unlike black, does not add a strong new shape. "blur" and "black" are kept for
ablations.

Box edges are rounded outwards (floor/ceil) so a fill covers every pixel the box touches:
leaving a sliver of the object behind would let the model still see it.
"""

from __future__ import annotations

import math
from typing import Literal

from PIL import Image, ImageFilter, ImageStat

from judge.vision.box import Box

FillMethod = Literal["mean", "blur", "black"]
FILL_METHODS: tuple[FillMethod, ...] = ("mean", "blur", "black")


def box_pixels(box: Box, size: tuple[int, int]) -> tuple[int, int, int, int]:
    """The integer pixel rectangle (x0, y0, x1, y1), end-exclusive, that `box` touches,
    clipped to an image of `size`; may be empty (x0 == x1 or y0 == y1)."""
    w, h = size
    x0 = min(max(math.floor(box.x0), 0), w)
    y0 = min(max(math.floor(box.y0), 0), h)
    x1 = min(max(math.ceil(box.x1), x0), w)
    y1 = min(max(math.ceil(box.y1), y0), h)
    return x0, y0, x1, y1


def mean_colour(image: Image.Image) -> tuple[int, int, int]:
    """The image's mean RGB colour."""
    stat = ImageStat.Stat(image.convert("RGB"))
    r, g, b = (round(v) for v in stat.mean[:3])
    return r, g, b


def fill_box(image: Image.Image, box: Box, method: FillMethod = "mean") -> Image.Image:
    """A copy of `image` with `box` removed.

    Args:
        method: "mean" (the whole image's mean colour), "blur" (a Gaussian blur of the
            region strong enough to destroy its detail), or "black".
    """
    if method not in FILL_METHODS:
        raise ValueError(f"unknown fill method {method!r}; choose one of {FILL_METHODS}")
    out = image.convert("RGB").copy()
    rect = box_pixels(box, out.size)
    x0, y0, x1, y1 = rect
    if x1 <= x0 or y1 <= y0:
        return out
    if method == "mean":
        out.paste(mean_colour(image), rect)
    elif method == "black":
        out.paste((0, 0, 0), rect)
    else:
        region = out.crop(rect)
        radius = max(2.0, max(region.size) / 4)
        out.paste(region.filter(ImageFilter.GaussianBlur(radius)), rect)
    return out


def crop_box(image: Image.Image, box: Box, pad: float = 0.1, min_side: int = 28) -> Image.Image:
    """The region of `box`, grown by `pad` (a fraction of the box's size) on each side and
    to at least `min_side` pixels where the image allows, clipped to the image.

    A small box is the reason to crop (the object is too small to judge in the whole
    image), so the crop keeps a little context and never comes out smaller than the
    model's smallest input.
    """
    w, h = image.size
    bw, bh = max(0.0, box.x1 - box.x0), max(0.0, box.y1 - box.y0)
    cx, cy = (box.x0 + box.x1) / 2, (box.y0 + box.y1) / 2
    half_w = max(bw * (1 + 2 * pad), min_side) / 2
    half_h = max(bh * (1 + 2 * pad), min_side) / 2
    x0, x1 = _span(cx, half_w, w)
    y0, y1 = _span(cy, half_h, h)
    return image.convert("RGB").crop((x0, y0, x1, y1))


def _span(centre: float, half: float, limit: int) -> tuple[int, int]:
    # Shift the window inside the image rather than cutting it, so a box at the edge
    # still gets a crop of the full size.
    size = min(limit, max(1, math.ceil(2 * half)))
    start = math.floor(centre - size / 2)
    start = min(max(start, 0), limit - size)
    return start, start + size


def shrink(image: Image.Image, longest: int) -> Image.Image:
    """`image` scaled down, keeping its aspect ratio, so its longer side is at most
    `longest`; the same object when it already is. Encoders resize to a few hundred pixels
    anyway, so this only saves the cost of padding and blurring a huge image first."""
    if max(image.size) <= longest:
        return image
    scale = longest / max(image.size)
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    return image.resize(size, Image.Resampling.BILINEAR)


def box_area_share(box: Box, image: Image.Image | tuple[int, int]) -> float:
    """The share of the image's area that `box` covers, after clipping to the image."""
    w, h = image.size if isinstance(image, Image.Image) else image
    if w <= 0 or h <= 0:
        return 0.0
    x0, x1 = min(max(box.x0, 0.0), w), min(max(box.x1, 0.0), w)
    y0, y1 = min(max(box.y0, 0.0), h), min(max(box.y1, 0.0), h)
    return max(0.0, x1 - x0) * max(0.0, y1 - y0) / (w * h)
