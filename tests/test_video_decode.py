"""Reading clips safely (judge.video.decode): containers, animations, and hostile files.

Every limit is checked before a frame is decoded (bytes, the header's size, duration and
frame count, then the demux pass that counts packets); a corrupt, truncated or oversized
clip is a VideoError (an ImageError: one file's error, never a crash) with the reason.
"""

from __future__ import annotations

import io
import os
import sys
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from judge.errors import ImageError, VideoError, VideoLimitError
from judge.video import VideoLimits, media_kind, open_clip, sniff_container
from tests._video_fake import clip_frames, frame, write

SEGMENTS = [((), 1.0), (("blue",), 0.5), (("red", "green"), 1.0)]


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("clips")
    out = {s: write(folder / f"c{s}", SEGMENTS) for s in (".mp4", ".webm", ".mkv", ".mov",
                                                         ".avi", ".gif")}
    frames = clip_frames(SEGMENTS)
    for name, fmt in (("c.webp", "WEBP"), ("c.png", "PNG")):
        frames[0].save(folder / name, fmt, save_all=True, append_images=frames[1:],
                       duration=100, loop=0, **({"lossless": True} if fmt == "WEBP" else {}))
        out[Path(name).suffix] = folder / name
    return out


def _no_duration_webm(frames: int = 50) -> bytes:
    """A WebM written to a stream that cannot seek: its header gives no duration (a
    live recording), so only the demux pass can tell how long it is."""

    class Pipe:
        def __init__(self) -> None:
            self.data = bytearray()

        def write(self, chunk: bytes) -> int:
            self.data += chunk
            return len(chunk)

    pipe = Pipe()
    with av.open(pipe, "w", format="webm") as out:  # type: ignore[call-overload]
        stream = out.add_stream("libvpx-vp9", rate=10,
                                options={"deadline": "realtime", "cpu-used": "8"})
        stream.width = stream.height = 32
        stream.pix_fmt = "yuv420p"
        for i in range(frames):
            picture = np.full((32, 32, 3), i * 4, np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(picture, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return bytes(pipe.data)


# ---- what is a clip ---------------------------------------------------------------------


def test_containers_are_sniffed_from_their_bytes() -> None:
    assert sniff_container(b"\x00\x00\x00\x20ftypisom\x00\x00\x02\x00") == "mov"
    assert sniff_container(b"\x00\x00\x00\x14ftypqt  \x00\x00\x00\x00") == "mov"
    assert sniff_container(b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00") is None  # a photo
    assert sniff_container(b"\x00\x00\x00\x18ftypavif\x00\x00\x00\x00") is None
    assert sniff_container(b"\x1a\x45\xdf\xa3\x01\x00\x00\x00") == "matroska"
    assert sniff_container(b"RIFF\x00\x00\x00\x00AVI LIST") == "avi"
    assert sniff_container(b"RIFF\x00\x00\x00\x00WEBPVP8 ") is None
    assert sniff_container(b"\x89PNG\r\n\x1a\n") is None
    assert sniff_container(b"#EXTM3U\n#EXT-X-VERSION:3\n") is None  # a playlist is no clip


def test_media_kind(clips: dict[str, Path], tmp_path: Path) -> None:
    for suffix in (".mp4", ".webm", ".mkv", ".mov", ".avi"):
        assert media_kind(clips[suffix]) == "video"
        assert media_kind(clips[suffix].read_bytes()) == "video"
    for suffix in (".gif", ".webp", ".png"):
        assert media_kind(clips[suffix]) == "animation", suffix
    for name in ("still.gif", "still.png", "still.webp"):
        frame("red").save(tmp_path / name)
        assert media_kind(tmp_path / name) == "image", name
    assert media_kind(_png(frame("red"))) == "image"
    assert media_kind(tmp_path / "missing.mp4") == "image"  # the image loader says why
    assert media_kind(b"GIF89a broken") == "image"


@pytest.mark.parametrize(
    ("suffix", "fmt", "codec"),
    [(".mp4", "mp4", "h264"), (".webm", "webm", "vp9"), (".mkv", "mkv", "h264"),
     (".mov", "mov", "h264"), (".avi", "avi", "mpeg4"), (".gif", "gif", None),
     (".webp", "webp", None), (".png", "apng", None)],
)
def test_every_container_opens_with_its_times(
    clips: dict[str, Path], suffix: str, fmt: str, codec: str | None
) -> None:
    clip = open_clip(clips[suffix])
    probe = clip.probe
    assert (probe.format, probe.codec, probe.width, probe.height) == (fmt, codec, 64, 64)
    assert probe.duration == pytest.approx(2.5, abs=0.11)
    frames = list(clip.frames())
    assert len(frames) == probe.frames
    times = [f.time for f in frames]
    assert times == sorted(times) and times[0] == 0.0
    # The blue segment starts at 1.0 s, whatever the container did with identical frames.
    blue = next(f for f in frames if f.thumb[5:11, 5:11, 2].mean() - f.thumb[5:11, 5:11, 0].mean()
                > 100)
    assert blue.time == pytest.approx(1.0, abs=0.01)
    assert blue.picture().size == (64, 64) and blue.picture().mode == "RGB"


# ---- hostile files ------------------------------------------------------------------------


def test_corrupt_and_truncated_containers_say_why(clips: dict[str, Path], tmp_path: Path) -> None:
    data = clips[".mp4"].read_bytes()
    with pytest.raises(VideoError, match=r"corrupt or truncated MP4 container: Invalid data"):
        open_clip(data[:40] + bytes(range(256)) * 4)
    # The index (moov) comes last in this MP4: cut short, it cannot be opened at all.
    with pytest.raises(VideoError, match=r"corrupt or truncated MP4 container"):
        open_clip(data[: len(data) // 2])
    # With the index first (faststart), the packets are missing: found by counting them.
    fast = tmp_path / "fast.mp4"
    with av.open(str(clips[".mp4"])) as src, av.open(str(fast), "w",
                                                     options={"movflags": "faststart"}) as dst:
        stream = dst.add_stream_from_template(src.streams.video[0])
        for packet in src.demux(src.streams.video[0]):
            if packet.dts is not None:
                packet.stream = stream
                dst.mux(packet)
    cut = fast.read_bytes()
    with pytest.raises(VideoError, match=r"truncated MP4: the header declares 25 frames, the "
                                         r"file holds \d+"):
        open_clip(cut[: len(cut) * 2 // 3])
    webm = clips[".webm"].read_bytes()
    with pytest.raises(VideoError, match=r"truncated WEBM: its frames end at [\d.]+ s of the "
                                         r"2.50 s its header declares"):
        open_clip(webm[: len(webm) // 2])
    with pytest.raises(VideoError, match=r"not a clip: a still PNG image"):
        open_clip(_png(frame("red")))
    with pytest.raises(VideoError, match=r"looks like text"):
        open_clip(b"#EXTM3U\n#EXTINF:10,\nfile:///etc/passwd\n")


def test_corrupt_packets_fail_while_decoding(tmp_path: Path) -> None:
    """A key frame whose bytes are garbage passes the demux pass (the index is intact)
    and fails the decoder: the frames' iterator raises a VideoError naming the frame."""
    path = write(tmp_path / "c.mp4", [((), 0.5), (("red",), 2.0)], fps=10)
    data = bytearray(path.read_bytes())
    with av.open(str(path)) as container:
        first = next(p for p in container.demux(video=0) if p.size)
        start, size = int(first.pos), int(first.size)
    data[start : start + size] = b"\xff" * size
    clip = open_clip(bytes(data))
    assert clip.probe.frames == 25
    with pytest.raises(VideoError, match=r"corrupt MP4 at frame 0: Invalid data found"):
        list(clip.frames())


def test_limits_are_checked_before_decoding(clips: dict[str, Path]) -> None:
    path = clips[".mp4"]
    size = path.stat().st_size
    with pytest.raises(VideoLimitError, match=rf"{size:,} bytes, over the limit of 1,000 bytes"):
        open_clip(path, VideoLimits(max_bytes=1000))
    with pytest.raises(VideoLimitError, match=r"over the limit of 1,000 bytes"):
        open_clip(path.read_bytes(), VideoLimits(max_bytes=1000))
    with pytest.raises(VideoLimitError, match=r"lasts 2.5 s, over the limit of 2 s"):
        open_clip(path, VideoLimits(max_seconds=2))
    with pytest.raises(VideoLimitError, match=r"64 x 64 = 4,096 pixels, over the limit of 4,000"):
        open_clip(path, VideoLimits(max_pixels=4000))
    with pytest.raises(VideoLimitError, match=r"25 frames, over the limit of 10"):
        open_clip(path, VideoLimits(max_frame_count=10))
    with pytest.raises(VideoLimitError, match=r"the animation has 3 frames, over the limit of 2"):
        open_clip(clips[".webp"], VideoLimits(max_frame_count=2))
    with pytest.raises(VideoLimitError, match=r"the animation lasts 2.5 s, over the limit"):
        open_clip(clips[".png"], VideoLimits(max_seconds=2))
    with pytest.raises(VideoLimitError, match=r"over the limit of 4,000 pixels"):
        open_clip(clips[".gif"], VideoLimits(max_pixels=4000))


def test_a_header_without_a_duration_is_measured_by_the_demux_pass() -> None:
    data = _no_duration_webm(50)
    probe = open_clip(data).probe
    assert (probe.frames, probe.duration) == (50, pytest.approx(5.0, abs=0.11))
    with pytest.raises(VideoLimitError, match=r"runs past 3 s \(the limit\); its header gives "
                                              r"no duration"):
        open_clip(data, VideoLimits(max_seconds=3))
    with pytest.raises(VideoLimitError, match=r"more than 20 frames \(the limit\)"):
        open_clip(data, VideoLimits(max_frame_count=20))


def test_no_video_stream(tmp_path: Path) -> None:
    path = tmp_path / "sound.mkv"
    with av.open(str(path), "w") as out:
        stream = out.add_stream("pcm_s16le", rate=8000)
        stream.layout = "mono"
        samples = np.zeros((1, 8000), np.int16)
        audio = av.AudioFrame.from_ndarray(samples, format="s16", layout="mono")
        audio.sample_rate = 8000
        for packet in stream.encode(audio):
            out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    with pytest.raises(VideoError, match=r"the MKV file holds no video stream"):
        open_clip(path)


def test_files_that_are_not_files(tmp_path: Path) -> None:
    with pytest.raises(VideoError, match=r"missing.mp4: no such file"):
        open_clip(tmp_path / "missing.mp4")
    # A FIFO would block any open or read: it is refused from its file type alone.
    fifo = tmp_path / "pipe.mp4"
    os.mkfifo(fifo)
    assert media_kind(fifo) == "image"  # the image loader refuses it, with the reason
    with pytest.raises(VideoError, match=r"pipe.mp4: not a regular file"):
        open_clip(fifo)
    with pytest.raises(VideoError, match=r"is a directory|not a regular file"):
        open_clip(tmp_path)


def test_without_pyav_a_clip_is_an_error_that_names_the_extra(
    clips: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "av", None)  # `import av` now raises ImportError
    with pytest.raises(VideoError, match=r"needs PyAV.*pip install 'judge\[video\]'"):
        open_clip(clips[".mp4"])
    assert open_clip(clips[".gif"]).probe.frames == 3  # animations need only Pillow
    from judge.inputs import precheck

    found = precheck(str(clips[".mp4"]))
    assert isinstance(found, ImageError) and "pip install 'judge[video]'" in str(found)


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def test_frames_are_turned_upright_by_the_display_matrix() -> None:
    """A portrait phone clip is stored sideways with a rotation in its display matrix:
    the picture the model sees is turned by it (counterclockwise degrees, as PyAV gives)."""
    from judge.video.decode import _picture_of

    class Stored:
        def __init__(self, rotation: int) -> None:
            self.rotation = rotation

        def to_image(self) -> Image.Image:
            image = Image.new("RGB", (40, 20), (255, 255, 255))
            image.paste((255, 0, 0), (0, 0, 10, 20))  # a red band on the left
            return image

    assert _picture_of(Stored(0))().size == (40, 20)
    upright = _picture_of(Stored(-90))()  # turn clockwise
    assert upright.size == (20, 40) and upright.getpixel((10, 2)) == (255, 0, 0)
    assert _picture_of(Stored(90))().getpixel((10, 38)) == (255, 0, 0)
