"""Images out of requests: data URLs, base64, uploads and (when allowed) remote URLs.

Every check that can be made before decoding is made here, so a request over a limit
costs a header read: the size of the base64 text before it is decoded, the format from
the magic bytes, the pixel count from the header (Pillow's lazy open where the header
parser in judge.images does not know the format). Decoding happens later, once, in the
Judge; an image that passes these checks and still cannot be decoded comes back as a
verdict with outcome "error", which the endpoints turn into a 422.

Remote URLs are fetched only from allowed hosts, without following redirects (a redirect
could point inside the network the allow-list protects), without proxy variables, with a
timeout on the whole fetch and a byte limit that stops reading, not one checked after.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import re
from dataclasses import dataclass
from io import BytesIO
from urllib.parse import urlsplit

from judge.errors import ImageError
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
    """The format and size of `data`, checked against the limits without decoding."""
    from judge.images import header_size, sniff_format

    if len(data) > limits.max_image_bytes:
        raise _too_large(f"{param}: the image", len(data), limits.max_image_bytes, param)
    try:
        fmt = sniff_format(data[:64])
    except ImageError as error:
        raise ApiError(422, "bad_image", f"{param}: {error}", param=param) from None
    size = header_size(data, fmt) or _lazy_size(data, param)
    width, height = size
    if width <= 0 or height <= 0:
        raise ApiError(422, "bad_image", f"{param}: empty image size {width}x{height}", param=param)
    if width * height > limits.max_pixels:
        raise ApiError(
            413, "too_many_pixels",
            f"{param}: the image is {width:,} x {height:,} = {width * height:,} pixels, over "
            f"the limit of {limits.max_pixels:,}",
            param=param,
        )
    return ImageBytes(data, hashlib.sha256(data).hexdigest(), fmt, size, source)


def _lazy_size(data: bytes, param: str) -> tuple[int, int]:
    """The size from Pillow's lazy open, which reads the header only."""
    from PIL import Image

    try:
        with Image.open(BytesIO(data)) as image:
            return image.size
    except Exception as error:  # any decoder complaint means the same to the caller
        raise ApiError(
            422, "bad_image", f"{param}: cannot read the image header ({error})", param=param
        ) from None


async def fetch_remote(url: str, remote: RemoteImages, limits: Limits, param: str) -> ImageBytes:
    """An image fetched from an allowed http(s) URL."""
    import httpx

    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ApiError(400, "bad_url", f"{param}: only data: and http(s) URLs", param=param)
    if not remote.enabled:
        raise ApiError(
            400, "remote_urls_off",
            f"{param}: remote image URLs are turned off on this service; send the image as a "
            "data URL (data:image/png;base64,...)",
            param=param,
        )
    if not remote.allows(parts.hostname):
        raise ApiError(
            400, "host_not_allowed",
            f"{param}: the host {parts.hostname} is not on this service's allow-list",
            param=param,
        )
    cap = min(remote.max_bytes, limits.max_image_bytes)
    try:
        async with asyncio.timeout(remote.timeout_s):
            async with httpx.AsyncClient(
                timeout=remote.timeout_s, follow_redirects=False, trust_env=False
            ) as client, client.stream("GET", url) as response:
                if response.status_code != 200:
                    raise ApiError(
                        422, "fetch_failed",
                        f"{param}: fetching the image answered HTTP {response.status_code}"
                        + (" (redirects are not followed)" if response.is_redirect else ""),
                        param=param,
                    )
                declared = response.headers.get("content-length")
                if declared and declared.isdigit() and int(declared) > cap:
                    raise _too_large(f"{param}: the remote image", int(declared), cap, param)
                chunks: list[bytes] = []
                total = 0
                async for chunk in response.aiter_bytes():
                    total += len(chunk)
                    if total > cap:
                        raise _too_large(f"{param}: the remote image", total, cap, param)
                    chunks.append(chunk)
    except TimeoutError:
        raise ApiError(
            422, "fetch_failed", f"{param}: fetching the image took over {remote.timeout_s} s",
            param=param,
        ) from None
    except httpx.HTTPError as error:
        raise ApiError(
            422, "fetch_failed", f"{param}: fetching the image failed: {error}", param=param
        ) from None
    return check_bytes(b"".join(chunks), limits, param, "remote")
