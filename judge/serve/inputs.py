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

Video clips (MP4/MOV, WebM/MKV, AVI) are taken where `video` is allowed (`/v1/judge`),
under their own limits (`--max-video-bytes`, `--max-video-seconds`, `--max-video-pixels`),
checked by probing the container (its header, then its packets) without decoding a
frame (`judge.video.open_clip`); `/v1/moderations` refuses them (415), as OpenAI's
moderation takes images only.
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
    video: bool = False  # a video clip (judged under the clip timeout)


def _too_large(what: str, size: int, limit: int, param: str) -> ApiError:
    return ApiError(
        413, "image_too_large", f"{what} is {size:,} bytes, over the limit of {limit:,}",
        param=param,
    )


def largest(limits: Limits, video: bool) -> int:
    """The most bytes one input may have: an image's limit, or a clip's where clips are
    taken (the kind is known only once the bytes are read)."""
    return max(limits.max_image_bytes, limits.max_video_bytes) if video else limits.max_image_bytes


def from_base64(
    text: str, limits: Limits, param: str, source: str = "base64", *, video: bool = False
) -> ImageBytes:
    """An image (or, with `video`, a clip) from base64 text (standard or URL-safe
    alphabet, padding optional)."""
    # 4 characters carry 3 bytes: refuse what is too large before decoding any of it.
    estimate = len(text) * 3 // 4
    if estimate > largest(limits, video) + 3:
        raise _too_large(f"{param}: the image", estimate, largest(limits, video), param)
    compact = re.sub(r"\s+", "", text)
    compact = compact.replace("-", "+").replace("_", "/")
    compact += "=" * (-len(compact) % 4)
    try:
        data = base64.b64decode(compact, validate=True)
    except (binascii.Error, ValueError):
        raise ApiError(422, "bad_image", f"{param}: not valid base64", param=param) from None
    return check_bytes(data, limits, param, source, video=video)


def from_data_url(url: str, limits: Limits, param: str, *, video: bool = False) -> ImageBytes:
    """An image from a `data:image/...;base64,...` URL (with `video`, `data:video/...`
    too)."""
    match = _DATA_URL.match(url)
    if not match or not match.group(3):
        raise ApiError(
            422, "bad_image",
            f"{param}: expected a base64 data URL (data:image/png;base64,...)", param=param,
        )
    mime = (match.group(1) or "").lower()
    if mime.startswith("video/") and not video:
        raise _no_video(param, mime)
    if mime and not mime.startswith(("image/", "video/")):
        raise ApiError(422, "bad_image", f"{param}: {mime} is not an image type", param=param)
    return from_base64(url[match.end():], limits, param, "data-url", video=video)


def _no_video(param: str, what: str) -> ApiError:
    return ApiError(
        415, "video_not_supported",
        f"{param}: {what} is a video; /v1/moderations moderates images, as OpenAI's "
        "moderation endpoint does. Send clips to /v1/judge", param=param,
    )


def check_bytes(
    data: bytes, limits: Limits, param: str, source: str, *, video: bool = False
) -> ImageBytes:
    """The format and size of `data`, checked against the limits without decoding.

    Raises:
        ApiError: 413 `image_too_large` or `too_many_pixels` (any frame), 422 `bad_image`;
            for a clip, 415 `video_not_supported` unless `video`, 413 `video_too_large`,
            422 `bad_video` (corrupt, truncated).
    """
    from judge.errors import ImageError, PixelLimitError
    from judge.images import open_checked
    from judge.video.decode import sniff_container

    found = sniff_container(data[:64])
    if found is not None:
        if not video:
            raise _no_video(param, f"the {'MP4/MOV' if found == 'mov' else found.upper()} file")
        return check_video(data, limits, param, source)
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


def check_video(data: bytes, limits: Limits, param: str, source: str) -> ImageBytes:
    """A clip's container probed against the video limits, no frame decoded.

    Raises:
        ApiError: 413 `video_too_large` (bytes, duration, frame size, frame count), 422
            `bad_video` (corrupt, truncated, no video stream, no decoder installed).
    """
    from judge.errors import VideoError, VideoLimitError
    from judge.video import VideoLimits, open_clip

    if len(data) > limits.max_video_bytes:
        raise ApiError(
            413, "video_too_large", f"{param}: the clip is {len(data):,} bytes, over the limit "
            f"of {limits.max_video_bytes:,}", param=param,
        )
    bounds = VideoLimits(
        max_bytes=limits.max_video_bytes,
        max_seconds=limits.max_video_seconds,
        max_pixels=limits.max_video_pixels,
    )
    try:
        probe = open_clip(data, bounds).probe
    except VideoLimitError as error:
        raise ApiError(413, "video_too_large", f"{param}: {error}", param=param) from None
    except VideoError as error:
        raise ApiError(422, "bad_video", f"{param}: {error}", param=param) from None
    return ImageBytes(data, probe.sha256, probe.format.upper(), (probe.width, probe.height),
                      source, video=True)


async def fetch_remote(
    url: str, remote: RemoteImages, limits: Limits, param: str, *, video: bool = False
) -> ImageBytes:
    """An image (with `video`, or a clip) fetched from an allowed http(s) URL (see
    `judge.serve.remote`)."""
    from judge.serve.remote import fetch

    data = await fetch(url, remote, min(remote.max_bytes, largest(limits, video)), param)
    return await asyncio.to_thread(check_bytes, data, limits, param, "remote", video=video)
