"""Video: clips judged against the same constitution as images (docs/video.md).

* `options`: how a clip is sampled (`VideoOptions`) and what a clip may be (`VideoLimits`);
* `decode`: opening a clip safely, its limits checked before any frame is decoded
  (PyAV for MP4/MOV, WebM/MKV and AVI; Pillow for animated GIF, WebP and PNG);
* `sample`: which frames are judged, which frames are near-duplicates, where scenes change.

The procedure over a clip's frames (early stopping, reuse, the clip's verdict) is the
engine's: `judge.engine.clip`. Nothing here imports the engine.
"""

from __future__ import annotations

from judge.video.decode import VIDEO_SUFFIXES, ClipProbe, media_kind, open_clip, sniff_container
from judge.video.options import VideoLimits, VideoOptions

__all__ = [
    "VIDEO_SUFFIXES",
    "ClipProbe",
    "VideoLimits",
    "VideoOptions",
    "media_kind",
    "open_clip",
    "sniff_container",
]
