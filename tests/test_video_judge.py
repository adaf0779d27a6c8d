"""Clips through the Judge (judge.engine.clip) over a fake back end that sees colours.

The toy clips (judge.toy.clips) against the toy constitution: each verdict, the deciding
frame's time, the rules' evidence; early stopping and near-duplicate reuse ask fewer
questions and change no verdict; the relevance scan runs once per scene; a frame left
undecided leaves the clip undecided, never safe; a corrupt, truncated or oversized clip
is an error verdict and the rest of the batch is judged.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from judge import Judge, JudgeOptions, Verdict
from judge.store import Store
from judge.video import VideoLimits, VideoOptions
from tests._video_fake import TOY_POLICY, PaletteBackend, frame, frame_keys, write

N_RULES = 10  # the toy constitution's


@pytest.fixture(scope="module")
def toy_clips(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    from judge.toy.clips import write_clip_set

    folder = tmp_path_factory.mktemp("toy-clips")
    manifest = write_clip_set(folder)
    rows = [json.loads(line) for line in manifest.read_text().splitlines()]
    for row in rows:
        row["path"] = str(folder / row["video_path"])
    return rows


def judge(
    tmp_path: Path, source: Any, backend: PaletteBackend | None = None, **video: Any
) -> Verdict:
    options = JudgeOptions(
        all_frames=video.pop("all_frames", False),
        first_violation=video.pop("first_violation", False),
        video=VideoOptions(**video),
    )
    with Judge(TOY_POLICY, model="fake", backend=backend or PaletteBackend(), relevance="vlm",
               locator="off", options=options, store=tmp_path / "s.sqlite3") as j:
        return j.judge(source)


def asked(backend: PaletteBackend) -> int:
    return backend.asked["visibility"] + backend.asked["relevance"]


def test_toy_clips_verdicts_and_deciding_frames(
    toy_clips: list[dict[str, Any]], tmp_path: Path
) -> None:
    for row in toy_clips:
        verdict = judge(tmp_path, row["path"])
        assert verdict.outcome == row["label"], row["question_id"]
        assert sorted(verdict.violated) == sorted(row["rules"]), row["question_id"]
        assert verdict.clip is not None and verdict.sha256 is not None
        if row["label"] == "safe":
            assert verdict.time is None and verdict.frame is None
            assert all(r.outcome in ("not_violated", "irrelevant") for r in verdict.rules)
            continue
        # The onset falls between two grid points in some clips: the scene change is
        # sampled, so the deciding frame is the first frame of the violation.
        assert verdict.time == pytest.approx(row["onset"], abs=0.01), row["question_id"]
        for rule in verdict.rules:
            if rule.outcome == "violated":
                assert rule.time == verdict.time and rule.frame == verdict.frame
                assert rule.violated_at == [rule.time]
                assert rule.preconditions and all(
                    p.outcome == "met" for p in rule.preconditions
                )
        assert verdict.run is not None and verdict.run.calls["first_pass"] > 0


def test_early_stop_and_reuse_ask_less_and_change_no_verdict(
    toy_clips: list[dict[str, Any]], tmp_path: Path
) -> None:
    totals: dict[str, int] = {}
    for mode, video in {
        "default": {},
        "scan-all": {"scan_all": True},
        "no-reuse": {"reuse": False},
        "neither": {"scan_all": True, "reuse": False},
    }.items():
        backend = PaletteBackend()
        for row in toy_clips:
            verdict = judge(tmp_path, row["path"], backend, **video)
            assert (verdict.outcome, sorted(verdict.violated)) == (
                row["label"], sorted(row["rules"])
            ), (mode, row["question_id"])
            if row["onset"] is not None:
                assert verdict.time == pytest.approx(row["onset"], abs=0.01)
            assert verdict.clip is not None
            if mode in ("scan-all", "neither"):
                assert verdict.clip.stopped_at is None
                assert not any(r.outcome == "skipped" for r in verdict.rules)
            if mode in ("no-reuse", "neither"):
                assert verdict.clip.reused == 0
        totals[mode] = asked(backend)
    assert totals["default"] < totals["scan-all"] < totals["neither"]
    assert totals["default"] < totals["no-reuse"] < totals["neither"]


def test_early_stop_marks_what_it_did_not_judge(tmp_path: Path) -> None:
    path = write(tmp_path / "c.mp4", [(("green",), 1.5), (("blue",), 1.0), (("red",), 2.5)])
    stopped = judge(tmp_path, path)
    assert stopped.clip is not None and stopped.clip.stopped_at == pytest.approx(1.5)
    assert stopped.violated == ["blue-anywhere"] and stopped.time == pytest.approx(1.5)
    others = [r for r in stopped.rules if r.rule_id != "blue-anywhere"]
    assert all(r.outcome == "skipped" for r in others)
    assert "not judged after 1.50 s" in (others[0].reason or "")
    full = judge(tmp_path, path, scan_all=True)
    assert full.violated == ["blue-anywhere"] and full.time == stopped.time
    assert {r.outcome for r in full.rules if r.rule_id != "blue-anywhere"} <= {
        "not_violated", "irrelevant"
    }
    assert len(full.clip.sampled) > len(stopped.clip.sampled)  # type: ignore[union-attr]


def test_near_duplicates_reuse_answers_and_relevance_runs_once_per_scene(tmp_path: Path) -> None:
    # red 2 s, blue 1 s, red again 2 s (the same picture: a near-duplicate across cuts).
    path = write(tmp_path / "c.mp4", [(("red",), 2.0), (("blue",), 1.0), (("red",), 2.0)])
    backend = PaletteBackend()
    verdict = judge(tmp_path, path, backend, scan_all=True)
    clip = verdict.clip
    assert clip is not None
    assert [(f.time, f.reused_from) for f in clip.sampled] == [
        (0.0, None), (1.0, 0), (2.0, None), (3.0, 0), (4.0, 0)
    ]
    assert frame_keys(backend) == [0, 20]  # only two frames reached the model
    assert (clip.judged, clip.reused) == (2, 3)
    assert verdict.rules[0].rule_id == "blue-anywhere"
    assert verdict.rules[0].violated_at == [2.0]
    # The relevance scan: once per scene with reuse (each frame without).
    assert backend.asked["relevance"] == N_RULES * 2
    plain = PaletteBackend()
    again = judge(tmp_path, path, plain, scan_all=True, reuse=False)
    assert plain.asked["relevance"] == N_RULES * len(again.clip.sampled)  # type: ignore[union-attr]
    assert (again.outcome, again.violated, again.time) == (
        verdict.outcome, verdict.violated, verdict.time
    )


def test_one_scene_one_relevance_scan_even_when_frames_differ_a_little(tmp_path: Path) -> None:
    """Frames of one scene that are not near-duplicates (the light changes: the mean moves
    by about 4 of 255) are each judged, with the scene's one relevance scan."""
    from PIL import Image

    frames = []
    for grey in (215, 219, 211):
        picture = Image.new("RGB", (224, 224), (grey, grey, grey))
        picture.paste((215, 35, 35), (40, 40, 120, 120))
        frames += [picture] * 10
    from judge.toy.clips import write_clip

    path = write_clip(frames, tmp_path / "drift.mp4")
    backend = PaletteBackend()
    verdict = judge(tmp_path, path, backend, scan_all=True)
    assert verdict.clip is not None and verdict.clip.scenes == 1
    assert (verdict.clip.judged, verdict.clip.reused) == (3, 0)
    assert backend.asked["relevance"] == N_RULES


def test_undecided_on_one_frame_is_undecided_never_safe(tmp_path: Path) -> None:
    path = write(tmp_path / "c.mp4", [(("red",), 1.0), (("green",), 1.0), (("red",), 1.0)])
    sha = __import__("hashlib").sha256(path.read_bytes()).hexdigest()[:16]
    backend = PaletteBackend(fail_keys=[f"{sha}@10"])  # the green frame's answers go missing
    verdict = judge(tmp_path, path, backend)
    assert verdict.outcome == "undecided" and verdict.time == pytest.approx(1.0)
    assert verdict.frame == 10 and verdict.undecided
    rule = next(r for r in verdict.rules if r.outcome == "undecided")
    assert (rule.reason or "").startswith("at 1.00 s:") and rule.frame == 10
    assert verdict.clip is not None and verdict.clip.stopped_at is None
    # A model failure on a frame: the same.
    down = PaletteBackend(raise_keys=[f"{sha}@20"])
    failed = judge(tmp_path, path, down, reuse=False)
    assert failed.outcome == "undecided" and failed.time == pytest.approx(2.0)
    assert "model failure" in (failed.rules[0].reason or "")


def test_a_violation_with_an_undecided_rule_keeps_sampling(tmp_path: Path) -> None:
    """Early stop needs every other rule decided: with one undecided, sampling goes on
    (a later frame could still violate it), and the clip is unsafe with it undecided."""
    path = write(tmp_path / "c.mp4", [(("green",), 1.0), (("blue",), 1.0), (("red",), 1.0)])
    sha = __import__("hashlib").sha256(path.read_bytes()).hexdigest()[:16]
    verdict = judge(tmp_path, path, PaletteBackend(fail_keys=[f"{sha}@0"]))
    assert verdict.outcome == "unsafe" and "blue-anywhere" in verdict.violated
    assert verdict.undecided and verdict.clip is not None
    assert verdict.clip.sampled[-1].time == pytest.approx(2.0)  # judged to the end


def test_bytes_ids_window_and_first_violation(tmp_path: Path) -> None:
    path = write(tmp_path / "c.mp4", [(("green",), 1.2), (("red", "yellow"), 1.0),
                                      (("blue",), 1.0)])
    data = path.read_bytes()
    by_path = judge(tmp_path, path, window=1)
    by_bytes = judge(tmp_path, ("upload-7", data), window=4)
    assert by_bytes.image_id == "upload-7" and by_bytes.sha256 == by_path.sha256
    assert by_bytes.model_dump(exclude={"image_id", "run"}) == by_path.model_dump(
        exclude={"image_id", "run"}
    )
    assert judge(tmp_path, data).image_id == f"sha256:{by_path.sha256[:16]}"  # type: ignore[index]
    first = judge(tmp_path, path, first_violation=True)
    assert first.outcome == "unsafe" and first.time == pytest.approx(1.2)


def test_priors_are_shared_with_images_and_clips_are_logged(tmp_path: Path) -> None:
    import io

    path = write(tmp_path / "c.mp4", [(("red",), 1.0), (("blue",), 1.0)])
    buffer = io.BytesIO()
    frame("red", "green", "yellow", "blue").save(buffer, "PNG")
    backend = PaletteBackend()
    with Judge(TOY_POLICY, model="fake", backend=backend, relevance="off", locator="off",
               store=tmp_path / "s.sqlite3") as j:
        j.judge(buffer.getvalue())
        priors = backend.asked["prior"]
        clip = j.judge(path)
    # The toy rules ask about four statements: each prior once, for images and clips.
    assert priors == 4 and backend.asked["prior"] == priors
    with Store(tmp_path / "s.sqlite3") as store:
        rows = store.decisions(sha256=clip.sha256)
    assert len(rows) == 1 and Verdict.model_validate(rows[0]["verdict"]) == clip


def test_bad_clips_are_error_verdicts_and_the_batch_goes_on(tmp_path: Path) -> None:
    good = write(tmp_path / "good.mp4", [(("blue",), 1.0)])
    data = good.read_bytes()
    (tmp_path / "corrupt.mp4").write_bytes(data[:40] + bytes(range(256)) * 8)
    (tmp_path / "truncated.mp4").write_bytes(data[: len(data) // 2])
    big = write(tmp_path / "big.mp4", [(("red",), 3.0)])
    options = JudgeOptions(video=VideoOptions(limits=VideoLimits(max_seconds=2)))
    with Judge(TOY_POLICY, model="fake", backend=PaletteBackend(), relevance="off",
               locator="off", options=options, store=tmp_path / "s.sqlite3") as j:
        verdicts = j.judge_many([str(tmp_path / n) for n in (
            "corrupt.mp4", "good.mp4", "truncated.mp4", "big.mp4", "missing.mp4")])
    outcomes = [v.outcome for v in verdicts]
    assert outcomes == ["error", "unsafe", "error", "error", "error"]
    errors = [v.error or "" for v in verdicts]
    assert "corrupt or truncated MP4 container" in errors[0]
    assert "corrupt or truncated MP4 container" in errors[2]
    assert "lasts 3.0 s, over the limit of 2 s" in errors[3]
    assert "no such file" in errors[4]
    assert all(v.image_id.endswith(n) for v, n in zip(verdicts, (
        "corrupt.mp4", "good.mp4", "truncated.mp4", "big.mp4", "missing.mp4"), strict=True))
    del big


def test_a_clip_sampled_short_of_its_end_cannot_be_safe(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import dataclasses

    from judge.engine import clip as engine_clip
    from judge.video import open_clip
    from tests.test_video_decode import _no_duration_webm

    data = _no_duration_webm(50)  # 5 s of grey, its header without a duration
    # The demux pass measures it: the grid is widened to span it.
    spread = judge(tmp_path, data, max_frames=2)
    assert spread.outcome == "safe" and spread.clip is not None
    assert spread.clip.interval == pytest.approx(2.5) and spread.clip.capped_at is None
    # Were its duration unknown (no timestamps at all), 2 frames cover the first 2 s only.

    def unknown(source: Any, limits: Any) -> Any:
        opened = open_clip(source, limits)
        opened.probe = dataclasses.replace(opened.probe, duration=None)
        return opened

    monkeypatch.setattr(engine_clip, "open_clip", unknown)
    short = judge(tmp_path, data, max_frames=2)
    assert short.outcome == "undecided" and short.clip is not None
    assert short.clip.capped_at == pytest.approx(2.0)
    assert all("--max-frames 2 was reached" in (r.reason or "") for r in short.rules)
    every = judge(tmp_path, data, all_frames=True, max_frames=10)
    assert every.outcome == "error" and "--all-frames" in (every.error or "")
    assert "over --max-frames 10" in (every.error or "")


def test_a_rule_subset_names_its_own_deciding_frame(tmp_path: Path) -> None:
    """The service's rule subset (judge.serve.moderation.restrict) recomputes the clip's
    deciding frame from the rules kept, not the whole policy's."""
    from judge.serve.moderation import restrict

    path = write(tmp_path / "c.mp4", [(("green",), 1.0), (("blue",), 1.0),
                                      (("red", "yellow"), 1.0), (("green",), 1.0)])
    verdict = judge(tmp_path, path, scan_all=True)
    assert (verdict.time, verdict.frame) == (1.0, 10)
    narrowed = restrict(verdict, ["red-and-yellow", "green-and-yellow"])
    assert (narrowed.outcome, narrowed.time, narrowed.frame) == ("unsafe", 2.0, 20)
    safe = restrict(verdict, ["green-and-yellow"])
    assert (safe.outcome, safe.time, safe.frame) == ("safe", None, None)
