"""Clips through `judge serve` (real uvicorn on 127.0.0.1, a back end that sees colours):
POST /v1/judge takes a clip (multipart, base64, a data:video URL) under its own limits and
answers with the deciding frame; /v1/moderations stays image-only (415)."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from judge.serve import Limits
from tests._video_fake import PaletteBackend, write
from tests.test_serve import TOKENS, Running, part, png, policy  # noqa: F401  (a fixture)


@pytest.fixture(scope="module")
def served(policy: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:  # noqa: F811
    from judge.serve.load import ThreadedServer, colour_service

    folder = tmp_path_factory.mktemp("served-video")
    limits = Limits(max_images=4, max_body_bytes=2_000_000, max_video_bytes=200_000,
                    max_video_seconds=5.0, max_video_pixels=100_000)
    service, app = colour_service(policy, folder / "s.sqlite3", backend=PaletteBackend(),
                                  tokens=TOKENS, limits=limits)
    running = Running(service, ThreadedServer(app).start(), folder / "s.sqlite3")
    yield running
    running.server.stop()


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    folder = tmp_path_factory.mktemp("clip")
    return write(folder / "c.mp4", [(("green",), 1.0), (("blue",), 1.0), (("red",), 1.0)])\
        .read_bytes()


def error(response: Any) -> tuple[int, str]:
    return response.status_code, response.json()["error"]["code"]


def test_a_clip_in_a_multipart_upload_and_in_json(served: Running, clip: bytes) -> None:
    files = [("image", ("c.mp4", clip, "video/mp4")),
             ("image", ("b.png", png("blue"), "image/png"))]
    answer = served.post("/v1/judge", files=files, data={"explain": "true"}).json()
    video, still = answer["verdicts"]
    assert (video["image_id"], video["outcome"], video["violated"]) == (
        "c.mp4", "unsafe", ["blue-anywhere"])
    assert (video["time"], video["frame"]) == (1.0, 10)
    assert video["clip"]["format"] == "mp4" and video["clip"]["stopped_at"] == 1.0
    assert video["rules"][0]["preconditions"], "explain keeps the deciding frame's evidence"
    assert still["outcome"] == "unsafe" and still["clip"] is None
    assert answer["flagged"] == [True, True]
    text = base64.b64encode(clip).decode()
    for item in ({"data": text, "id": "as-base64"}, {"url": "data:video/mp4;base64," + text}):
        verdict = served.post("/v1/judge", json={"images": [item]}).json()["verdicts"][0]
        assert (verdict["outcome"], verdict["time"]) == ("unsafe", 1.0)
    # A rule subset narrows a clip's verdict and its deciding frame to those rules.
    subset = served.post("/v1/judge", json={"images": [{"data": text}],
                                            "rules": ["blue-anywhere", "red-and-yellow"]})
    narrowed = subset.json()["verdicts"][0]
    assert [r["rule_id"] for r in narrowed["rules"]] == ["blue-anywhere", "red-and-yellow"]
    assert (narrowed["outcome"], narrowed["time"], narrowed["frame"]) == ("unsafe", 1.0, 10)
    logged = [r for r in served.rows() if r["image_sha256"] == video["sha256"]]
    assert logged and logged[0]["violated"] == ["blue-anywhere"]  # in the decision log


def test_clips_have_their_own_limits(served: Running, clip: bytes, tmp_path: Path) -> None:
    long = write(tmp_path / "long.mp4", [(("red",), 6.0)]).read_bytes()
    wide = write(tmp_path / "wide.mp4", [(("red",), 1.0)], side=320).read_bytes()
    for data, code, words in (
        (long, 413, "lasts 6.0 s, over the limit of 5 s"),
        (wide, 413, "320 x 320 = 102,400 pixels, over the limit of 100,000"),
        (clip[: len(clip) // 2], 422, "corrupt or truncated MP4 container"),
        (clip[:40] + bytes(range(256)) * 4, 422, "corrupt or truncated MP4 container"),
    ):
        answer = served.post("/v1/judge", files=[("image", ("x.mp4", data, "video/mp4"))])
        assert error(answer) == (code, "video_too_large" if code == 413 else "bad_video")
        assert words in answer.json()["error"]["message"]
    big = clip + b"\0" * 200_000  # over --max-video-bytes, under the body limit
    answer = served.post("/v1/judge", files=[("image", ("big.mp4", big, "video/mp4"))])
    assert error(answer) == (413, "video_too_large")


def test_moderations_stay_image_only(served: Running, clip: bytes) -> None:
    text = base64.b64encode(clip).decode()
    for url in ("data:video/mp4;base64," + text, "data:image/png;base64," + text):
        answer = served.post("/v1/moderations", json={"input": [
            part(png("green")), {"type": "image_url", "image_url": {"url": url}}]})
        assert error(answer) == (415, "video_not_supported")
        message = answer.json()["error"]["message"]
        assert message.startswith("input[1]:") and "send clips to /v1/judge" in message.lower()
