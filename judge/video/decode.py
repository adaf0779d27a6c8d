"""Reading clips safely: every clip judge sees goes through `open_clip`.

Clips come from users and crawls, so they are treated as hostile, as images are
(judge/images.py):

* the container is sniffed from its first bytes, never from the file name, and opened
  with that demuxer named explicitly: MP4/MOV (ISO media), Matroska/WebM and AVI. FFmpeg
  never probes the file, so a file cannot pose as a playlist (HLS, concat) that makes the
  demuxer open other files or URLs; a path is opened by Python and handed over as a file
  object, so FFmpeg's own protocols (http:, concat:, subfile:) are never reached;
* the limits (`VideoLimits`: bytes, duration, resolution, frame count) are checked
  before any frame is decoded: bytes from the file system, then the header's size,
  duration and frame count, then a *demux pass* that walks every packet without
  decoding it, so a header that lies about the duration or the frame count is caught
  there. Frames that decode larger than the header said are refused as they come;
* a container that cannot be opened, holds no video stream, or ends before its header
  says it does (a truncated download) is a `VideoError` with the reason, found in the
  demux pass, before any model is asked anything;
* animated GIF, WebP and PNG are clips too: Pillow decodes them (judge.images checks
  every frame's size first), each frame lasting what the file says (at least 20 ms;
  less, or none, is read as 100 ms, as browsers do).

PyAV (the `av` package, `pip install 'judge[video]'`) is imported only when a video
container is opened: animations, and everything else judge does, work without it.
Why PyAV: docs/video.md.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import IO, Any, Literal

from PIL import Image

from judge.errors import ImageError, PixelLimitError, VideoError, VideoLimitError
from judge.video.options import VideoLimits
from judge.video.sample import Thumb, as_thumb, thumbnail

#: File name endings of the video containers judge reads: what a folder scan picks up.
#: A file is still read by its bytes, never by its name.
VIDEO_SUFFIXES = frozenset({".mp4", ".m4v", ".mov", ".qt", ".mkv", ".webm", ".avi"})

# ISO media brands of still images and image sequences (HEIC, AVIF): not clips.
_IMAGE_BRANDS = frozenset(
    {b"heic", b"heix", b"hevc", b"heim", b"heis", b"hevm", b"hevs", b"mif1", b"msf1",
     b"avif", b"avis"}
)
_ISO_BOXES = frozenset({b"moov", b"mdat", b"wide", b"free", b"skip", b"pnot"})
_HEAD = 64
# How far into a PNG to look for its animation chunk before reading all of it.
_PNG_LOOK = 1 << 16
_CHUNK = 1 << 20
# A clip may end this much before its header's duration without being called truncated
# (an audio track a little longer than the video, a rounded header).
_TRUNCATION_SLACK_S = 1.0
_TRUNCATION_SLACK_SHARE = 0.05
# Frames an animation shows for less than this (or for no time) are shown for 100 ms.
_MIN_FRAME_MS = 20
_DEFAULT_FRAME_MS = 100

Kind = Literal["video", "animation", "image"]
Source = str | Path | bytes | bytearray | memoryview


def sniff_container(head: bytes) -> str | None:
    """The FFmpeg demuxer for a video container judge reads ("mov", "matroska", "avi"),
    from the first bytes; None for anything else (still images included)."""
    if len(head) >= 12 and head[4:8] == b"ftyp":
        return None if head[8:12] in _IMAGE_BRANDS else "mov"
    if head[4:8] in _ISO_BOXES:
        return "mov"
    if head[:4] == b"\x1a\x45\xdf\xa3":
        return "matroska"
    if head[:4] == b"RIFF" and head[8:12] == b"AVI ":
        return "avi"
    return None


def _format_name(demuxer: str, head: bytes) -> str:
    if demuxer == "mov":
        return "mov" if head[8:12] == b"qt  " else "mp4"
    if demuxer == "matroska":
        return "webm" if b"webm" in head[:_HEAD] else "mkv"
    return demuxer


def _head(source: Source, size: int = _HEAD) -> bytes:
    if isinstance(source, (bytes, bytearray, memoryview)):
        return bytes(source[:size])
    # A FIFO or a device would block the open or the read: only regular files are read.
    if not stat.S_ISREG(os.stat(source).st_mode):
        raise OSError(f"{source}: not a regular file")
    with open(source, "rb") as handle:
        return handle.read(size)


def media_kind(source: Source) -> Kind:
    """"video" for a video container, "animation" for an image file with more than one
    frame, "image" for everything else, unreadable files included (the image loader
    then says why)."""
    from judge.images import DEFAULT_MAX_BYTES, open_checked

    try:
        head = _head(source)
    except (OSError, ValueError):
        return "image"
    if sniff_container(head):
        return "video"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        # APNG: an acTL chunk before the first IDAT. Most PNGs say "still" in their head.
        if _png_chunk_first(_head(source, _PNG_LOOK)) == b"IDAT":
            return "image"
    elif head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        # Animated WebP: the extended header (VP8X) with its animation flag set.
        if head[12:16] != b"VP8X" or not head[20] & 0x02:
            return "image"
    elif head[:6] not in (b"GIF87a", b"GIF89a"):
        return "image"
    try:
        data = _read(source, DEFAULT_MAX_BYTES)[0]
        _, opened = open_checked(data)
        with opened:
            frames = int(getattr(opened, "n_frames", 1))
    except Exception:  # unreadable: the image loader gives the reason
        return "image"
    return "animation" if frames > 1 else "image"


def _png_chunk_first(data: bytes) -> bytes | None:
    """Which of acTL (animated) and IDAT (the pixels) comes first in a PNG's chunks;
    None when neither does within `data`."""
    pos = 8
    while pos + 8 <= len(data):
        length = int.from_bytes(data[pos : pos + 4], "big")
        kind = data[pos + 4 : pos + 8]
        if kind in (b"acTL", b"IDAT"):
            return kind
        pos += 12 + length
    return None


# ---- what a clip is -------------------------------------------------------------------------


@dataclass(frozen=True)
class ClipProbe:
    """What a clip is, read before any frame is decoded.

    Attributes:
        format: "mp4", "mov", "webm", "mkv", "avi", "gif", "webp" or "apng".
        codec: the video codec ("h264", "vp9", ...); None for an animation.
        width, height: the frame size the header gives.
        duration: seconds, from the packets (a clip) or the frames' durations (an
            animation); None when neither says.
        frame_rate: the average frames per second, if known.
        frames: frames in the clip, counted from its packets.
        size_bytes: the file's size.
        sha256: the file's hash.
    """

    format: str
    codec: str | None
    width: int
    height: int
    duration: float | None
    frame_rate: float | None
    frames: int
    size_bytes: int
    sha256: str


@dataclass
class DecodedFrame:
    """One decoded frame: its number (from 0, in presentation order), its time in
    seconds from the clip's start, its thumbnail, and the full picture on demand."""

    index: int
    time: float
    thumb: Thumb
    _picture: Callable[[], Image.Image]

    def picture(self) -> Image.Image:
        """The frame as an RGB image at its full size."""
        return self._picture()


class Clip:
    """An opened, probed clip. `frames()` decodes it from the start, frame by frame."""

    def __init__(self, probe: ClipProbe, limits: VideoLimits) -> None:
        self.probe = probe
        self.limits = limits

    def frames(self) -> Iterator[DecodedFrame]:
        raise NotImplementedError

    def _check_frame(self, index: int, time: float, size: tuple[int, int]) -> None:
        limits = self.limits
        if index >= limits.max_frame_count:
            raise VideoLimitError(
                f"the clip has more than {limits.max_frame_count:,} frames (the limit)"
            )
        if time > limits.max_seconds + _TRUNCATION_SLACK_S:
            raise VideoLimitError(
                f"the clip runs past {limits.max_seconds:g} s (the limit) at frame {index}"
            )
        _check_size(size, limits, f"frame {index}")


def _check_size(size: tuple[int, int], limits: VideoLimits, what: str) -> None:
    w, h = size
    if w <= 0 or h <= 0:
        raise VideoError(f"{what} has an empty size {w}x{h}")
    if w * h > limits.max_pixels:
        raise VideoLimitError(
            f"{what} is {w:,} x {h:,} = {w * h:,} pixels, over the limit of "
            f"{limits.max_pixels:,}"
        )


# ---- opening --------------------------------------------------------------------------------


def _read(source: Source, max_bytes: int) -> tuple[bytes, str | None]:
    """The bytes of `source` (a path or bytes) with its label, within `max_bytes`."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
        if len(data) > max_bytes:
            raise VideoLimitError(
                f"the clip is {len(data):,} bytes, over the limit of {max_bytes:,} bytes"
            )
        return data, None
    path = _checked_path(source, max_bytes)
    with open(path, "rb") as handle:
        data = handle.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise VideoLimitError(f"{source}: the file grew over the limit of {max_bytes:,} bytes")
    return data, str(source)


def _checked_path(source: str | Path, max_bytes: int) -> Path:
    path = Path(source)
    try:
        info = os.stat(path)
    except FileNotFoundError:
        raise VideoError(f"{source}: no such file") from None
    except (OSError, ValueError) as error:
        raise VideoError(f"{source}: cannot read: {error}") from None
    if not stat.S_ISREG(info.st_mode):
        raise VideoError(f"{source}: not a regular file")
    if info.st_size > max_bytes:
        raise VideoLimitError(
            f"{source}: the file is {info.st_size:,} bytes, over the limit of {max_bytes:,} bytes"
        )
    return path


def open_clip(source: Source, limits: VideoLimits | None = None) -> Clip:
    """Open and probe a clip (a path or the file's bytes): a video container, or an
    animated GIF, WebP or PNG. Nothing is decoded yet; every limit that can be checked
    without decoding has been.

    Raises:
        VideoLimitError: over a limit (bytes, duration, resolution, frame count).
        VideoError: not a clip judge reads, corrupt, truncated, no video stream, or PyAV
            not installed for a video container.
    """
    limits = limits or VideoLimits()
    label = None if isinstance(source, (bytes, bytearray, memoryview)) else str(source)
    if label is not None:
        _checked_path(label, limits.max_bytes)
    try:
        head = _head(source)
    except (OSError, ValueError) as error:
        raise VideoError(f"{label}: cannot read: {error}") from None
    demuxer = sniff_container(head)
    try:
        if demuxer is not None:
            return _open_video(source, demuxer, _format_name(demuxer, head), limits)
        data, _ = _read(source, limits.max_bytes)
        return _open_animation(data, limits)
    except VideoError as error:
        if label is None or str(error).startswith(label):
            raise
        raise type(error)(f"{label}: {error}") from None


# ---- video containers (PyAV) ----------------------------------------------------------------


def video_available() -> bool:
    """Whether PyAV is installed, so video containers can be read."""
    import importlib.util

    return importlib.util.find_spec("av") is not None


def _av() -> Any:
    try:
        import av
    except ImportError:
        raise VideoError(
            "reading video needs PyAV, which is not installed: pip install 'judge[video]'"
        ) from None
    return av


def _reason(error: BaseException) -> str:
    # "[Errno 1094995529] Invalid data found when processing input: '<none>'": the words.
    text = re.sub(r"^\[Errno -?\d+\]\s*", "", str(error).strip())
    # FFmpeg's messages end with the file name it was given; a file object has none.
    for tail in (": '<none>'", ": '<none>'."):
        text = text.removesuffix(tail)
    return text or type(error).__name__


def _open_video(source: Source, demuxer: str, name: str, limits: VideoLimits) -> Clip:
    av = _av()
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
        if len(data) > limits.max_bytes:
            raise VideoLimitError(
                f"the clip is {len(data):,} bytes, over the limit of {limits.max_bytes:,} bytes"
            )
        size, digest = len(data), hashlib.sha256(data).hexdigest()

        def opener() -> IO[bytes]:
            return io.BytesIO(data)
    else:
        path = _checked_path(source, limits.max_bytes)
        size, digest = _hash_file(path)

        def opener() -> IO[bytes]:
            return open(path, "rb")

    probe = _probe(av, opener, demuxer, name, limits, size, digest)
    return _VideoClip(probe, limits, opener, demuxer)


def _hash_file(path: Path) -> tuple[int, str]:
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return size, digest.hexdigest()


def _open_container(av: Any, handle: IO[bytes], demuxer: str, name: str) -> Any:
    try:
        return av.open(handle, mode="r", format=demuxer)
    except av.FFmpegError as error:
        handle.close()
        raise VideoError(
            f"corrupt or truncated {name.upper()} container: {_reason(error)}"
        ) from None


def _probe(
    av: Any,
    opener: Callable[[], IO[bytes]],
    demuxer: str,
    name: str,
    limits: VideoLimits,
    size: int,
    digest: str,
) -> ClipProbe:
    handle = opener()
    container = _open_container(av, handle, demuxer, name)
    try:
        if not container.streams.video:
            raise VideoError(f"the {name.upper()} file holds no video stream")
        stream = container.streams.video[0]
        context = stream.codec_context
        _check_size((int(context.width or 0), int(context.height or 0)), limits, "the video")
        base = stream.time_base or Fraction(1, 1_000_000)
        declared = _declared_duration(container, stream, base)
        if declared is not None and declared > limits.max_seconds:
            raise VideoLimitError(
                f"the clip lasts {declared:,.1f} s, over the limit of {limits.max_seconds:g} s"
            )
        promised = int(stream.frames or 0)
        if promised > limits.max_frame_count:
            raise VideoLimitError(
                f"the clip has {promised:,} frames, over the limit of {limits.max_frame_count:,}"
            )
        count, end = _demux_pass(av, container, stream, base, limits, name, declared)
        if count == 0:
            raise VideoError(f"the {name.upper()} file holds no video frames")
        if promised and count < promised:
            raise VideoError(
                f"truncated {name.upper()}: the header declares {promised:,} frames, "
                f"the file holds {count:,}"
            )
        if declared is not None and end is not None and end < declared - max(
            _TRUNCATION_SLACK_S, _TRUNCATION_SLACK_SHARE * declared
        ):
            raise VideoError(
                f"truncated {name.upper()}: its frames end at {end:.2f} s of the "
                f"{declared:.2f} s its header declares"
            )
        rate = stream.average_rate or stream.guessed_rate
        return ClipProbe(
            format=name,
            codec=str(context.name) if context.name else None,
            width=int(context.width),
            height=int(context.height),
            duration=end if end is not None else declared,
            frame_rate=float(rate) if rate else None,
            frames=count,
            size_bytes=size,
            sha256=digest,
        )
    finally:
        container.close()
        handle.close()


def _declared_duration(container: Any, stream: Any, base: Fraction) -> float | None:
    if stream.duration:
        return float(stream.duration * base)
    if container.duration:
        return float(container.duration) / 1_000_000
    return None


def _demux_pass(
    av: Any,
    container: Any,
    stream: Any,
    base: Fraction,
    limits: VideoLimits,
    name: str,
    declared: float | None,
) -> tuple[int, float | None]:
    """(packets, end time in seconds) of the video stream, read without decoding."""
    start = stream.start_time or 0
    count, end = 0, None
    try:
        for packet in container.demux(stream):
            if not packet.size:  # the demuxer's end-of-stream marker
                continue
            count += 1
            if count > limits.max_frame_count:
                raise VideoLimitError(
                    f"the clip has more than {limits.max_frame_count:,} frames (the limit)"
                )
            if packet.pts is not None:
                stop = float((packet.pts - start + (packet.duration or 0)) * base)
                end = stop if end is None else max(end, stop)
                if end > limits.max_seconds + _TRUNCATION_SLACK_S:
                    said = (
                        "gives no duration" if declared is None else f"says {declared:.1f} s"
                    )
                    raise VideoLimitError(
                        f"the clip runs past {limits.max_seconds:g} s (the limit); its header "
                        f"{said}"
                    )
    except av.FFmpegError as error:
        raise VideoError(
            f"corrupt {name.upper()} after {count:,} frames: {_reason(error)}"
        ) from None
    return count, end


class _VideoClip(Clip):
    def __init__(
        self,
        probe: ClipProbe,
        limits: VideoLimits,
        opener: Callable[[], IO[bytes]],
        demuxer: str,
    ) -> None:
        super().__init__(probe, limits)
        self._opener = opener
        self._demuxer = demuxer

    def frames(self) -> Iterator[DecodedFrame]:
        av = _av()
        name = self.probe.format
        handle = self._opener()
        container = _open_container(av, handle, self._demuxer, name)
        index = 0
        try:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            base = stream.time_base or Fraction(1, 1_000_000)
            start = stream.start_time or 0
            rate = self.probe.frame_rate or 25.0
            for frame in container.decode(stream):
                if frame.pts is not None:
                    time = max(0.0, float((frame.pts - start) * base))
                else:
                    time = index / rate
                self._check_frame(index, time, (frame.width, frame.height))
                small = frame.reformat(width=32, height=32, format="rgb24", interpolation="AREA")
                yield DecodedFrame(
                    index, time, as_thumb(small.to_ndarray()), _picture_of(frame)
                )
                index += 1
        except av.FFmpegError as error:
            raise VideoError(f"corrupt {name.upper()} at frame {index}: {_reason(error)}") from None
        finally:
            container.close()
            handle.close()


def _picture_of(frame: Any) -> Callable[[], Image.Image]:
    """The frame as a person sees it: RGB, turned by the container's display matrix (a
    phone's portrait clip is stored sideways with a rotation to apply), so the model, and
    the boxes found on it, see it upright, as images are EXIF-transposed."""

    def picture() -> Image.Image:
        image: Image.Image = frame.to_image()
        image = image.convert("RGB") if image.mode != "RGB" else image
        turn = int(getattr(frame, "rotation", 0) or 0) % 360
        if turn:
            # The display matrix's angle is counterclockwise, as PIL's rotate takes it.
            image = image.rotate(turn, expand=True)
        return image

    return picture


# ---- animations (Pillow) --------------------------------------------------------------------


def _frame_ms(image: Image.Image) -> int:
    value = image.info.get("duration")
    try:
        ms = int(value) if value is not None else 0
    except (TypeError, ValueError):
        ms = 0
    return _shown_ms(ms)


def _shown_ms(ms: int) -> int:
    return ms if ms >= _MIN_FRAME_MS else _DEFAULT_FRAME_MS


def _webp_durations(data: bytes) -> list[int]:
    """Each frame's duration (ms) from an animated WebP's ANMF chunks, read from the file's
    structure: Pillow gives a WebP frame's duration only once it is decoded."""
    out: list[int] = []
    pos = 12
    while pos + 8 <= len(data):
        kind = data[pos : pos + 4]
        size = int.from_bytes(data[pos + 4 : pos + 8], "little")
        if kind == b"ANMF" and size >= 16:
            out.append(int.from_bytes(data[pos + 20 : pos + 23], "little"))
        pos += 8 + size + (size & 1)
    return out


def _open_animation(data: bytes, limits: VideoLimits) -> Clip:
    from judge.images import open_checked

    try:
        fmt, opened = open_checked(data, limits.max_pixels)
    except PixelLimitError as error:
        raise VideoLimitError(str(error)) from None
    except ImageError as error:
        raise VideoError(str(error)) from None
    name = {"GIF": "gif", "WEBP": "webp", "PNG": "apng"}.get(fmt)
    with opened as image:
        frames = int(getattr(image, "n_frames", 1))
        if name is None or frames < 2:
            raise VideoError(f"not a clip: a still {fmt} image")
        if frames > limits.max_frame_count:
            raise VideoLimitError(
                f"the animation has {frames:,} frames, over the limit of "
                f"{limits.max_frame_count:,}"
            )
        durations = [_shown_ms(ms) for ms in _webp_durations(data)] if fmt == "WEBP" else []
        if not durations:
            try:
                for index in range(frames):
                    image.seek(index)  # reads the frame's header; its pixels decode later
                    durations.append(_frame_ms(image))
            except Exception as error:
                raise VideoError(f"corrupt {fmt} animation at frame {index}: {error}") from None
        if len(durations) != frames:
            raise VideoError(f"corrupt {fmt} animation: {frames} frames, "
                             f"{len(durations)} frame durations")
        width, height = image.size
    total_ms = sum(durations)
    duration = total_ms / 1000
    if duration > limits.max_seconds:
        raise VideoLimitError(
            f"the animation lasts {duration:,.1f} s, over the limit of {limits.max_seconds:g} s"
        )
    probe = ClipProbe(
        format=name,
        codec=None,
        width=width,
        height=height,
        duration=duration,
        frame_rate=frames / duration if duration else None,
        frames=frames,
        size_bytes=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
    )
    return _AnimationClip(probe, limits, data, durations)


class _AnimationClip(Clip):
    def __init__(
        self, probe: ClipProbe, limits: VideoLimits, data: bytes, durations: list[int]
    ) -> None:
        super().__init__(probe, limits)
        self._data = data
        self._durations = durations

    def frames(self) -> Iterator[DecodedFrame]:
        from judge.images import open_checked, to_rgb

        _, opened = open_checked(self._data, self.limits.max_pixels)
        elapsed_ms = 0
        name = self.probe.format.upper()
        with opened as image:
            for index in range(self.probe.frames):
                try:
                    image.seek(index)
                    self._check_frame(index, elapsed_ms / 1000, image.size)
                    image.load()
                    rgb = to_rgb(image)
                    rgb = rgb.copy() if rgb is image else rgb
                except (VideoError, ImageError):
                    raise
                except Exception as error:
                    raise VideoError(f"corrupt {name} at frame {index}: {error}") from None
                yield DecodedFrame(index, elapsed_ms / 1000, thumbnail(rgb), _constant(rgb))
                elapsed_ms += self._durations[index]


def _constant(image: Image.Image) -> Callable[[], Image.Image]:
    return lambda: image
