"""Images out of requests: data URLs, base64, uploads and (when allowed) remote URLs.

Every check that can be made before decoding is made here, so a request over a limit
costs a header read: the size of the base64 text before it is decoded, the format from
the magic bytes, and the pixels of every frame read from the file's structure and then
from Pillow's lazy open (`judge.images.open_checked`, the same check the Judge's own
decode makes), so no frame larger than `--max-pixels` is ever allocated. Decoding happens
later, once, in the Judge; an image that passes these checks and still cannot be decoded
comes back as a verdict with outcome "error", which the endpoints turn into a 422.

The routes run these checks in a worker thread, inside the request's concurrency slot.
Remote URLs are fetched by `judge.serve.remote`.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import re
from dataclasses import dataclass

from judge.serve.config import Limits, RemoteImages
from judge.serve.problems import ApiError

_DATA_URL = re.compile(r"^data:([\w.+-]+/[\w.+-]+)?((?:;[\w.+-]+=[\w.+-]+)*)(;base64)?,", re.I)


@dataclass(frozen=True)
class ImageBytes:
    """One image of a request, checked against the limits but not decoded."""

    data: bytes
    sha256: str
    format: str
    size: tuple[int, int]
    source: str  # "data-url", "base64", "upload" or "remote"


def _too_large(what: str, size: int, limit: int, param: str) -> ApiError:
    return ApiError(
        413, "image_too_large", f"{what} is {size:,} bytes, over the limit of {limit:,}",
        param=param,
    )


def from_base64(text: str, limits: Limits, param: str, source: str = "base64") -> ImageBytes:
    """An image from base64 text (standard or URL-safe alphabet, padding optional)."""
    # 4 characters carry 3 bytes: refuse what is too large before decoding any of it.
    estimate = len(text) * 3 // 4
    if estimate > limits.max_image_bytes + 3:
        raise _too_large(f"{param}: the image", estimate, limits.max_image_bytes, param)
    compact = re.sub(r"\s+", "", text)
    compact = compact.replace("-", "+").replace("_", "/")
    compact += "=" * (-len(compact) % 4)
    try:
        data = base64.b64decode(compact, validate=True)
    except (binascii.Error, ValueError):
        raise ApiError(422, "bad_image", f"{param}: not valid base64", param=param) from None
    return check_bytes(data, limits, param, source)


def from_data_url(url: str, limits: Limits, param: str) -> ImageBytes:
    """An image from a `data:image/...;base64,...` URL."""
    match = _DATA_URL.match(url)
    if not match or not match.group(3):
        raise ApiError(
            422, "bad_image",
            f"{param}: expected a base64 data URL (data:image/png;base64,...)", param=param,
        )
    mime = (match.group(1) or "").lower()
    if mime and not mime.startswith("image/"):
        raise ApiError(422, "bad_image", f"{param}: {mime} is not an image type", param=param)
    return from_base64(url[match.end():], limits, param, "data-url")


def check_bytes(data: bytes, limits: Limits, param: str, source: str) -> ImageBytes:
    """The format and size of `data`, checked against the limits without decoding.

    Raises:
        ApiError: 413 `image_too_large` or `too_many_pixels` (any frame), 422 `bad_image`.
    """
    from judge.errors import ImageError, PixelLimitError
    from judge.images import open_checked

    if len(data) > limits.max_image_bytes:
        raise _too_large(f"{param}: the image", len(data), limits.max_image_bytes, param)
    try:
        fmt, opened = open_checked(data, limits.max_pixels)
        with opened:
            size = opened.size
    except PixelLimitError as error:
        raise ApiError(413, "too_many_pixels", f"{param}: {error}", param=param) from None
    except ImageError as error:
        raise ApiError(422, "bad_image", f"{param}: {error}", param=param) from None
    return ImageBytes(data, hashlib.sha256(data).hexdigest(), fmt, size, source)


async def fetch_remote(url: str, remote: RemoteImages, limits: Limits, param: str) -> ImageBytes:
    """An image fetched from an allowed http(s) URL (see `judge.serve.remote`)."""
    from judge.serve.remote import fetch

    data = await fetch(url, remote, min(remote.max_bytes, limits.max_image_bytes), param)
    return await asyncio.to_thread(check_bytes, data, limits, param, "remote")
