"""The fault run: `judge serve` over a real vLLM server (the toy VLM), whose process
group is killed with SIGKILL in the middle of a load, then started again on the same port.

* A request that started after the kill gets "undecided" (flagged, fail-closed) or 503,
  never "safe".
* A request in flight at the kill gets its image's verdict from before the kill, or
  "undecided": never "safe" where the image is not safe.
* /readyz says 503 while the server is down, and the service recovers by itself when the
  server is back: the same images get their verdicts again.

The figures are printed (`pytest -s`) for the closing note.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from judge.resources import data_dir
from judge.serve import Limits, ModelOptions, ServeConfig
from judge.serve.load import ThreadedServer, data_url

pytestmark = [pytest.mark.slow, pytest.mark.vllm]

N_IMAGES = 12
REQUESTS = 160
CONCURRENCY = 8


def _moderate(client: httpx.Client, url: str, data: bytes) -> tuple[int, str | None]:
    response = client.post(url + "/v1/moderations", json={"input": [
        {"type": "image_url", "image_url": {"url": data_url(data)}}]})
    if response.status_code != 200:
        return response.status_code, None
    return 200, response.json()["results"][0]["judge"]["outcome"]


def test_killing_the_model_server_mid_load(toy_models: Any, tmp_path: Path) -> None:
    from judge.bench.server import cpu_server_args, start_vllm_server
    from judge.serve.app import create_app, guarded
    from judge.serve.run import build_service
    from judge.toy.labelled import write_set
    from tests._servers import free_port

    manifest = write_set(tmp_path / "scenes", N_IMAGES, split="test")
    images = [(tmp_path / "scenes" / json.loads(line)["image"]).read_bytes()
              for line in manifest.read_text().splitlines()]
    for name in ("toy.yaml", "toy.lock.yaml"):
        shutil.copy(data_dir("constitutions") / name, tmp_path / name)
    port = free_port()

    def start_model(log: str) -> Any:
        return start_vllm_server(toy_models.vlm, served_model_name="toy-vlm", port=port,
                                 args=cpu_server_args(max_num_seqs=4),
                                 log_path=tmp_path / log, timeout=600)

    model = start_model("vllm-1.log")
    try:
        # Relevance and locator off: every rule goes to the model, the part that dies.
        service = build_service(
            ServeConfig(constitution=tmp_path / "toy.yaml", store=tmp_path / "store.sqlite3",
                        limits=Limits(max_concurrent=CONCURRENCY, max_queue=REQUESTS,
                                      request_timeout_s=60), ready_check_s=0.0),
            ModelOptions(model="toy", server=model.url, relevance="off", locator="off"),
        )
        app = guarded(create_app(service), service)
        with ThreadedServer(app) as served, httpx.Client(timeout=120) as client:
            url = served.url
            reference = [_moderate(client, url, data)[1] for data in images]
            print(f"\nbefore the kill, each image alone: {reference}")
            assert reference.count("undecided") <= 2 and "safe" in reference

            results: list[dict[str, Any]] = []
            killed = threading.Event()
            kill_at: list[float] = []

            async def load() -> None:
                queue: asyncio.Queue[int] = asyncio.Queue()
                for n in range(REQUESTS):
                    queue.put_nowait(n)
                async with httpx.AsyncClient(timeout=120) as aclient:

                    async def worker() -> None:
                        while not queue.empty():
                            n = queue.get_nowait()
                            k = n % len(images)
                            started = time.monotonic()
                            response = await aclient.post(url + "/v1/moderations", json={
                                "input": [{"type": "image_url",
                                           "image_url": {"url": data_url(images[k])}}]})
                            outcome = None
                            if response.status_code == 200:
                                outcome = response.json()["results"][0]["judge"]["outcome"]
                            results.append({"k": k, "start": started, "end": time.monotonic(),
                                            "status": response.status_code,
                                            "outcome": outcome})
                            if len(results) == REQUESTS // 4 and not killed.is_set():
                                killed.set()

                    await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))

            runner = threading.Thread(target=lambda: asyncio.run(load()))
            runner.start()
            assert killed.wait(timeout=600), "the load did not get going"
            kill_at.append(time.monotonic())
            os.killpg(model.process.pid, signal.SIGKILL)
            model.process.wait(timeout=30)
            runner.join(timeout=900)
            assert len(results) == REQUESTS, "a request was lost"
            down = client.get(url + "/readyz")
            assert down.status_code == 503, down.text

            t = kill_at[0]
            after = [r for r in results if r["start"] > t]
            in_flight = [r for r in results if r["start"] <= t < r["end"]]
            before = [r for r in results if r["end"] <= t]
            for r in after:
                assert r["status"] == 503 or r["outcome"] == "undecided", r
            for r in in_flight:
                assert r["status"] == 503 or r["outcome"] in ("undecided", reference[r["k"]]), r
                assert r["outcome"] != "safe" or reference[r["k"]] == "safe", r

            def tally(rows: list[dict[str, Any]]) -> dict[str, int]:
                out: dict[str, int] = {}
                for r in rows:
                    key = r["outcome"] or str(r["status"])
                    out[key] = out.get(key, 0) + 1
                return out

            print(f"fault run: {REQUESTS} requests at concurrency {CONCURRENCY}, vLLM killed "
                  f"(SIGKILL) after {len(before)} answers; finished before the kill "
                  f"{tally(before)}, in flight at the kill {tally(in_flight)}, started after "
                  f"the kill {tally(after)}; /readyz while down: {down.status_code}")

            restarted = time.monotonic()
            model = start_model("vllm-2.log")
            healthy = time.monotonic() - restarted
            deadline = time.monotonic() + 180
            while True:
                again = [_moderate(client, url, data)[1] for data in images[:3]]
                if "undecided" not in again:
                    break
                assert time.monotonic() < deadline, f"no recovery: {again}"
                time.sleep(1)
            recovered = time.monotonic() - restarted
            after_recovery = [_moderate(client, url, data)[1] for data in images]
            same = sum(a == b for a, b in zip(after_recovery, reference, strict=True))
            ready = client.get(url + "/readyz").status_code
            print(f"recovery: vLLM healthy again {healthy:.0f} s after the restart began, the "
                  f"service judging again {recovered:.0f} s after it; verdicts after recovery "
                  f"equal to before: {same}/{len(images)}; /readyz {ready}")
            assert ready == 200
            assert same >= len(images) - 1
    finally:
        model.stop()
