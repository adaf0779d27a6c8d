"""How a clip is sampled and what a clip may be: plain settings, no decoder imported.

`VideoOptions` rides inside `judge.engine.procedure.JudgeOptions` (its `video` field), so
every path that already passes JudgeOptions (the CLI, `judge batch`, `judge eval`, the
service) passes these too.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from judge.errors import InputError

#: Frames sampled per second by default: one a second, plus a frame at each scene change
#: (judge.video.sample). A violation shorter than a second that arrives without a visible
#: change can fall between two samples; raise --fps for such clips.
DEFAULT_FPS = 1.0
#: Most frames judged per clip by default (five minutes at 1 fps). A longer clip is
#: sampled more sparsely so that the samples still span all of it.
DEFAULT_MAX_FRAMES = 300
#: Sampled frames judged at once within one clip: the back end sees batches, and early
#: stopping wastes at most this many frames minus one.
DEFAULT_WINDOW = 4


@dataclass(frozen=True)
class VideoLimits:
    """What a clip may be, checked from the container's header and then from its packets
    (the demuxer walks the file without decoding a frame) before any frame is decoded;
    frames that decode larger than the header said are refused as they come.

    Attributes:
        max_bytes: the largest file (1 GiB).
        max_seconds: the longest duration (one hour).
        max_pixels: the largest width x height of a frame (36 MP: 8K UHD fits).
        max_frame_count: the most frames in the clip (decoded, not sampled): every
            frame is decoded to find scene changes, so this bounds the decoding work.
    """

    max_bytes: int = 1024 * 1024 * 1024
    max_seconds: float = 3600.0
    max_pixels: int = 36_000_000
    max_frame_count: int = 250_000

    def __post_init__(self) -> None:
        if min(self.max_bytes, self.max_pixels, self.max_frame_count) < 1 or not (
            self.max_seconds > 0
        ):
            raise InputError("video limits must be positive")


@dataclass(frozen=True)
class VideoOptions:
    """How a clip is judged.

    Attributes:
        fps: most frames sampled per second, on a regular grid from the first frame;
            frames at scene changes come on top. None samples every frame (what
            `--all-frames` asks for).
        max_frames: most frames judged per clip. A clip longer than max_frames / fps
            seconds is sampled on a wider grid, so the samples still span it.
        scan_all: judge every sampled frame; by default sampling stops once the clip's
            verdict cannot change (judge.engine.clip).
        reuse: a frame that is a near-duplicate of one already judged takes its answers,
            and the relevance scan runs once per scene (judge.video.sample says how near).
        window: sampled frames judged at once.
        limits: what a clip may be.
    """

    fps: float | None = DEFAULT_FPS
    max_frames: int = DEFAULT_MAX_FRAMES
    scan_all: bool = False
    reuse: bool = True
    window: int = DEFAULT_WINDOW
    limits: VideoLimits = field(default_factory=VideoLimits)

    def __post_init__(self) -> None:
        if self.fps is not None and not (0 < self.fps <= 1000):
            raise InputError(f"--fps must be above 0 and at most 1000, not {self.fps}")
        if self.max_frames < 1:
            raise InputError(f"--max-frames must be at least 1, not {self.max_frames}")
        if self.window < 1:
            raise InputError(f"the frame window must be at least 1, not {self.window}")
