"""The image files a command was given: arguments expanded to files, and each file checked
before any model loads.

`judge` and `judge batch` read their arguments alike: a file as given (a missing one
becomes that image's error, not a crash), a folder walked for image files, a glob
expanded. It lives outside judge/commands/ so that the batch runner can share it without
importing a command module.
"""

from __future__ import annotations

import glob
import os
import stat
from collections.abc import Sequence
from pathlib import Path

from judge.errors import ImageError, InputError
from judge.images import IMAGE_SUFFIXES, sniff_format
from judge.video.decode import VIDEO_SUFFIXES, sniff_container, video_available

# What a folder scan picks up: images and video clips (each still read by its bytes).
_SUFFIXES = IMAGE_SUFFIXES | VIDEO_SUFFIXES

_GLOB_CHARS = set("*?[")
_SNIFF_BYTES = 64


def expand_inputs(args: Sequence[str]) -> list[str]:
    """Files as given, directories walked (image files, sorted), globs expanded; each
    path once, in order. A glob or directory with no image is an InputError."""
    out: list[str] = []
    for arg in args:
        path = Path(arg)
        if path.is_dir():
            found = sorted(
                str(p)
                for p in path.rglob("*")
                if p.is_file() and p.suffix.lower() in _SUFFIXES
            )
            if not found:
                raise InputError(f"{arg}: the folder holds no image files")
            out += found
        elif not path.exists() and _GLOB_CHARS & set(arg):
            found = sorted(p for p in glob.glob(arg, recursive=True) if Path(p).is_file())
            if not found:
                raise InputError(f"{arg}: no file matches this pattern")
            out += found
        else:
            # A missing file is judged as an "error" verdict, not a crash of the batch.
            out.append(arg)
    return list(dict.fromkeys(out))


def precheck(path: str) -> ImageError | None:
    """Why the file at `path` cannot be judged, found without decoding it (it exists, is a
    regular readable file, and starts like a supported image or video container, with its
    decoder installed); None if it may be."""
    try:
        info = os.stat(path)
    except FileNotFoundError:
        return ImageError(f"{path}: no such file")
    except (OSError, ValueError) as error:
        return ImageError(f"{path}: cannot read: {error}")
    if not stat.S_ISREG(info.st_mode):
        return ImageError(f"{path}: not a regular file")
    try:
        with open(path, "rb") as handle:
            head = handle.read(_SNIFF_BYTES)
        if sniff_container(head) is None:
            sniff_format(head)
        elif not video_available():
            return ImageError(f"{path}: reading video needs PyAV: pip install 'judge[video]'")
    except OSError as error:
        return ImageError(f"{path}: cannot read: {error.strerror or error}")
    except ImageError as error:
        return ImageError(f"{path}: {error}")
    return None
