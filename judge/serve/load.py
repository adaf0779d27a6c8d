"""A bounded load run against `judge serve`, and what it needs: a fast colour-reading
back end and a service on loopback in a thread.

    python -m judge.serve.load --requests 2000 --concurrency 32
    python -m judge.serve.load --url http://127.0.0.1:8080 --token T --requests 500

Without `--url` it serves the toy constitution itself, on a real uvicorn on 127.0.0.1,
over `ColourBackend`: a back end that answers "is <colour> shape visible?" from the pixels
in microseconds, so the run measures the service (HTTP, admission, the Judge's procedure,
the decision log), not a model. Every request sends a distinct image and the run checks
that each answer is for the image sent (its sha256), that no request is lost or answered
twice (request ids and decision ids unique, one per request), and that every verdict
matches the verdict of the same image judged alone before the run. It prints p50, p95 and
p99 latency and images/s.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import hashlib
import io
import json
import random
import re
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from judge.models import Backend, YesNoQuery, YesNoResult
from judge.models.base import Chat, Generation

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "blue": (30, 30, 220),
    "green": (30, 180, 30),
    "yellow": (230, 220, 30),
}
_WORD = re.compile(r"\b(" + "|".join(COLOURS) + r")\b")


class ColourBackend(Backend):
    """Answers Yes/No about colours from the pixels: M 0.95 when the statement's colour
    is in the image, 0.05 when not, 0.5 with no image (the language prior). Every answer
    is settled by the first pass, so there is no reasoning call.

    Args:
        delay: seconds each batch takes (a model's latency).
        down: answer every call with a failure (as a dead server would).
    """

    kind = "colour"

    def __init__(self, delay: float = 0.0) -> None:
        super().__init__()
        self.delay = delay
        self.down = False

    @property
    def model_id(self) -> str:
        return "colour-reader"

    async def yes_no(self, queries: Sequence[YesNoQuery]) -> list[YesNoResult]:
        from judge.errors import BackendError

        if self.delay:
            await asyncio.sleep(self.delay)
        if self.down:
            raise BackendError("the colour reader is down")
        out = []
        for query in queries:
            match = _WORD.search(query.question.split("Statement:")[-1])
            if query.image is None or match is None:
                m = 0.5
            else:
                m = 0.95 if _has_colour(query.image, COLOURS[match.group(1)]) else 0.05
            out.append(YesNoResult(p_yes=m, p_no=1.0 - m))
        self.stats.count_yes_no(out)
        return out

    async def generate(
        self, chats: Sequence[Chat], max_tokens: int, json_schema: dict[str, Any] | None = None
    ) -> list[Generation]:
        return [Generation('{"rating": "No", "rationale": "not visible"}') for _ in chats]

    async def check(self) -> list[tuple[str, bool, str]]:
        if self.down:
            return [("server", False, "the colour reader is down")]
        return [("server", True, "colour reader")]


def _has_colour(image: Any, rgb: tuple[int, int, int]) -> bool:
    import numpy as np

    pixels = np.asarray(image.convert("RGB"), dtype=np.int16)
    distance = np.abs(pixels - np.array(rgb, dtype=np.int16)).sum(axis=-1)
    return bool((distance < 60).any())


def scene(index: int, size: int = 64) -> bytes:
    """A distinct PNG: one to three coloured squares (chosen by `index`) on white, and a
    grey pixel pattern that encodes the index, so no two scenes share their bytes."""
    from PIL import Image, ImageDraw

    rng = random.Random(index)
    image = Image.new("RGB", (size, size), (255, 255, 255))
    draw = ImageDraw.Draw(image)
    for colour in rng.sample(sorted(COLOURS), rng.randint(1, 3)):
        x, y = rng.randint(0, size - 20), rng.randint(8, size - 20)
        draw.rectangle((x, y, x + 16, y + 16), fill=COLOURS[colour])
    for bit in range(24):
        grey = 128 if (index >> bit) & 1 else 200
        image.putpixel((bit, 0), (grey, grey, grey))
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def data_url(data: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(data).decode()


class ThreadedServer:
    """A real uvicorn serving `app` on 127.0.0.1 in a thread (its signal handlers off)."""

    def __init__(self, app: Any, port: int = 0, keep_alive_s: int = 75) -> None:
        import socket

        import uvicorn

        if port == 0:
            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                port = int(s.getsockname()[1])
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.server = uvicorn.Server(uvicorn.Config(
            app, host="127.0.0.1", port=port, log_level="warning", lifespan="on",
            timeout_graceful_shutdown=5, timeout_keep_alive=keep_alive_s,
        ))
        self.thread = threading.Thread(target=self.server.run, name="judge-serve", daemon=True)

    def start(self, timeout: float = 60.0) -> ThreadedServer:
        self.thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self.thread.is_alive():
                raise RuntimeError("the service failed to start (see its log)")
            if time.monotonic() > deadline:
                raise RuntimeError(f"the service did not start within {timeout} s")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)

    def __enter__(self) -> ThreadedServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def colour_service(
    policy: Path, store: Path, backend: Backend | None = None, **config: Any
) -> tuple[Any, Any]:
    """(service, ASGI app): the policy over `ColourBackend`, relevance and locator off."""
    from judge.serve import ModelOptions, ServeConfig, create_app, guarded
    from judge.serve.run import build_service

    options = ModelOptions(model="colour-reader", relevance="off", locator="off")
    service = build_service(
        ServeConfig(constitution=policy, store=store, **config), options,
        backend=backend or ColourBackend(),
    )
    return service, guarded(create_app(service), service)


@dataclass
class LoadReport:
    requests: int
    concurrency: int
    seconds: float
    latencies: list[float] = field(repr=False)
    statuses: dict[str, int]
    outcomes: dict[str, int]
    lost: int
    duplicated: int
    mismatched: int
    wrong_image: int
    logged: int | None = None  # requests the service's decision log holds (None: unknown)

    def percentile(self, q: float) -> float:
        ordered = sorted(self.latencies)
        if not ordered:
            return float("nan")
        return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered)) - 1))]

    def as_dict(self) -> dict[str, Any]:
        return {
            "requests": self.requests, "concurrency": self.concurrency,
            "seconds": round(self.seconds, 2),
            "images_per_s": round(self.requests / self.seconds, 1) if self.seconds else None,
            "p50_ms": round(self.percentile(50) * 1000, 1),
            "p95_ms": round(self.percentile(95) * 1000, 1),
            "p99_ms": round(self.percentile(99) * 1000, 1),
            "statuses": self.statuses, "outcomes": self.outcomes, "lost": self.lost,
            "duplicated": self.duplicated, "mismatched": self.mismatched,
            "wrong_image": self.wrong_image, "logged": self.logged,
        }

    def line(self) -> str:
        d = self.as_dict()
        return (
            f"{d['requests']} requests at concurrency {d['concurrency']} in {d['seconds']} s: "
            f"{d['images_per_s']} images/s, latency p50 {d['p50_ms']} ms, p95 {d['p95_ms']} ms, "
            f"p99 {d['p99_ms']} ms; statuses {d['statuses']}; outcomes {d['outcomes']}; "
            f"lost {d['lost']}, duplicated {d['duplicated']}, verdicts differing from a lone "
            f"run {d['mismatched']}, answers for another image {d['wrong_image']}"
            + ("" if self.logged is None else f"; requests in the decision log {self.logged}")
        )


async def run_load(
    url: str,
    images: list[bytes],
    *,
    requests: int,
    concurrency: int,
    token: str | None = None,
    reference: dict[str, str] | None = None,
    timeout: float = 120.0,
) -> LoadReport:
    """`requests` moderation requests (image i % len(images)), `concurrency` at once.

    Args:
        reference: sha256 -> the outcome expected (e.g. from a lone run); None: unchecked.
    """
    import httpx

    headers = {"Authorization": f"Bearer {token}"} if token else {}
    bodies = [json.dumps({"model": "judge", "input": [
        {"type": "image_url", "image_url": {"url": data_url(data)}}]}) for data in images]
    shas = [hashlib.sha256(data).hexdigest() for data in images]
    latencies: list[float] = []
    statuses: dict[str, int] = {}
    outcomes: dict[str, int] = {}
    ids: dict[str, int] = {}
    decisions: dict[str, int] = {}
    answered = 0
    mismatched = wrong_image = 0
    queue: asyncio.Queue[int] = asyncio.Queue()
    for n in range(requests):
        queue.put_nowait(n)
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)

    async def worker(client: httpx.AsyncClient) -> None:
        nonlocal answered, mismatched, wrong_image
        while True:
            try:
                n = queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            k = n % len(images)
            started = time.perf_counter()
            try:
                response = await client.post(f"{url}/v1/moderations", content=bodies[k],
                                             headers={**headers,
                                                      "Content-Type": "application/json"})
            except httpx.HTTPError as error:
                key = type(error).__name__
                statuses[key] = statuses.get(key, 0) + 1
                continue
            latencies.append(time.perf_counter() - started)
            statuses[str(response.status_code)] = statuses.get(str(response.status_code), 0) + 1
            if response.status_code != 200:
                continue
            body = response.json()
            answered += 1
            ids[body["id"]] = ids.get(body["id"], 0) + 1
            result = body["results"][0]
            ext = result["judge"]
            decisions[ext["decision_id"]] = decisions.get(ext["decision_id"], 0) + 1
            outcomes[ext["outcome"]] = outcomes.get(ext["outcome"], 0) + 1
            if ext["image_sha256"] != shas[k]:
                wrong_image += 1
            if reference is not None and reference.get(shas[k]) != ext["outcome"]:
                mismatched += 1

    started = time.perf_counter()
    async with httpx.AsyncClient(timeout=timeout, limits=limits, trust_env=False) as client:
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
    seconds = time.perf_counter() - started
    duplicated = sum(c - 1 for c in ids.values() if c > 1) + sum(
        c - 1 for c in decisions.values() if c > 1)
    return LoadReport(
        requests=requests, concurrency=concurrency, seconds=seconds, latencies=latencies,
        statuses=statuses, outcomes=outcomes, lost=requests - answered,
        duplicated=duplicated, mismatched=mismatched, wrong_image=wrong_image,
    )


async def lone_outcomes(url: str, images: list[bytes], token: str | None = None) -> dict[str, str]:
    """sha256 -> outcome, each image judged alone (one request at a time)."""
    report: dict[str, str] = {}
    import httpx

    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with httpx.AsyncClient(timeout=120, trust_env=False) as client:
        for data in images:
            response = await client.post(f"{url}/v1/moderations", headers=headers, json={
                "input": [{"type": "image_url", "image_url": {"url": data_url(data)}}]})
            response.raise_for_status()
            ext = response.json()["results"][0]["judge"]
            report[ext["image_sha256"]] = ext["outcome"]
    return report


def _serve_child(port: int, concurrency: int, delay: float, store: Path) -> int:
    """The child's part of a load run: the toy policy over ColourBackend on `port`."""
    import uvicorn

    from judge.resources import data_dir
    from judge.serve import Limits

    _, app = colour_service(
        data_dir("constitutions") / "toy.yaml", store, backend=ColourBackend(delay),
        limits=Limits(max_concurrent=concurrency, max_queue=concurrency * 4),
    )
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", timeout_keep_alive=75)
    return 0


def logged_requests(store: Path) -> int:
    """How many moderation requests the service's decision log holds."""
    import sqlite3

    with contextlib.closing(sqlite3.connect(store)) as db:
        row = db.execute("SELECT COUNT(DISTINCT request_id) FROM serve_decisions "
                         "WHERE endpoint = 'moderations'").fetchone()
    return int(row[0])


@contextlib.contextmanager
def _child(concurrency: int, delay: float, store: Path) -> Iterator[str]:
    """A service in a child process (its own interpreter lock); yields its URL."""
    import socket
    import subprocess

    import httpx

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    process = subprocess.Popen([sys.executable, "-m", "judge.serve.load", "--serve-port",
                                str(port), "--concurrency", str(concurrency),
                                "--delay", str(delay), "--serve-store", str(store)])
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the load run's service did not start")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(url + "/healthz", timeout=2).status_code == 200:
                    break
            time.sleep(0.2)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m judge.serve.load", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", help="A running service (default: start one in process).")
    parser.add_argument("--token", help="Its bearer token.")
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--images", type=int, default=200, help="Distinct images.")
    parser.add_argument("--delay", type=float, default=0.0,
                        help="Seconds each ColourBackend batch takes (in-process service).")
    parser.add_argument("--json", type=Path, help="Write the report as JSON here.")
    parser.add_argument("--same-process", action="store_true",
                        help="Run the in-process service in a thread of this process (the "
                        "client then shares its interpreter lock) instead of a child process.")
    parser.add_argument("--serve-port", type=int, help=argparse.SUPPRESS)  # the child's part
    parser.add_argument("--serve-store", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve_port:
        return _serve_child(args.serve_port, args.concurrency, args.delay, args.serve_store)
    images = [scene(i) for i in range(args.images)]

    async def measure(url: str, token: str | None) -> LoadReport:
        reference = await lone_outcomes(url, images, token)
        return await run_load(url, images, requests=args.requests,
                              concurrency=args.concurrency, token=token, reference=reference)

    if args.url:
        report = asyncio.run(measure(args.url.rstrip("/"), args.token))
    elif not args.same_process:
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:
            store = Path(tmp) / "store.sqlite3"
            with _child(args.concurrency, args.delay, store) as url:
                report = asyncio.run(measure(url, None))
            # The lone run's requests are logged too.
            report.logged = logged_requests(store) - len(images)
    else:
        import tempfile

        from judge.resources import data_dir
        from judge.serve import Limits

        with tempfile.TemporaryDirectory() as tmp:
            _, app = colour_service(
                data_dir("constitutions") / "toy.yaml", Path(tmp) / "store.sqlite3",
                backend=ColourBackend(args.delay),
                limits=Limits(max_concurrent=args.concurrency, max_queue=args.concurrency * 4),
            )
            with ThreadedServer(app) as server:
                report = asyncio.run(measure(server.url, None))
    print(report.line())
    if args.json:
        args.json.write_text(json.dumps(report.as_dict(), indent=2) + "\n")
    ok = not (report.lost or report.duplicated or report.mismatched or report.wrong_image)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
