"""`judge batch` on a real (local) Ray with the toy models: the verdicts are the ones
`judge --jsonl` gives, a corrupt image is a row with its error, a rerun skips everything
decided (and judges the error row again), and a driver killed with SIGKILL resumes with
nothing lost and nothing judged twice.

One Ray session (2 CPUs) serves the whole module: Ray's start costs seconds and about a
GiB. The killed driver is a `judge batch` subprocess that joins that session by address.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.slow

N_IMAGES = 24  # a third through each kind of input
THIRD = N_IMAGES // 3
# The figures for the closing note: the file JUDGE_FLEET_FIGURES names, else one in the
# system's temporary folder.
FIGURES = Path(
    os.environ.get("JUDGE_FLEET_FIGURES") or Path(tempfile.gettempdir()) / "issue16_figures.txt"
)


@pytest.fixture(scope="module")
def ray_session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    ray = pytest.importorskip("ray")
    from ray.data import DataContext

    saved = os.environ.get("RAY_AUTH_MODE")
    os.environ["RAY_AUTH_MODE"] = "disabled"  # no token written under the home folder
    # Ray's session folder path must stay short (a Unix socket lives in it).
    temp = Path("/tmp") / f"judge-ray-{os.getpid()}"
    ray.init(
        num_cpus=2,
        object_store_memory=256 * 1024 * 1024,
        include_dashboard=False,
        _temp_dir=str(temp),
        logging_level="WARNING",
    )
    DataContext.get_current().enable_progress_bars = False
    try:
        yield str(ray.get_runtime_context().gcs_address)
    finally:
        ray.shutdown()
        shutil.rmtree(temp, ignore_errors=True)
        if saved is None:
            os.environ.pop("RAY_AUTH_MODE", None)
        else:
            os.environ["RAY_AUTH_MODE"] = saved


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, toy_models: Any) -> dict[str, Any]:
    """24 held-out toy scenes, laid out as the four kinds of input, and the toy policy."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from judge.constitution import Constitution
    from judge.resources import data_dir
    from judge.toy.labelled import write_set

    root = tmp_path_factory.mktemp("batch-world")
    policy = root / "toy.yaml"
    shutil.copy(data_dir("constitutions") / "toy.yaml", policy)
    constitution = Constitution.load(policy)
    constitution.compile(None)  # hand-written chains: no model needed
    constitution.save_lock()
    manifest = write_set(root / "set", N_IMAGES, split="test")
    files = sorted((root / "set" / "images").glob("*.png"))
    assert len(files) == N_IMAGES
    # A third through a JSONL manifest, a third as Parquet bytes (UnsafeBench's layout), a
    # third loose files in a folder, plus a corrupt image.
    rows = [json.loads(line) for line in manifest.read_text().splitlines()]
    (root / "set" / "part.jsonl").write_text(
        "".join(json.dumps(r) + "\n" for r in rows[:THIRD]))
    image_type = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    embedded = pa.array([{"bytes": f.read_bytes(), "path": f.name}
                         for f in files[THIRD:2 * THIRD]], image_type)
    pq.write_table(
        pa.table({"image": embedded, "label": [r["label"] for r in rows[THIRD:2 * THIRD]],
                  "category": ["toy"] * THIRD}),
        root / "unsafebench.parquet",
        row_group_size=4,
    )
    loose = root / "loose"
    loose.mkdir()
    for f in files[2 * THIRD:]:
        shutil.copy(f, loose / f.name)
    (loose / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 64)
    inputs = [str(root / "set" / "part.jsonl"), str(root / "unsafebench.parquet"), str(loose)]
    return {"root": root, "policy": policy, "files": files, "inputs": inputs}


def _options(world: dict[str, Any], out: Path, **kwargs: Any) -> Any:
    from judge.batch import ActorSpec, BatchOptions
    from judge.constitution import Constitution
    from judge.models.options import ModelOptions

    spec = ActorSpec(
        lock=Constitution.load(world["policy"]).lock,
        model_options=ModelOptions(model="toy"),
        store=str(world["root"] / "batch-store.sqlite3"),
        concurrency=8,
    )
    return BatchOptions(inputs=world["inputs"], out=out, spec=spec, actors=2,
                        batch_size=8, num_cpus=0.5, part_rows=8, progress=False, **kwargs)


def _rows(out: Path) -> list[dict[str, Any]]:
    import pyarrow.parquet as pq

    return list(pq.read_table(out).to_pylist())


def _decisions(verdict: dict[str, Any]) -> Any:
    """What a verdict decided (timings and model call counts aside)."""
    return (
        verdict["outcome"],
        sorted(verdict["violated"]),
        sorted(verdict["undecided"]),
        [(r["rule_id"], r["outcome"],
          [p["outcome"] for p in r.get("preconditions", [])]) for r in verdict["rules"]],
    )


def _reference(world: dict[str, Any]) -> dict[str, Any]:
    """`judge --jsonl` on the same images, by sha256."""
    from judge.cli import main

    jsonl = world["root"] / "reference.jsonl"
    if not jsonl.exists():
        args = [str(world["root"] / "set" / "images"), "--constitution", str(world["policy"]),
                "--model", "toy", "--jsonl", str(jsonl),
                "--store", str(world["root"] / "reference-store.sqlite3")]
        with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):
            main(args)
    verdicts = [json.loads(line) for line in jsonl.read_text().splitlines()]
    return {v["sha256"]: v for v in verdicts}


def test_batch_matches_judge_jsonl_keeps_errors_and_skips_on_rerun(
    ray_session: str, world: dict[str, Any], tmp_path: Path
) -> None:
    from judge.batch import run_batch

    out = tmp_path / "out.parquet"
    started = time.perf_counter()
    report = run_batch(_options(world, out))
    batch_seconds = time.perf_counter() - started
    rows = _rows(out)
    assert len(rows) == N_IMAGES + 1 == report.judged
    corrupt = [r for r in rows if r["id"].endswith("corrupt.png")]
    assert len(corrupt) == 1 and corrupt[0]["outcome"] == "error" and corrupt[0]["error"]
    assert corrupt[0]["rule:blue-anywhere"] is None  # never "not violated"

    started = time.perf_counter()
    reference = _reference(world)
    single_seconds = time.perf_counter() - started
    assert len(reference) == N_IMAGES
    judged = [r for r in rows if r["outcome"] != "error"]
    assert {r["sha256"] for r in judged} == set(reference)
    for row in judged:
        verdict = json.loads(row["verdict"])
        assert _decisions(verdict) == _decisions(reference[row["sha256"]]), row["id"]
        for rule in verdict["rules"]:
            expected = {"violated": True, "not_violated": False, "irrelevant": False}
            assert row[f"rule:{rule['rule_id']}"] == expected.get(rule["outcome"])
    line = (
        f"judge batch (local Ray, 2 CPUs, 2 actors x 0.5 CPU, toy models in process): "
        f"{N_IMAGES + 1} images in {batch_seconds:.1f} s ({report.images_per_s:.2f} images/s, "
        f"actor start-up included); judge --jsonl in one process: {N_IMAGES} images in "
        f"{single_seconds:.1f} s ({N_IMAGES / single_seconds:.2f} images/s)"
    )
    print("\n" + line)
    with contextlib.suppress(OSError), FIGURES.open("a", encoding="utf-8") as handle:
        handle.write(line + "\n")

    # A rerun judges again only what was not decided (the corrupt image), and replaces it.
    undecided = sum(1 for r in rows if r["outcome"] in ("undecided", "error"))
    again = run_batch(_options(world, out))
    assert again.judged == undecided and again.skipped == N_IMAGES + 1 - undecided
    assert len(_rows(out)) == N_IMAGES + 1
    again = run_batch(_options(world, out, retry=frozenset()))
    assert again.judged == 0 and again.skipped == N_IMAGES + 1


def test_sigkill_of_the_driver_then_resume_loses_and_repeats_nothing(
    ray_session: str, world: dict[str, Any], tmp_path: Path
) -> None:
    from judge.batch import run_batch

    out = tmp_path / "killed.parquet"
    argv = [
        sys.executable, "-m", "judge.cli", "batch", *world["inputs"],
        "--constitution", str(world["policy"]), "--model", "toy", "--out", str(out),
        "--ray", ray_session, "--actors", "1", "--num-cpus", "0.5", "--batch-size", "4",
        "--part-rows", "4", "--no-progress",
        "--store", str(world["root"] / "killed-store.sqlite3"),
    ]
    process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                               env={**os.environ, "RAY_AUTH_MODE": "disabled"})
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and process.poll() is None:
        if len(list(out.glob("part-*.parquet"))) >= 2:
            break
        time.sleep(0.2)
    assert process.poll() is None, process.stderr.read().decode()[-3000:] if process.stderr else ""
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    before = _rows(out)
    assert 0 < len(before) < N_IMAGES + 1

    report = run_batch(_options(world, out, retry=frozenset()))  # the corrupt row stays
    after = _rows(out)
    assert report.skipped == len(before)
    assert report.judged == N_IMAGES + 1 - len(before)
    ids = Counter(r["id"] for r in after)
    assert len(after) == N_IMAGES + 1 and max(ids.values()) == 1, ids.most_common(3)
    shas = Counter(r["sha256"] for r in after if r["sha256"])
    assert max(shas.values()) == 1


def test_batch_actors_judge_through_a_server_fleet(
    ray_session: str, world: dict[str, Any], tmp_path: Path, misbehaving_server: Any
) -> None:
    """Actors that hold no model: each Judge talks to a fleet of (fake) replicas."""
    from judge.batch import ActorSpec, BatchOptions, run_batch
    from judge.constitution import Constitution
    from judge.models.options import ModelOptions

    a, b = misbehaving_server(), misbehaving_server()
    spec = ActorSpec(
        lock=Constitution.load(world["policy"]).lock,
        model_options=ModelOptions(server=f"{a.url},{b.url}", relevance="off", locator="off"),
        store=str(tmp_path / "store.sqlite3"),
    )
    images = [str(f) for f in world["files"][:8]]
    report = run_batch(BatchOptions(inputs=images, out=tmp_path / "fleet.parquet", spec=spec,
                                    actors=1, num_cpus=0.25, progress=False))
    rows = _rows(tmp_path / "fleet.parquet")
    assert report.judged == 8 and {r["outcome"] for r in rows} <= {"safe", "unsafe"}
    assert {json.loads(r["verdict"])["run"]["backend"] for r in rows} == {"vllm-fleet"}
    assert a.chat_count > 0 and b.chat_count > 0
