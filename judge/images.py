"""Safe image loading: every image judge sees goes through `load_image`.

Images come from users and crawls, so they are treated as hostile:

* the format is sniffed from the content, never the file name, and only raster formats
  Pillow decodes in-process are opened (no EPS/PostScript, which would run Ghostscript);
* the pixel count is read from the header and checked *before* any pixel is decoded, so a
  decompression bomb (a tiny file that claims 50,000 x 50,000 pixels) costs nothing;
* bytes, frames and decoded pixels are bounded, and special files (FIFOs, devices) are
  refused, so a load never hangs;
* whatever goes wrong comes out as one `ImageError` whose message says why.

The result is always RGB and EXIF-transposed: the pixel grid the model sees is the one a
person sees, so boxes found on it mean what they say. Transparency is composited on white.

Animated images (GIF, WebP, APNG): by default only the first frame is returned;
`all_frames=True` returns every frame (up to `max_frames`, else an ImageError rather than
silently judging only part of the animation).
"""

from __future__ import annotations

import hashlib
import math
import os
import re
import stat
import struct
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path
from typing import Literal, overload

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from judge.errors import ImageError

ImageSource = str | Path | bytes | bytearray | memoryview | Image.Image

#: Per-frame limit on decoded pixels (80 MP: below Pillow's own bomb warning at 89 MP,
#: above any camera photo judge is likely to meet).
DEFAULT_MAX_PIXELS = 80_000_000
#: Largest file read, in bytes.
DEFAULT_MAX_BYTES = 256 * 1024 * 1024
#: Most frames returned by `all_frames=True`.
DEFAULT_MAX_FRAMES = 64
#: Limit on the decoded pixels of all frames together, for `all_frames=True`.
DEFAULT_MAX_TOTAL_PIXELS = 4 * DEFAULT_MAX_PIXELS

# Raster formats judge opens (Pillow plugin names). Everything else is refused before any
# Pillow plugin sees it.
RASTER_FORMATS: tuple[str, ...] = ("PNG", "JPEG", "GIF", "WEBP", "BMP", "TIFF")
# The file name endings of those formats: what a folder scan (the `judge` command, a data
# set folder) picks up. A file is still judged by its bytes, never by its name.
IMAGE_SUFFIXES = frozenset(
    {".png", ".jpg", ".jpeg", ".jpe", ".jfif", ".gif", ".webp", ".bmp", ".dib", ".tif", ".tiff"}
)

_WHITE = (255, 255, 255)


@dataclass(frozen=True)
class LoadedImage:
    """One decoded image (or one frame of an animation), ready for the models.

    Attributes:
        image: RGB, EXIF-transposed: the coordinates every box refers to.
        sha256: hex digest of the input bytes (for a PIL image given directly, of its
            RGB pixels with its size, since there are no file bytes).
        image_id: the caller's id, else the path as given, else "sha256:<first 16 hex>".
        frame: index of this frame in an animation; None for a still image.
        n_frames: frames in the source (1 for a still image).
        format: the sniffed format ("PNG", "JPEG", ...; "PIL" for a PIL image given directly).
        source_size: (width, height) after EXIF transposition, before any resizing.
        notes: things worth knowing that did not stop the load (e.g. unreadable EXIF).
    """

    image: Image.Image
    sha256: str
    image_id: str
    frame: int | None = None
    n_frames: int = 1
    format: str = ""
    source_size: tuple[int, int] = (0, 0)
    notes: tuple[str, ...] = ()

    @property
    def size(self) -> tuple[int, int]:
        return self.image.size


# ---- reading bytes ------------------------------------------------------------------------


def _read_path(path: Path, max_bytes: int) -> bytes:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise ImageError(f"{path}: no such file") from None
    except (OSError, ValueError) as exc:  # ValueError: embedded NUL byte in the path
        raise ImageError(f"{path}: cannot read: {exc}") from None
    if stat.S_ISDIR(st.st_mode):
        raise ImageError(f"{path}: is a directory, not an image file")
    # A FIFO or a device would block or never end: refuse anything but a regular file.
    if not stat.S_ISREG(st.st_mode):
        raise ImageError(f"{path}: not a regular file (FIFO, socket or device)")
    if st.st_size > max_bytes:
        raise ImageError(
            f"{path}: file is {st.st_size:,} bytes, over the limit of {max_bytes:,} bytes"
        )
    try:
        with open(path, "rb") as fh:
            data = fh.read(max_bytes + 1)
    except OSError as exc:
        raise ImageError(f"{path}: cannot read: {exc.strerror or exc}") from None
    if len(data) > max_bytes:  # grew while we looked
        raise ImageError(f"{path}: file is over the limit of {max_bytes:,} bytes")
    return data


# ---- sniffing -----------------------------------------------------------------------------


def sniff_format(data: bytes) -> str:
    """The raster format of `data` from its magic bytes.

    Raises:
        ImageError: empty input, a known non-raster format ("not a raster image: looks
            like HTML"), or unknown content.
    """
    if not data:
        raise ImageError("file is empty (0 bytes)")
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if data.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return "GIF"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    if data[:2] == b"BM" and len(data) >= 26:
        return "BMP"
    if data[:4] in (b"II*\x00", b"MM\x00*"):
        return "TIFF"
    what = _looks_like(data)
    if what:
        raise ImageError(f"not a raster image: looks like {what}")
    raise ImageError(f"not a supported image format (first bytes {data[:8].hex(' ')})")


_MARKUP = re.compile(rb"<\s*(!doctype\s+html|html|head|body|svg|\?xml|!--)", re.IGNORECASE)


def _looks_like(data: bytes) -> str | None:
    """A human name for well-known non-raster content, for the error message."""
    head = data[:4096]
    stripped = head.lstrip(b"\xef\xbb\xbf \t\r\n\x00")
    if stripped.startswith(b"%PDF"):
        return "PDF"
    if stripped.startswith(b"%!PS") or data.startswith(b"\xc5\xd0\xd3\xc6"):
        return "PostScript/EPS"
    if data.startswith(b"PK\x03\x04"):
        return "a ZIP archive"
    if data.startswith(b"\x1f\x8b"):
        return "gzip data"
    if data[4:8] == b"ftyp":
        brand = data[8:12].decode("ascii", "replace")
        return f"an ISO media file (brand {brand!r}: HEIC/AVIF/MP4 are not supported)"
    match = _MARKUP.match(stripped)
    if match or stripped[:1] == b"<":
        lowered = head.lower()
        if b"<svg" in lowered:
            return "SVG"
        if b"<html" in lowered or b"<!doctype html" in lowered or b"<body" in lowered:
            return "HTML"
        return "XML/markup"
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        return None
    if text and all(ch.isprintable() or ch in "\r\n\t" for ch in text):
        return "text"
    return None


def header_size(data: bytes, fmt: str) -> tuple[int, int] | None:
    """(width, height) read from the file header without decoding, where the format
    allows it cheaply; None when unknown (Pillow's lazy open checks it then)."""
    try:
        if fmt == "PNG" and data[12:16] == b"IHDR":
            w, h = struct.unpack(">II", data[16:24])
            return w, h
        if fmt == "GIF":
            w, h = struct.unpack("<HH", data[6:10])
            return w, h
        if fmt == "BMP":
            w, h = struct.unpack("<ii", data[18:26])
            return abs(w), abs(h)
        if fmt == "WEBP":
            return _webp_size(data)
        if fmt == "JPEG":
            return _jpeg_size(data)
    except struct.error:
        return None
    return None


def _webp_size(data: bytes) -> tuple[int, int] | None:
    chunk = data[12:16]
    if chunk == b"VP8X":
        w = int.from_bytes(data[24:27], "little") + 1
        h = int.from_bytes(data[27:30], "little") + 1
        return w, h
    if chunk == b"VP8L" and data[20:21] == b"\x2f":
        bits = int.from_bytes(data[21:25], "little")
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if chunk == b"VP8 ":
        w, h = struct.unpack("<HH", data[26:30])
        return w & 0x3FFF, h & 0x3FFF
    return None


def _jpeg_size(data: bytes) -> tuple[int, int] | None:
    # Walk the marker segments to the first SOFn; bounded by the data length.
    i, n = 2, len(data)
    while i + 4 <= n:
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:
            i += 2
            continue
        (length,) = struct.unpack(">H", data[i + 2 : i + 4])
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            h, w = struct.unpack(">HH", data[i + 5 : i + 9])
            return w, h
        if length < 2:
            return None
        i += 2 + length
    return None


def _check_pixels(size: tuple[int, int], max_pixels: int, what: str = "image") -> None:
    w, h = size
    if w <= 0 or h <= 0:
        raise ImageError(f"{what} has an empty size {w}x{h}")
    if w * h > max_pixels:
        raise ImageError(
            f"{what} is {w:,} x {h:,} = {w * h:,} pixels, over the limit of {max_pixels:,} "
            "pixels (decompression-bomb protection; raise max_pixels to allow it)"
        )


# ---- converting ---------------------------------------------------------------------------


def to_rgb(image: Image.Image) -> Image.Image:
    """`image` as RGB, with transparency composited on white and high bit depths scaled
    (not clipped) to 8 bits.

    Raises:
        ImageError: a colour mode with no sensible RGB conversion.
    """
    mode = image.mode
    if mode == "RGB" and "transparency" not in image.info:
        return image
    if mode.startswith("I;16") or mode in ("I", "F"):
        return _high_depth_to_rgb(image)
    has_alpha = mode in ("RGBA", "RGBa", "LA", "La", "PA") or "transparency" in image.info
    try:
        if has_alpha:
            rgba = image.convert("RGBA")
            canvas = Image.new("RGBA", rgba.size, (*_WHITE, 255))
            return Image.alpha_composite(canvas, rgba).convert("RGB")
        return image.convert("RGB")
    except (ValueError, OSError) as exc:
        raise ImageError(f"cannot convert colour mode {mode} to RGB: {exc}") from None


def _high_depth_to_rgb(image: Image.Image) -> Image.Image:
    # Pillow's convert() clips 16-bit values to 255, which turns most 16-bit greyscale
    # images white; scale instead.
    arr = np.asarray(image)
    if image.mode.startswith("I;16"):
        grey = (arr.astype(np.uint32) >> 8).astype(np.uint8)
    else:
        values = arr.astype(np.float64)
        finite = values[np.isfinite(values)]
        top = float(finite.max()) if finite.size else 0.0
        low = float(finite.min()) if finite.size else 0.0
        if image.mode == "I" and low >= 0 and top <= 255:
            scaled = values
        elif image.mode == "I" and low >= 0 and top <= 65535:
            scaled = values / 257.0
        else:  # float or unusual range: stretch to 0..255
            span = top - low or 1.0
            scaled = (values - low) * (255.0 / span)
        grey = np.nan_to_num(scaled, nan=0.0).clip(0, 255).round().astype(np.uint8)
    return Image.fromarray(grey).convert("RGB")


def _transpose(image: Image.Image, notes: list[str]) -> Image.Image:
    try:
        return ImageOps.exif_transpose(image)
    except Exception as exc:  # malformed EXIF must not lose the image
        notes.append(f"EXIF orientation unreadable, image left as stored ({exc})")
        return image


# ---- the loader ---------------------------------------------------------------------------


@overload
def load_image(
    source: ImageSource,
    *,
    image_id: str | None = ...,
    all_frames: Literal[False] = ...,
    max_bytes: int = ...,
    max_pixels: int = ...,
    max_frames: int = ...,
    max_total_pixels: int = ...,
) -> LoadedImage: ...


@overload
def load_image(
    source: ImageSource,
    *,
    image_id: str | None = ...,
    all_frames: Literal[True],
    max_bytes: int = ...,
    max_pixels: int = ...,
    max_frames: int = ...,
    max_total_pixels: int = ...,
) -> list[LoadedImage]: ...


def load_image(
    source: ImageSource,
    *,
    image_id: str | None = None,
    all_frames: bool = False,
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    max_frames: int = DEFAULT_MAX_FRAMES,
    max_total_pixels: int = DEFAULT_MAX_TOTAL_PIXELS,
) -> LoadedImage | list[LoadedImage]:
    """Read, check and decode one image.

    Args:
        source: a path (str or Path), the file's bytes, or a PIL image.
        image_id: name recorded in verdicts; defaults to the path, else "sha256:<hex16>".
        all_frames: False: the first frame only (a `LoadedImage`). True: a list with every
            frame of an animation (one element for a still image).
        max_bytes: largest input accepted.
        max_pixels: largest width x height of one frame, checked before decoding.
        max_frames: most frames `all_frames=True` returns; more is an ImageError.
        max_total_pixels: limit on the pixels of all returned frames together.

    Raises:
        ImageError: with the reason (missing, empty, not a raster image, too large,
            truncated or corrupt, unsupported colour mode).
    """
    if isinstance(source, Image.Image):
        return _load_pil(source, image_id, all_frames, max_pixels, max_frames, max_total_pixels)
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
        if len(data) > max_bytes:
            raise ImageError(
                f"image data is {len(data):,} bytes, over the limit of {max_bytes:,} bytes"
            )
        label = None
    elif isinstance(source, (str, Path)):
        text = str(source)
        if re.match(r"^[a-z][a-z0-9+.-]*://", text, re.IGNORECASE):
            raise ImageError(f"{text}: URLs are not fetched; download the image and give its path")
        data = _read_path(Path(source), max_bytes)
        label = text
    else:
        raise ImageError(f"cannot read an image from a {type(source).__name__}")
    try:
        return _decode(data, label, image_id, all_frames, max_pixels, max_frames, max_total_pixels)
    except ImageError as exc:
        if label is None:
            raise
        raise ImageError(f"{label}: {exc}") from None


def _decode(
    data: bytes,
    label: str | None,
    image_id: str | None,
    all_frames: bool,
    max_pixels: int,
    max_frames: int,
    max_total_pixels: int,
) -> LoadedImage | list[LoadedImage]:
    fmt = sniff_format(data)
    claimed = header_size(data, fmt)
    if claimed is not None:
        _check_pixels(claimed, max_pixels)
    digest = hashlib.sha256(data).hexdigest()
    ident = image_id or label or f"sha256:{digest[:16]}"
    try:
        opened = Image.open(BytesIO(data), formats=[fmt])
    except Image.DecompressionBombError as exc:
        raise ImageError(_bomb_reason(exc, max_pixels)) from None
    except UnidentifiedImageError:  # its message is only the stream's repr
        raise ImageError(
            f"corrupt {fmt} header: the data starts like {fmt} but its header cannot be parsed"
        ) from None
    except Exception as exc:  # Pillow raises many types on corrupt headers
        raise ImageError(f"corrupt {fmt} header: {_reason(exc)}") from None
    with opened as im:
        _check_pixels(im.size, max_pixels)
        n_frames = _frame_count(im, fmt)
        if not all_frames:
            return _frame(im, 0, n_frames, fmt, digest, ident, max_pixels)
        if n_frames > max_frames:
            raise ImageError(
                f"animation has {n_frames} frames, over the limit of {max_frames} "
                "(raise max_frames, or judge the first frame only)"
            )
        w, h = im.size
        if n_frames * w * h > max_total_pixels:
            raise ImageError(
                f"animation has {n_frames} frames of {w} x {h}: {n_frames * w * h:,} pixels in "
                f"all, over the limit of {max_total_pixels:,}"
            )
        return [_frame(im, i, n_frames, fmt, digest, ident, max_pixels) for i in range(n_frames)]


def _frame_count(im: Image.Image, fmt: str) -> int:
    try:
        return max(1, int(getattr(im, "n_frames", 1)))
    except Exception as exc:
        raise ImageError(f"corrupt {fmt} animation: {_reason(exc)}") from None


def _frame(
    im: Image.Image,
    index: int,
    n_frames: int,
    fmt: str,
    digest: str,
    ident: str,
    max_pixels: int,
) -> LoadedImage:
    where = f" (frame {index})" if n_frames > 1 else ""
    try:
        if n_frames > 1 or index:
            im.seek(index)
            # A later frame may enlarge the canvas (GIF): check again before decoding it.
            _check_pixels(im.size, max_pixels, f"frame {index}")
        im.load()
        notes: list[str] = []
        # exif_transpose reads the orientation of this frame's EXIF (the file's).
        rgb = to_rgb(_transpose(im, notes))
        if rgb is im:
            rgb = im.copy()
    except ImageError:
        raise
    except Image.DecompressionBombError as exc:
        raise ImageError(_bomb_reason(exc, 0)) from None
    except MemoryError:
        raise ImageError(f"out of memory decoding {fmt}{where}") from None
    except Exception as exc:
        raise ImageError(f"cannot decode {fmt}{where}: {_reason(exc)}") from None
    return LoadedImage(
        image=rgb,
        sha256=digest,
        image_id=ident,
        frame=index if n_frames > 1 else None,
        n_frames=n_frames,
        format=fmt,
        source_size=rgb.size,
        notes=tuple(notes),
    )


def _bomb_reason(exc: Exception, max_pixels: int) -> str:
    # Pillow's own guard fired (formats whose size we do not read ourselves, e.g. TIFF):
    # its message holds the pixel count.
    match = re.search(r"\((\d+) pixels\)", str(exc))
    if match and max_pixels:
        return (
            f"image is {int(match.group(1)):,} pixels, over the limit of {max_pixels:,} pixels "
            "(decompression-bomb protection)"
        )
    return f"decompression bomb refused: {exc}"


def _reason(exc: BaseException) -> str:
    text = str(exc).strip()
    name = type(exc).__name__
    if not text:
        return name
    # Pillow reports a broken stream as SyntaxError; say what it means.
    return text if isinstance(exc, (OSError, SyntaxError, ValueError)) else f"{name}: {text}"


def _load_pil(
    image: Image.Image,
    image_id: str | None,
    all_frames: bool,
    max_pixels: int,
    max_frames: int,
    max_total_pixels: int,
) -> LoadedImage | list[LoadedImage]:
    _check_pixels(image.size, max_pixels)
    n_frames = max(1, int(getattr(image, "n_frames", 1)))
    indices = range(n_frames) if all_frames else range(1)
    if all_frames and n_frames > max_frames:
        raise ImageError(f"animation has {n_frames} frames, over the limit of {max_frames}")
    if all_frames and n_frames * image.width * image.height > max_total_pixels:
        raise ImageError(f"animation is over the limit of {max_total_pixels:,} pixels in all")
    start = image.tell() if n_frames > 1 else 0
    out: list[LoadedImage] = []
    try:
        for index in indices:
            if n_frames > 1:
                image.seek(index)
            notes: list[str] = []
            rgb = to_rgb(_transpose(image, notes))
            if rgb is image:
                rgb = image.copy()
            # No file bytes: hash what the models will see, with its size.
            h = hashlib.sha256(f"{rgb.width}x{rgb.height}:".encode())
            h.update(rgb.tobytes())
            digest = h.hexdigest()
            out.append(
                LoadedImage(
                    image=rgb,
                    sha256=digest,
                    image_id=image_id or f"sha256:{digest[:16]}",
                    frame=index if n_frames > 1 else None,
                    n_frames=n_frames,
                    format="PIL",
                    source_size=rgb.size,
                    notes=tuple(notes),
                )
            )
    except ImageError:
        raise
    except Exception as exc:
        raise ImageError(f"cannot read the PIL image: {_reason(exc)}") from None
    finally:
        if n_frames > 1:
            image.seek(start)
    return out if all_frames else out[0]


# ---- resizing -----------------------------------------------------------------------------


def fit_pixels(
    image: Image.Image,
    max_pixels: int | None,
    min_side: int = 28,
    max_aspect: float = 200.0,
) -> Image.Image:
    """`image` resized once so that width x height <= max_pixels, keeping its aspect ratio,
    with both sides at least `min_side` (the model's smallest input, e.g. one 28-px patch
    pair for Qwen2-VL). Never enlarges except to reach `min_side`.

    An image too thin to keep its aspect ratio within both limits (e.g. 10000 x 10 with a
    small budget), or more elongated than `max_aspect` (Qwen2-VL's processor refuses more
    than 200:1), is squeezed along its long side: content is kept, proportions are not.

    Returns:
        the same object when nothing needs to change, else a new image.
    """
    w, h = image.size
    if max_pixels is not None and max_pixels < min_side * min_side:
        raise ValueError(f"max_pixels {max_pixels} is below min_side^2 = {min_side * min_side}")
    scale = 1.0
    if max_pixels is not None and w * h > max_pixels:
        scale = math.sqrt(max_pixels / (w * h))
    new_w, new_h = w * scale, h * scale
    short = min(new_w, new_h)
    if short < min_side:  # thin or tiny: lift the short side, then cap the long one
        up = min_side / short
        new_w, new_h = new_w * up, new_h * up
    short = min(new_w, new_h)
    long_cap = max_aspect * short
    if max_pixels is not None:
        long_cap = min(long_cap, max_pixels / short)
    if new_w >= new_h:
        new_w = min(new_w, long_cap)
    else:
        new_h = min(new_h, long_cap)
    # Floor keeps the budget; never below min_side.
    target = (max(min_side, int(new_w)), max(min_side, int(new_h)))
    if target == (w, h):
        return image
    return image.resize(target, Image.Resampling.BICUBIC)
