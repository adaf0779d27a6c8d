"""What the benchmark measures with: a recording back-end wrapper, the server's
Prometheus counters and tokenizer, and a resident-memory sampler."""

from __future__ import annotations

import base64
import hashlib
import io
import os
import re
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx
from PIL import Image

from judge.models.base import (
    Backend,
    Chat,
    Generation,
    WrappedBackend,
    YesNoQuery,
    YesNoResult,
)

# ---- a back end that records every request ------------------------------------------


@dataclass(frozen=True)
class QueryRecord:
    """One Yes/No query as the model saw it, with the server's token counts."""

    image_digest: str | None  # content hash of the image; None for a language prior
    image_size: tuple[int, int] | None
    statement_text: str  # the question as sent
    instructions: str
    prompt_tokens: int
    cached_tokens: int
    ok: bool


@dataclass
class Recording:
    queries: list[QueryRecord] = field(default_factory=list)
    generations: int = 0
    generation_prompt_tokens: int = 0
    yes_no_batches: int = 0
    generate_batches: int = 0

    def clear(self) -> None:
        self.queries.clear()
        self.generations = self.generation_prompt_tokens = 0
        self.yes_no_batches = self.generate_batches = 0


def image_digest(image: Image.Image) -> str:
    """A content hash of the pixels, so masked images and crops count as new images."""
    digest = hashlib.blake2b(digest_size=12)
    digest.update(f"{image.mode}{image.size}".encode())
    digest.update(image.tobytes())
    return digest.hexdigest()


class RecordingBackend(WrappedBackend):
    """Passes every call to `inner` and records what was asked and what it cost.

    It shares `inner.stats`, so the engine's and the benchmark's counters agree.
    """

    def __init__(self, inner: Backend) -> None:
        super().__init__(inner)
        self.stats = inner.stats
        self.recording = Recording()
        self.record = True  # off: pass calls through without keeping records
        self._lock = threading.Lock()

    async def yes_no(self, queries: Sequence[YesNoQuery]) -> list[YesNoResult]:
        results = await self.inner.yes_no(queries)
        if not self.record:
            return results
        records = [
            QueryRecord(
                image_digest=None if q.image is None else image_digest(q.image),
                image_size=None if q.image is None else q.image.size,
                statement_text=q.question,
                instructions=q.instructions,
                prompt_tokens=r.prompt_tokens,
                cached_tokens=r.cached_tokens,
                ok=r.m is not None,
            )
            for q, r in zip(queries, results, strict=True)
        ]
        with self._lock:
            self.recording.queries.extend(records)
            self.recording.yes_no_batches += 1
        return results

    async def generate(
        self, chats: Sequence[Chat], max_tokens: int, json_schema: dict[str, Any] | None = None
    ) -> list[Generation]:
        results = await self.inner.generate(chats, max_tokens, json_schema)
        if not self.record:
            return results
        with self._lock:
            self.recording.generations += len(results)
            self.recording.generation_prompt_tokens += sum(g.prompt_tokens for g in results)
            self.recording.generate_batches += 1
        return results


    def __getattr__(self, name: str) -> Any:
        # Back-end specific extras (tokenizer ids, URL, ...) the engine may read.
        if name in ("inner", "recording", "record"):
            raise AttributeError(name)
        return getattr(self.inner, name)


# ---- the server's counters and tokenizer --------------------------------------------

# vLLM v1 counters (vllm/v1/metrics/loggers.py): token counts, summed over engines.
PREFIX_QUERIES = "vllm:prefix_cache_queries_total"
PREFIX_HITS = "vllm:prefix_cache_hits_total"
PROMPT_TOKENS = "vllm:prompt_tokens_total"

_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)")


def parse_prometheus(text: str) -> dict[str, float]:
    """`{metric name: value summed over its label sets}` from Prometheus text format."""
    totals: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        match = _SAMPLE.match(line)
        if not match:
            continue
        try:
            value = float(match.group(3))
        except ValueError:
            continue
        totals[match.group(1)] = totals.get(match.group(1), 0.0) + value
    return totals


def server_root(url: str) -> str:
    """`http://host:port` from a base URL that may end in /v1."""
    return url.rstrip("/").removesuffix("/v1")


def scrape_metrics(url: str, client: httpx.Client | None = None) -> dict[str, float] | None:
    """The server's /metrics counters, or None when it has none (not a vLLM server)."""
    own = client is None
    client = client or httpx.Client(timeout=10.0)
    try:
        response = client.get(f"{server_root(url)}/metrics")
        if response.status_code != 200:
            return None
        return parse_prometheus(response.text)
    except httpx.HTTPError:
        return None
    finally:
        if own:
            client.close()


_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def metric_labels(text: str, name: str) -> dict[str, str] | None:
    """The labels of the first sample of metric `name` (an info gauge such as
    `vllm:cache_config_info`), or None when the text has none."""
    for line in text.splitlines():
        match = _SAMPLE.match(line)
        if match and match.group(1) == name:
            return dict(_LABEL.findall(match.group(2) or ""))
    return None


CACHE_CONFIG_INFO = "vllm:cache_config_info"


def server_block_size(url: str) -> int | None:
    """The KV-cache block size (tokens) the server runs with, from the `block_size` label
    of vLLM's `vllm:cache_config_info` gauge; None when it does not say (not vLLM)."""
    try:
        response = httpx.get(f"{server_root(url)}/metrics", timeout=10.0)
    except httpx.HTTPError:
        return None
    if response.status_code != 200:
        return None
    labels = metric_labels(response.text, CACHE_CONFIG_INFO) or {}
    try:
        return int(labels["block_size"])
    except (KeyError, ValueError):
        return None


def counter_delta(
    before: dict[str, float] | None, after: dict[str, float] | None, name: str
) -> float | None:
    if before is None or after is None or name not in after:
        return None
    return after[name] - before.get(name, 0.0)


def _data_url(image: Image.Image) -> str:
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def tokenize_chat(
    url: str, model: str, instructions: str, question: str, image: Image.Image | None
) -> list[int]:
    """The prompt token ids the server makes of one [instructions][image][question] turn."""
    content: list[dict[str, Any]] = [{"type": "text", "text": instructions}]
    if image is not None:
        content.append({"type": "image_url", "image_url": {"url": _data_url(image)}})
    content.append({"type": "text", "text": question})
    body = {
        "model": model,
        "messages": [{"role": "user", "content": content}],
        "add_generation_prompt": True,
    }
    response = httpx.post(f"{server_root(url)}/tokenize", json=body, timeout=60.0)
    response.raise_for_status()
    return [int(t) for t in response.json()["tokens"]]


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


# ---- resident memory ------------------------------------------------------------------


def rss_bytes() -> int:
    """This process's resident set size now (Linux /proc; psutil elsewhere)."""
    try:
        with open("/proc/self/statm", encoding="ascii") as statm:
            pages = int(statm.read().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        import psutil

        return int(psutil.Process().memory_info().rss)


@dataclass
class RssSample:
    seconds: float
    done: int  # images finished when the sample was taken
    rss: int


class RssSampler:
    """Samples RSS in a thread every `interval` seconds, with the progress counter."""

    def __init__(self, progress: Callable[[], int], interval: float = 0.25) -> None:
        self.progress = progress
        self.interval = interval
        self.samples: list[RssSample] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)
        self._start = 0.0

    def _sample(self) -> None:
        self.samples.append(
            RssSample(time.monotonic() - self._start, self.progress(), rss_bytes())
        )

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()

    def __enter__(self) -> RssSampler:
        self._start = time.monotonic()
        self._sample()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()

    @property
    def peak(self) -> int:
        return max(s.rss for s in self.samples)


@dataclass(frozen=True)
class MemoryTrend:
    peak_mib: float
    early_mib: float  # median RSS over the first fifth of the images (after warm-up)
    late_mib: float  # median RSS over the last fifth
    slope_mib_per_1k: float  # least-squares RSS growth per 1,000 images, after warm-up

    @property
    def late_vs_early(self) -> float:
        return self.late_mib / self.early_mib if self.early_mib else float("nan")


def memory_trend(samples: Sequence[RssSample], total: int) -> MemoryTrend:
    """Summarise samples: is RSS flat in the number of images, or growing?

    The first tenth of the images is warm-up (model buffers, caches filling) and is left
    out of the early/late comparison and the slope.
    """
    mib = 1024.0 * 1024.0
    warm = [s for s in samples if s.done >= total // 10] or list(samples)
    fifth = max(1, total // 5)
    early = [s.rss for s in warm if s.done <= total // 10 + fifth] or [warm[0].rss]
    late = [s.rss for s in warm if s.done >= total - fifth] or [warm[-1].rss]

    def median(values: list[int]) -> float:
        ordered = sorted(values)
        return float(ordered[len(ordered) // 2])

    xs = [float(s.done) for s in warm]
    ys = [float(s.rss) for s in warm]
    mean_x, mean_y = sum(xs) / len(xs), sum(ys) / len(ys)
    var = sum((x - mean_x) ** 2 for x in xs)
    covariance = sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys, strict=True))
    slope = covariance / var if var else 0.0
    return MemoryTrend(
        peak_mib=max(s.rss for s in samples) / mib,
        early_mib=median(early) / mib,
        late_mib=median(late) / mib,
        slope_mib_per_1k=slope * 1000.0 / mib,
    )
