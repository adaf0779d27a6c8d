"""`judge serve --model toy` as a process, with the trained toy models (transformers in
the service's process): the official `openai` client gets the toy scenes' known labels,
SIGHUP reloads an edited policy, SIGTERM stops the service cleanly."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from judge.resources import data_dir
from judge.serve.load import data_url

pytestmark = pytest.mark.slow

TOKEN = "toy-serve-token-1"
N_IMAGES = 10
# How many of the 10 scenes may be answered wrongly: flagged, and the set of categories
# (the toy VLM's accuracy, see tests/test_engine_e2e.py: F1 1.0 for seeds 0 and 1 on 40
# scenes, 0.85 for seed 2; with the seed-0 build, 10 of 10 flagged right and 9 of 10 with
# every category right, a blue shape missed).
MAX_WRONG_FLAGGED = 1
MAX_WRONG_CATEGORIES = 2


@pytest.fixture(scope="module")
def scenes(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    from judge.toy.labelled import write_set

    folder = tmp_path_factory.mktemp("scenes")
    manifest = write_set(folder, N_IMAGES, split="test")
    rows = [json.loads(line) for line in manifest.read_text().splitlines()]
    for row in rows:
        row["data"] = (folder / row["image"]).read_bytes()
    return rows


@pytest.fixture(scope="module")
def service(toy_models: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from tests._servers import free_port

    folder = tmp_path_factory.mktemp("serve-toy")
    for name in ("toy.yaml", "toy.lock.yaml"):
        shutil.copy(data_dir("constitutions") / name, folder / name)
    (folder / "tokens").write_text(f"tests:{TOKEN}\n")
    port = free_port()
    log = (folder / "serve.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "judge.cli", "serve", "--constitution", str(folder / "toy.yaml"),
         "--model", "toy", "--port", str(port), "--tokens-file", str(folder / "tokens"),
         "--store", str(folder / "store.sqlite3"), "--log-level", "warning"],
        stdout=log, stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300
    while True:
        assert process.poll() is None, (folder / "serve.log").read_text()[-3000:]
        assert time.monotonic() < deadline, "judge serve did not become ready"
        try:
            if httpx.get(url + "/readyz", timeout=10).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        time.sleep(0.5)

    class Service:
        pass

    running = Service()
    running.url, running.process, running.folder = url, process, folder  # type: ignore[attr-defined]
    yield running
    if process.poll() is None:
        process.kill()
        process.wait(timeout=30)
    log.close()


def test_the_openai_client_gets_the_toy_labels(service: Any, scenes: list[dict[str, Any]]) -> None:
    import openai

    client = openai.OpenAI(base_url=service.url + "/v1", api_key=TOKEN, max_retries=0,
                           timeout=300)
    response = client.moderations.create(
        model="toy", input=[{"type": "image_url", "image_url": {"url": data_url(row["data"])}}
                            for row in scenes[:5]])
    rest = client.moderations.create(
        model="toy", input=[{"type": "image_url", "image_url": {"url": data_url(row["data"])}}
                            for row in scenes[5:]])
    results = [*response.results, *rest.results]
    wrong_flagged, wrong_categories = [], []
    for row, result in zip(scenes, results, strict=True):
        found = sorted(rule for rule, on in (result.categories.model_extra or {}).items() if on)
        outcome = result.model_extra["judge"]["outcome"]  # type: ignore[index]
        print(f"{row['image']}: label {row['label']} {sorted(row['violated'])}, "
              f"served {outcome} {found}")
        assert outcome in ("safe", "unsafe", "undecided")
        if result.flagged != (row["label"] == "unsafe"):
            wrong_flagged.append(row["image"])
        if found != sorted(row["violated"]):
            wrong_categories.append(row["image"])
    assert len(wrong_flagged) <= MAX_WRONG_FLAGGED, wrong_flagged
    assert len(wrong_categories) <= MAX_WRONG_CATEGORIES, wrong_categories


def test_sighup_reloads_the_policy_and_sigterm_stops(service: Any) -> None:
    from judge.constitution import Constitution

    headers = {"Authorization": f"Bearer {TOKEN}"}
    before = httpx.get(service.url + "/v1/policy", headers=headers, timeout=30).json()
    policy = service.folder / "toy.yaml"
    policy.write_text(policy.read_text().replace("id: green-and-yellow", "id: green-with-yellow"))
    constitution = Constitution.load(policy)
    constitution.compile(None)
    constitution.save_lock()
    os.kill(service.process.pid, signal.SIGHUP)
    deadline = time.monotonic() + 120
    while True:
        now = httpx.get(service.url + "/v1/policy", headers=headers, timeout=30).json()
        if now["lock_hash"] != before["lock_hash"]:
            break
        assert time.monotonic() < deadline, "SIGHUP did not reload the policy"
        time.sleep(0.5)
    assert "green-with-yellow" in [r["id"] for r in now["rules"]]
    service.process.send_signal(signal.SIGTERM)
    # uvicorn finishes the requests in flight, then re-raises the signal it caught.
    assert service.process.wait(timeout=60) in (0, -signal.SIGTERM)
