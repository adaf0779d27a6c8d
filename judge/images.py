"""Safe image loading: every image judge sees goes through `load_image`.

Images come from users and crawls, so they are treated as hostile:

* the format is sniffed from the content, never the file name, and only raster formats
  Pillow decodes in-process are opened (no EPS/PostScript, which would run Ghostscript);
* the pixel count of every frame is read from the file's structure (not only its header:
  a GIF frame may be larger than its logical screen, a JPEG may hold two size markers, a
  TIFF many pages) and checked *before* Pillow opens the file, so a decompression bomb (a
  tiny file that claims 50,000 x 50,000 pixels) costs nothing; a file with any frame over
  the limit is refused whole (`PixelLimitError`), whichever frames would be decoded;
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

from judge.errors import ImageError, PixelLimitError

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


# ---- sizes, read from the file's structure ------------------------------------------------

#: A label and a (width, height) that a decoder of the file would allocate.
Extent = tuple[str, tuple[int, int]]

_SOF_MARKERS = frozenset({*range(0xC0, 0xD0)} - {0xC4, 0xC8, 0xCC})
# The next marker after entropy-coded data: 0xFF followed by anything but a stuffed zero,
# a restart marker or another 0xFF (a fill byte before the marker).
_JPEG_MARKER = re.compile(rb"\xff[^\x00\xd0-\xd7\xff]")
_MAX_SEGMENTS = 100_000
_MAX_PAGES = 4096


def frame_sizes(data: bytes, fmt: str) -> list[Extent]:
    """Every size a decoder of `data` would allocate, read from the file's structure
    without decoding any pixel: ("image", (w, h)) first, then one entry per way the file
    can ask for more ("frame 3", "size marker 2", ...).

    A header alone is not enough, because decoders allocate what the rest of the file says:

    * GIF: Pillow grows the canvas from the logical screen to cover each frame, and
      allocates a frame-sized disposal buffer while it opens the file;
    * JPEG: Pillow takes the *last* SOFn marker before the scan, and a file may hold more
      than one (and, as MPO, several images);
    * TIFF: every page (IFD) has its own size, and tiles their own;
    * PNG (APNG): every frame control chunk has its own extent.

    Sizes only grow along the list (an entry is added where the largest so far grows), so
    checking each entry checks every frame. A structure that ends early gives what was
    read; Pillow's own size, checked after its lazy open, covers the rest.
    """
    try:
        if fmt == "GIF":
            return _gif_sizes(data)
        if fmt == "JPEG":
            return _jpeg_sizes(data)
        if fmt == "TIFF":
            return _tiff_sizes(data)
        if fmt == "PNG":
            return _png_sizes(data)
        if fmt == "BMP":
            return _bmp_sizes(data)
        if fmt == "WEBP":
            return _webp_sizes(data)
    except (struct.error, IndexError):
        pass
    return []


def check_frame_pixels(data: bytes, fmt: str, max_pixels: int) -> tuple[int, int] | None:
    """The image's size from its structure, with every frame's checked against
    `max_pixels` (None when the structure says nothing: Pillow's lazy open decides).

    Raises:
        PixelLimitError: a frame, or the canvas it needs, is over `max_pixels`.
        ImageError: a frame has an empty size.
    """
    sizes = frame_sizes(data, fmt)
    for what, size in sizes:
        _check_pixels(size, max_pixels, what)
    return sizes[0][1] if sizes else None


def _grow(out: list[Extent], what: str, size: tuple[int, int]) -> None:
    """Add `size` where it is larger than the last one: the list stays short however many
    frames the file has."""
    last = out[-1][1]
    if size[0] * size[1] > last[0] * last[1]:
        out.append((what, size))


def _gif_sizes(data: bytes) -> list[Extent]:
    screen = struct.unpack("<HH", data[6:10])
    out: list[Extent] = [("image", screen)]
    canvas_w, canvas_h = screen
    flags = data[10]
    pos = 13 + (3 << ((flags & 7) + 1) if flags & 0x80 else 0)
    frame, n = 0, len(data)
    while pos < n:
        kind = data[pos]
        if kind == 0x3B:  # trailer
            break
        if kind == 0x21:  # extension: a label, then data sub-blocks
            pos = _skip_sub_blocks(data, pos + 2)
        elif kind == 0x2C:  # image descriptor
            x, y, w, h, fl = struct.unpack("<HHHHB", data[pos + 1 : pos + 10])
            pos += 10 + (3 << ((fl & 7) + 1) if fl & 0x80 else 0)
            # As Pillow does: the canvas grows to cover the frame.
            canvas_w, canvas_h = max(canvas_w, x + w), max(canvas_h, y + h)
            _grow(out, f"frame {frame}", (canvas_w, canvas_h))
            frame += 1
            pos = _skip_sub_blocks(data, pos + 1)  # past the LZW code size
        else:
            pos += 1  # Pillow skips stray bytes between blocks; so must the walk
    return out


def _skip_sub_blocks(data: bytes, pos: int) -> int:
    n = len(data)
    while pos < n:
        size = data[pos]
        pos += 1 + size
        if size == 0:
            break
    return pos


def _jpeg_sizes(data: bytes) -> list[Extent]:
    out: list[Extent] = []
    pos, n, markers, sofs = 2, len(data), 0, 0
    while pos < n:
        at = data.find(b"\xff", pos)
        if at < 0 or at + 1 >= n:
            break
        marker = data[at + 1]
        if marker == 0xFF:  # fill byte
            pos = at + 1
            continue
        markers += 1
        if markers > _MAX_SEGMENTS:
            raise ImageError(f"corrupt JPEG: over {_MAX_SEGMENTS:,} marker segments")
        if marker in (0x00, 0x01, 0xD8) or 0xD0 <= marker <= 0xD7:
            pos = at + 2
            continue
        if marker == 0xD9:  # end of image: another follows only in an MPO file
            pos = at + 2
            if data[pos : pos + 2] != b"\xff\xd8":
                break
            continue
        (length,) = struct.unpack(">H", data[at + 2 : at + 4])
        if marker in _SOF_MARKERS:
            h, w = struct.unpack(">HH", data[at + 5 : at + 9])
            sofs += 1
            if out:
                _grow(out, f"size marker {sofs}", (w, h))
            else:
                out.append(("image", (w, h)))
        pos = at + 2 + max(length, 2)
        if marker == 0xDA:  # start of scan: entropy-coded data up to the next marker
            found = _JPEG_MARKER.search(data, pos)
            if found is None:
                break
            pos = found.start()
    return out


def _tiff_sizes(data: bytes) -> list[Extent]:
    order = "<" if data[:2] == b"II" else ">"
    (offset,) = struct.unpack(order + "I", data[4:8])
    out: list[Extent] = []
    seen: set[int] = set()
    page = 0
    while offset and offset not in seen and len(seen) < _MAX_PAGES and offset + 2 <= len(data):
        seen.add(offset)
        (count,) = struct.unpack(order + "H", data[offset : offset + 2])
        tags: dict[int, int] = {}
        for i in range(count):
            at = offset + 2 + 12 * i
            entry = data[at : at + 12]
            if len(entry) < 12:
                break
            tag, kind = struct.unpack(order + "HH", entry[:4])
            if tag in (256, 257, 322, 323):
                fmt = "H" if kind == 3 else "I"
                (tags[tag],) = struct.unpack(order + fmt, entry[8 : 8 + struct.calcsize(fmt)])
        what = "image" if page == 0 else f"page {page}"
        if 256 in tags and 257 in tags:
            out.append((what, (tags[256], tags[257])))
        if 322 in tags and 323 in tags:
            out.append((f"a tile of {what}", (tags[322], tags[323])))
        next_at = offset + 2 + 12 * count
        if next_at + 4 > len(data):
            break
        (offset,) = struct.unpack(order + "I", data[next_at : next_at + 4])
        page += 1
    return out


def _png_sizes(data: bytes) -> list[Extent]:
    if data[12:16] != b"IHDR":
        return []
    out: list[Extent] = [("image", struct.unpack(">II", data[16:24]))]
    if data.find(b"acTL") < 0:  # not animated: the header says it all
        return out
    pos, n, frame = 8, len(data), 0
    while pos + 8 <= n:
        length, kind = struct.unpack(">I4s", data[pos : pos + 8])
        if kind == b"fcTL" and length >= 20:
            w, h, x, y = struct.unpack(">IIII", data[pos + 12 : pos + 28])
            _grow(out, f"frame {frame}", (x + w, y + h))
            frame += 1
        if kind == b"IEND":
            break
        pos += 12 + length
    return out


def _bmp_sizes(data: bytes) -> list[Extent]:
    (header,) = struct.unpack("<I", data[14:18])
    if header == 12:  # OS/2 BITMAPCOREHEADER: 16-bit sides
        return [("image", struct.unpack("<HH", data[18:22]))]
    w, h = struct.unpack("<ii", data[18:26])
    return [("image", (abs(w), abs(h)))]


def _webp_sizes(data: bytes) -> list[Extent]:
    chunk = data[12:16]
    if chunk == b"VP8X":  # the canvas, which every frame must fit
        w = int.from_bytes(data[24:27], "little") + 1
        h = int.from_bytes(data[27:30], "little") + 1
        return [("image", (w, h))]
    if chunk == b"VP8L" and data[20:21] == b"\x2f":
        bits = int.from_bytes(data[21:25], "little")
        return [("image", ((bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1))]
    if chunk == b"VP8 ":
        w, h = struct.unpack("<HH", data[26:30])
        return [("image", (w & 0x3FFF, h & 0x3FFF))]
    return []


def _check_pixels(size: tuple[int, int], max_pixels: int, what: str = "image") -> None:
    w, h = size
    if w <= 0 or h <= 0:
        raise ImageError(f"{what} has an empty size {w}x{h}")
    if w * h > max_pixels:
        raise PixelLimitError(
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
    fmt, opened = open_checked(data, max_pixels)
    digest = hashlib.sha256(data).hexdigest()
    ident = image_id or label or f"sha256:{digest[:16]}"
    with opened as im:
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


def open_checked(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple[str, Image.Image]:
    """(format, the image opened lazily): no pixel decoded, every frame's size checked.

    The sizes in the file's structure (`frame_sizes`: every frame, every size marker) are
    checked before Pillow sees the file, since Pillow allocates while it opens some files
    (a GIF's disposal buffer); then Pillow's own idea of the size is checked too.

    Raises:
        PixelLimitError: a frame is over `max_pixels`.
        ImageError: not a supported raster image, or a corrupt header.
    """
    fmt = sniff_format(data)
    check_frame_pixels(data, fmt, max_pixels)
    try:
        opened = Image.open(BytesIO(data), formats=[fmt])
    except Image.DecompressionBombError as exc:
        raise PixelLimitError(_bomb_reason(exc, max_pixels)) from None
    except UnidentifiedImageError:  # its message is only the stream's repr
        raise ImageError(
            f"corrupt {fmt} header: the data starts like {fmt} but its header cannot be parsed"
        ) from None
    except Exception as exc:  # Pillow raises many types on corrupt headers
        raise ImageError(f"corrupt {fmt} header: {_reason(exc)}") from None
    try:
        _check_pixels(opened.size, max_pixels)
    except ImageError:
        opened.close()
        raise
    return fmt, opened


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
        raise PixelLimitError(_bomb_reason(exc, 0)) from None
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
