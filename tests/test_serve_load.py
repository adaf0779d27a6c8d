"""A bounded load run on loopback: 400 moderation requests at concurrency 32 against a
real uvicorn over the colour-reading back end, with a queue deep enough that none is
refused. Nothing may be lost or answered twice, every answer must be for the image sent,
and every verdict must equal that image's verdict judged alone. The full run (2,000
requests) is `python -m judge.serve.load`; its figures are in the README."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

from judge.resources import data_dir
from judge.serve import Limits
from judge.serve.load import ThreadedServer, colour_service, lone_outcomes, run_load, scene


def test_a_bounded_load_run_loses_and_duplicates_nothing(tmp_path: Path) -> None:
    for name in ("toy.yaml", "toy.lock.yaml"):
        shutil.copy(data_dir("constitutions") / name, tmp_path / name)
    service, app = colour_service(tmp_path / "toy.yaml", tmp_path / "store.sqlite3",
                                  limits=Limits(max_concurrent=16, max_queue=64))
    images = [scene(i) for i in range(50)]
    with ThreadedServer(app) as server:
        reference = asyncio.run(lone_outcomes(server.url, images))
        report = asyncio.run(run_load(server.url, images, requests=400, concurrency=32,
                                      reference=reference))
        logged = service.log.recent(10_000)
    print("\n" + report.line())
    assert report.statuses == {"200": 400}, report.statuses
    assert (report.lost, report.duplicated, report.wrong_image, report.mismatched) == (0, 0, 0, 0)
    assert set(reference.values()) == {"safe", "unsafe"}
    # One decision logged per image judged (the lone run's 50 and the load's 400).
    assert len(logged) == 450 and len({row["request_id"] for row in logged}) == 450
