"""The Judge API (sync, async, streaming, many images) and the store, over a scripted back end."""

from __future__ import annotations

import asyncio
import hashlib
import io
import multiprocessing
import os
import signal
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from judge.engine import Judge, JudgeOptions, Verdict
from judge.errors import BackendError, InputError
from judge.models.base import YesNoQuery, YesNoResult
from judge.models.scripted import ScriptedBackend
from judge.store import Store
from tests.test_engine_decisions import make_lock, rule


def png(colour: tuple[int, int, int], size: tuple[int, int] = (64, 48)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, "PNG")
    return buffer.getvalue()


RED, BLUE = png((220, 30, 30)), png((30, 60, 220))


def key(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:16]


def scripted(**extra: Any) -> ScriptedBackend:
    """'red' is met on the red image, not met on the blue one; prior 0.5."""
    return ScriptedBackend(
        {("red", key(RED)): 0.95, ("red", key(BLUE)): 0.05, ("red", None): 0.5}, **extra
    )


def make_judge(tmp_path: Path, backend: Any = None, **kwargs: Any) -> Judge:
    kwargs.setdefault("relevance", "off")
    kwargs.setdefault("locator", "off")
    return Judge(
        make_lock(rule("no-red", "red")),
        backend=backend or scripted(),
        store=tmp_path / "store.sqlite3",
        **kwargs,
    )


def test_sync_judge_paths_bytes_pil_and_ids(tmp_path: Path) -> None:
    (tmp_path / "red.png").write_bytes(RED)
    with make_judge(tmp_path) as judge:
        by_path = judge.judge(tmp_path / "red.png")
        by_bytes = judge.judge(("blue-one", BLUE))
    assert by_path.outcome == "unsafe" and by_path.violated == ["no-red"]
    assert by_path.image_id.endswith("red.png")
    assert by_path.sha256 == hashlib.sha256(RED).hexdigest()
    assert by_bytes.outcome == "safe" and by_bytes.image_id == "blue-one"
    run = by_path.run
    assert run is not None and run.model_id == "scripted-model" and run.backend == "scripted"
    assert run.calls == {"first_pass": 1, "prior": 1}
    assert run.prompt_versions["visibility_question"] >= 1 and len(run.lock_hash) == 16
    assert "load" in run.timings and "total" in run.timings


def test_pil_input(tmp_path: Path) -> None:
    image = Image.new("RGB", (64, 48), (220, 30, 30))
    backend = ScriptedBackend({("red", "*"): 0.95, ("red", None): 0.5})
    with make_judge(tmp_path, backend) as judge:
        assert judge.judge(image).outcome == "unsafe"


def test_unreadable_image_is_an_error_verdict_in_a_batch(tmp_path: Path) -> None:
    (tmp_path / "bad.png").write_bytes(b"<html>not an image</html>")
    with make_judge(tmp_path) as judge:
        verdicts = judge.judge_many([RED, tmp_path / "bad.png", tmp_path / "missing.png", BLUE])
    assert [v.outcome for v in verdicts] == ["unsafe", "error", "error", "safe"]
    assert verdicts[1].error and "bad.png" in verdicts[1].error


def test_judge_many_keeps_order_and_batches_images_together(tmp_path: Path) -> None:
    class Slow(ScriptedBackend):
        async def yes_no(self, queries: Any) -> list[YesNoResult]:
            await asyncio.sleep(0.01)
            return await super().yes_no(queries)

    backend = Slow({("red", key(RED)): 0.95, ("red", key(BLUE)): 0.05, ("red", None): 0.5})
    images = [RED, BLUE] * 4
    with make_judge(tmp_path, backend) as judge:
        verdicts = judge.judge_many(images, concurrency=8)
        streamed = list(judge.stream(images, concurrency=3))
    assert [v.outcome for v in verdicts] == ["unsafe", "safe"] * 4
    assert sorted(v.outcome for v in streamed) == sorted(v.outcome for v in verdicts)
    # The prior was asked once for all 16 images.
    assert sum(1 for c in backend.calls_of("yes_no") if c.image_key is None) == 1


def test_async_api_and_stream(tmp_path: Path) -> None:
    async def main() -> list[Verdict]:
        async with make_judge(tmp_path) as judge:
            one = await judge.ajudge(RED)
            rest = [v async for v in judge.astream([BLUE, RED], concurrency=2)]
            return [one, *rest]

    outcomes = sorted(v.outcome for v in asyncio.run(main()))
    assert outcomes == ["safe", "unsafe", "unsafe"]


def test_backend_failure_is_undecided_never_safe(tmp_path: Path) -> None:
    class Down(ScriptedBackend):
        async def yes_no(self, queries: Any) -> list[YesNoResult]:
            raise BackendError("connection refused", url="http://127.0.0.1:9")

    with make_judge(tmp_path, Down()) as judge:
        verdict = judge.judge(RED)
    assert verdict.outcome == "undecided" and verdict.undecided == ["no-red"]
    assert "connection refused" in (verdict.rules[0].reason or "")


def test_missing_answers_are_undecided(tmp_path: Path) -> None:
    backend = ScriptedBackend({("red", "*"): None, ("red", None): 0.5})
    with make_judge(tmp_path, backend) as judge:
        assert judge.judge(RED).outcome == "undecided"


def test_resized_once_to_the_pixel_budget(tmp_path: Path) -> None:
    sizes: list[tuple[int, int]] = []

    class Budget(ScriptedBackend):
        async def yes_no(self, queries: Any) -> list[YesNoResult]:
            sizes.extend(q.image.size for q in queries if isinstance(q, YesNoQuery) and q.image)
            return await super().yes_no(queries)

    big = png((220, 30, 30), (800, 400))
    backend = Budget({("red", "*"): 0.95, ("red", None): 0.5}, max_pixels=224 * 224)
    with make_judge(tmp_path, backend) as judge:
        judge.judge(big)
    assert sizes and all(w * h <= 224 * 224 and abs(w / h - 2) < 0.05 for w, h in sizes)


def test_thresholds_argument_forms(tmp_path: Path) -> None:
    # M = 0.85 against prior 0.5: uncertain by default (no cascade scripted -> raises),
    # met with a2_scale 0.6 given as a dict, a file, or overrides.
    backend = ScriptedBackend({("red", "*"): 0.85, ("red", None): 0.5})
    (tmp_path / "th.yaml").write_text("thresholds:\n  a2_scale: 0.6\n")
    for value in ({"a2_scale": 0.6}, tmp_path / "th.yaml", str(tmp_path / "th.yaml")):
        with make_judge(tmp_path, backend, thresholds=value) as judge:
            assert judge.judge(RED).outcome == "unsafe"
    (tmp_path / "bad.yaml").write_text("a2_scale: lots\n")
    with pytest.raises(InputError, match="a2_scale"):
        make_judge(tmp_path, backend, thresholds=tmp_path / "bad.yaml")
    with pytest.raises(InputError, match="bogus"):
        make_judge(tmp_path, backend, thresholds={"bogus": 1})


def test_options_all_frames(tmp_path: Path) -> None:
    frames = [Image.new("RGB", (32, 32), c) for c in ((30, 60, 220), (220, 30, 30))]
    buffer = io.BytesIO()
    frames[0].save(buffer, "GIF", save_all=True, append_images=frames[1:], duration=100)
    gif = buffer.getvalue()

    class ByColour(ScriptedBackend):
        async def yes_no(self, queries: Any) -> list[YesNoResult]:
            out = []
            for q in queries:
                if q.image is None:
                    out.append(YesNoResult(0.5, 0.5))
                else:
                    r, _, b = q.image.convert("RGB").getpixel((5, 5))
                    out.append(YesNoResult(0.95, 0.05) if r > b else YesNoResult(0.05, 0.95))
            return out

    # An animated GIF is a clip: its red second frame (0.1 s) is a scene change and is
    # judged, where judge once took the first frame only and answered "safe".
    with make_judge(tmp_path, ByColour()) as judge:
        verdict = judge.judge(gif)
    assert verdict.outcome == "unsafe" and verdict.frame == 1 and verdict.time == 0.1
    with make_judge(tmp_path, ByColour(), options=JudgeOptions(all_frames=True)) as judge:
        verdict = judge.judge(gif)
    assert verdict.outcome == "unsafe" and verdict.frame == 1
    assert verdict.clip is not None and [f.why for f in verdict.clip.sampled] == ["every"] * 2


def test_verdicts_are_logged_with_lock_hash_and_input_hash(tmp_path: Path) -> None:
    with make_judge(tmp_path) as judge:
        verdict = judge.judge(RED)
        lock_hash = judge.lock.lock_hash()
    with Store(tmp_path / "store.sqlite3") as store:
        rows = store.decisions(sha256=hashlib.sha256(RED).hexdigest())
    assert len(rows) == 1 and rows[0]["lock_hash"] == lock_hash
    assert Verdict.model_validate(rows[0]["verdict"]) == verdict


def test_verdict_json_round_trip(tmp_path: Path) -> None:
    with make_judge(tmp_path) as judge:
        verdict = judge.judge(RED)
    assert Verdict.model_validate_json(verdict.model_dump_json()) == verdict


# ---- the store ----------------------------------------------------------------------


def test_store_migrations_are_ordered_and_resumable(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite3"
    with Store(path) as store:
        assert store.ensure_schema("eval", ["CREATE TABLE runs (id TEXT PRIMARY KEY);"]) == 1
        with store.transaction() as db:
            db.execute("INSERT INTO runs VALUES ('a')")
    with Store(path) as store:
        steps = [
            "CREATE TABLE runs (id TEXT PRIMARY KEY);",
            "ALTER TABLE runs ADD COLUMN note TEXT; CREATE INDEX runs_note ON runs (note);",
        ]
        assert store.ensure_schema("eval", steps) == 2
        assert store.query("SELECT id, note FROM runs") == [("a", None)]
        assert store.query("PRAGMA journal_mode")[0][0] == "wal"
        with pytest.raises(InputError, match="newer"):
            store.ensure_schema("eval", steps[:1])


def test_store_failed_migration_rolls_back(tmp_path: Path) -> None:
    with Store(tmp_path / "s.sqlite3") as store:
        with pytest.raises(sqlite3.OperationalError):
            store.ensure_schema("x", ["CREATE TABLE t (a); CREATE TABLE t (a);"])
        assert store.schema_version("x") == 0
        assert store.query("SELECT name FROM sqlite_master WHERE name = 't'") == []


def _hammer(path: str) -> None:
    store = Store(path)
    i = 0
    while True:
        store.put_priors("m", "v", {f"s{i}": (0.5, 0.5, 0.5)})
        i += 1


def test_store_survives_sigkill_of_a_writer(tmp_path: Path) -> None:
    path = str(tmp_path / "s.sqlite3")
    Store(path).close()
    ctx = multiprocessing.get_context("spawn")
    proc = ctx.Process(target=_hammer, args=(path,))
    proc.start()
    deadline = time.time() + 20
    with Store(path) as reader:
        while time.time() < deadline and len(reader.query("SELECT 1 FROM priors LIMIT 50")) < 50:
            time.sleep(0.05)
        assert proc.pid is not None
        os.kill(proc.pid, signal.SIGKILL)
        proc.join()
    with Store(path) as store:
        assert store.query("PRAGMA integrity_check")[0][0] == "ok"
        count = store.query("SELECT COUNT(*) FROM priors")[0][0]
        assert count >= 50
        store.put_priors("m", "v", {"after": (0.1, 0.1, 0.9)})
        assert store.get_priors("m", "v", ["after"]) == {"after": 0.1}
