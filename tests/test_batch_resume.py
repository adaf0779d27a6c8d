"""`judge batch` reruns, without Ray (tests/_batch_local.py runs the same steps in this
process, with a real `JudgeActor` over a scripted back end): undecided and error rows are
judged again and replaced, resume is keyed on (id, sha256), one run at a time per --out,
SIGINT / SIGTERM write what was judged, and Parquet rows without ids are named by file."""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from judge.batch import ActorSpec, BatchOptions, parse_retry, run_batch
from judge.batch.output import lock_output
from judge.errors import InputError
from judge.models.options import ModelOptions
from judge.models.scripted import ScriptedBackend
from tests._batch_local import use_local_pipeline
from tests.test_engine_decisions import make_lock, rule

ROOT = Path(__file__).resolve().parent.parent
DOWN = ScriptedBackend({("red", "*"): None, ("red", None): 0.5})  # answers missing: undecided
UP = ScriptedBackend({("red", "*"): 0.95, ("red", None): 0.5})  # red met: unsafe


def _png(path: Path, colour: tuple[int, int, int] = (220, 30, 30)) -> Path:
    Image.new("RGB", (16, 12), colour).save(path)
    return path


def _options(tmp_path: Path, inputs: list[Path], backend: Any, **kwargs: Any) -> BatchOptions:
    spec = ActorSpec(
        lock=make_lock(rule("no-red", "red")),
        model_options=ModelOptions(backend=backend, relevance="off", locator="off"),
        store=str(tmp_path / "store.sqlite3"),
    )
    return BatchOptions(inputs=[str(p) for p in inputs], out=tmp_path / "out.parquet",
                        spec=spec, batch_size=2, progress=False, **kwargs)


def _rows(out: Path) -> dict[str, dict[str, Any]]:
    rows = pq.read_table(out).to_pylist()
    ids = Counter(r["id"] for r in rows)
    assert max(ids.values()) == 1, ids  # one row per id
    return {r["id"]: r for r in rows}


def test_undecided_and_error_rows_are_judged_again_and_replaced(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    use_local_pipeline(monkeypatch)
    a, b = _png(tmp_path / "a.png"), _png(tmp_path / "b.png", (200, 40, 40))
    late = tmp_path / "late.png"  # missing on the first run: an error row
    first = run_batch(_options(tmp_path, [a, b, late], DOWN))
    assert first.outcomes == {"undecided": 2, "error": 1}
    assert "2 undecided and 1 error rows not decided: a rerun judges them again" in first.summary()

    # --retry none: every row already there is skipped, and the summary says how to retry.
    kept = run_batch(_options(tmp_path, [a, b, late], UP, retry=parse_retry("none")))
    assert (kept.judged, kept.skipped) == (0, 3)
    assert "rerun with --retry undecided,error to judge them again" in kept.summary()
    assert kept.exit_code() == 2

    # The fleet is back and the file is there: the default rerun judges all three again.
    _png(late, (210, 20, 20))
    again = run_batch(_options(tmp_path, [a, b, late], UP))
    assert (again.judged, again.skipped, again.retried) == (3, 0, 2)  # late has a new sha256
    rows = _rows(tmp_path / "out.parquet")
    assert {k: r["outcome"] for k, r in rows.items()} == {
        str(a): "unsafe", str(b): "unsafe", str(late): "unsafe"}
    assert again.totals == {"unsafe": 3} and again.exit_code() == 1
    assert "not decided" not in again.summary()

    done = run_batch(_options(tmp_path, [a, b, late], DOWN))  # nothing left to retry
    assert (done.judged, done.skipped) == (0, 3)


def test_retry_words() -> None:
    assert parse_retry("undecided,error") == {"undecided", "error"}
    assert parse_retry(" Error ") == {"error"} and parse_retry("none") == frozenset()
    for bad in ("", "unsafe", "none,error", "undecided;error"):
        with pytest.raises(InputError, match="--retry"):
            parse_retry(bad)


def test_the_same_bytes_under_another_id_get_their_own_row(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    use_local_pipeline(monkeypatch)
    a = _png(tmp_path / "a.png")
    run_batch(_options(tmp_path, [a], UP))
    copy = tmp_path / "copy-of-a.png"
    shutil.copy(a, copy)
    report = run_batch(_options(tmp_path, [a, copy], UP))
    assert (report.judged, report.skipped) == (1, 1)
    rows = _rows(tmp_path / "out.parquet")
    assert set(rows) == {str(a), str(copy)}
    assert rows[str(a)]["sha256"] == rows[str(copy)]["sha256"]


def test_a_second_run_on_one_out_is_refused_and_leaves_the_first_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import tests._batch_local as local

    a = _png(tmp_path / "a.png")
    out = tmp_path / "out.parquet"
    refused: list[str] = []

    def first_run(*args: Any) -> Any:
        if refused:  # without the lock, the second run gets here too
            yield from local.local_pipeline(*args)
            return
        temporary = out / ".part-00000000000000000001-inflight.parquet.tmp"
        temporary.write_bytes(b"a part being written")
        with pytest.raises(InputError) as second:
            run_batch(_options(tmp_path, [a], UP))
        refused.append(str(second.value))
        assert temporary.exists()  # the second run removed nothing
        temporary.unlink()
        yield from local.local_pipeline(*args)

    monkeypatch.setattr("judge.batch.run.connect", lambda address: None)
    monkeypatch.setattr("judge.batch.run._pipeline", first_run)
    report = run_batch(_options(tmp_path, [a], UP))
    assert report.judged == 1 and refused
    assert "in use by another judge batch run" in refused[0] and f"pid {os.getpid()}" in refused[0]


def _policy(tmp_path: Path) -> Path:
    from judge.constitution import Constitution

    policy = tmp_path / "p.yaml"
    policy.write_text("name: p\nrules:\n  - id: r\n    text: No red.\n    preconditions:\n"
                      "      - a red shape\n")
    constitution = Constitution.load(policy)
    constitution.compile(None)  # its preconditions are given: no model
    constitution.save_lock()
    return policy


def _cli(tmp_path: Path, out: Path) -> list[str]:
    """`judge batch` arguments whose model is never reached (the pipeline is replaced)."""
    return [str(_png(tmp_path / "a.png")), str(_png(tmp_path / "b.png", (9, 9, 200))),
            "--constitution", str(_policy(tmp_path)), "--server", "http://127.0.0.1:9",
            "--out", str(out), "--no-progress", "--part-rows", "1000", "--part-seconds", "1000"]


def test_the_command_refuses_an_out_in_use_with_exit_2(tmp_path: Path) -> None:
    from judge.cli import main

    out = tmp_path / "busy.parquet"
    args = _cli(tmp_path, out)
    err = io.StringIO()
    with lock_output(out), contextlib.redirect_stderr(err), \
            contextlib.redirect_stdout(io.StringIO()), pytest.raises(SystemExit) as done:
        main(["batch", *args])
    assert done.value.code == 2
    assert "is in use by another judge batch run" in err.getvalue()
    assert "Traceback" not in err.getvalue()


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_writes_the_rows_already_judged(tmp_path: Path, signum: int) -> None:
    out = tmp_path / "out.parquet"
    argv = [sys.executable, "-m", "tests._batch_local", *_cli(tmp_path, out)]
    process = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    ready = Path(f"{out}.ready")
    deadline = time.monotonic() + 60
    while not ready.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert ready.exists(), process.communicate()[1].decode()[-2000:]
    process.send_signal(signum)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 128 + signum, err.decode()[-2000:]
    assert f"interrupted ({signal.Signals(signum).name})" in err.decode()
    assert sorted(r["outcome"] for r in _rows(out).values()) == ["safe", "safe"]
    assert not list(out.glob(".part-*"))


def test_parquet_rows_without_ids_are_named_by_their_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    use_local_pipeline(monkeypatch)
    image_type = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    files = []
    for name, colour in (("train", (220, 30, 30)), ("test", (30, 30, 220))):
        data = _png(tmp_path / f"{name}.png", colour).read_bytes()
        files.append(tmp_path / f"{name}.parquet")
        pq.write_table(pa.table({"image": pa.array([{"bytes": data, "path": None}],
                                                   image_type)}), files[-1])
    report = run_batch(_options(tmp_path, files, UP))
    assert report.judged == 2
    assert set(_rows(tmp_path / "out.parquet")) == {f"{files[0]}:row-0", f"{files[1]}:row-0"}
    again = run_batch(_options(tmp_path, files, UP))  # the same ids: all resumed
    assert (again.judged, again.skipped) == (0, 2)


def test_every_row_records_what_made_its_decision(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The verdict column carries the lock hash, the model and back end, and each prompt
    template's version (issue 25: every decision records what made it)."""
    import json

    from judge import prompts

    use_local_pipeline(monkeypatch)
    options = _options(tmp_path, [_png(tmp_path / "a.png")], UP)
    run_batch(options)
    [row] = _rows(tmp_path / "out.parquet").values()
    run = json.loads(row["verdict"])["run"]
    assert run["lock_hash"] == options.spec.lock.lock_hash()
    assert (run["model_id"], run["backend"]) == (UP.model_id, UP.kind)
    assert run["prompt_versions"]["visibility_question"] == \
        prompts.versions("visibility_question")["visibility_question"]
