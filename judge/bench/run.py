"""`judge bench`: how close the engine comes to the prefill limit, in one run.

Sections, each printed as ratios (the limit: docs/architecture.md, "Speed comes from
the engine"):

0. geometry: the served model's image tokens, shared prefix, second-statement cache hit
   and computed / ideal prompt tokens (judge.bench.geometry; any model, no judging);
1. prefill: prompt tokens sent per image against the ideal (instructions and image once,
   plus each statement's suffix), and the share served by the server's prefix cache,
   from `usage.prompt_tokens_details.cached_tokens` and from vLLM's /metrics counters,
   beside the server's KV block size and what the same requests would have computed
   with vLLM's CPU default of 128-token blocks;
2. naive: the plain algorithm (judge.bench.naive) on the same images: calls per image by
   kind, images/s, and whether every verdict is the same;
3. scaling: images/s at image concurrency 1, 4, 16 and 64;
4. memory: this process's RSS while it streams many images (flat, not growing);
5. compile: precondition extraction for a 100-rule constitution, batched vs sequential;
6. cost: requests, computed prompt tokens and seconds per image for synthetic policies of
   10, 30 and 100 rules, relevance scan on and off (judge.bench.cost);
7. gpu: s/image and images/s with a real model on a GPU, when one is given;
8. fleet: two or more replicas, prefix-aware routing against round-robin
   (judge.bench.fleet);
9. video: frames judged per second, model queries per clip with and without reuse, and
   the cost per clip against its length (judge.bench.video).

Images come from the toy world's scene generator, drawn lazily, with disjoint seeds per
section so no section is served from another's prefix cache. Where the server allows it
(vLLM in dev mode, as `judge.bench.server` starts it), the prefix cache is also reset
before each timed section.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import httpx
from PIL import Image

from judge import queries
from judge.bench.cost import cost_summary, run_cost_section
from judge.bench.fleet import fleet_summary, run_fleet_section
from judge.bench.geometry import geometry_summary
from judge.bench.naive import NaiveJudge, same_verdicts
from judge.bench.probes import (
    PREFIX_HITS,
    PREFIX_QUERIES,
    QueryRecord,
    RecordingBackend,
    RssSampler,
    common_prefix,
    counter_delta,
    memory_trend,
    scrape_metrics,
    server_block_size,
    server_root,
    tokenize_chat,
)
from judge.bench.video import LENGTHS as VIDEO_LENGTHS
from judge.bench.video import run_video_section, video_summary
from judge.constitution.schema import Lock
from judge.engine.verdict import Verdict
from judge.errors import InputError
from judge.models.base import Backend
from judge.models.options import ModelOptions

CACHE_TARGET = 0.80
COMPUTED_TARGET = 1.10  # computed / ideal prompt tokens at 256 image tokens
# vLLM's CPU default KV block (when no --block-size is given): the prefill section also
# shows what its requests would have computed with it, beside the server's own blocks.
CPU_DEFAULT_BLOCK = 128
SPEEDUP_TARGET = 5.0
FLAT_TARGET = 1.10  # late/early RSS at most this

# Seeds of each section's scenes; far apart so sections never share an image.
SECTIONS: tuple[str, ...] = (
    "geometry", "prefill", "naive", "scaling", "memory", "compile", "cost", "gpu", "fleet",
    "video",
)
# These need the (vLLM) server; "gpu" needs none, and "fleet" its own replicas.
SERVER_SECTIONS = (*SECTIONS[:7], "video")
# These judge through the engine (a relevance scorer and a locator too); "geometry" asks
# the served model only, so it runs for any model, random-weight builds included.
JUDGE_SECTIONS = ("prefill", "naive", "scaling", "memory", "compile", "cost")

SEEDS = {"warmup": 900_000, "main": 100_000, "scaling": 200_000, "memory": 300_000, "gpu": 400_000}
# Others: fleet 500_000 (judge.bench.fleet), geometry 600_000, cost 700_000.


@dataclass
class BenchConfig:
    """What one `judge bench` run measures, and against what."""

    constitution: str | Path | Lock
    # `server`: the vLLM server's base URL (with or without /v1); `model`: what to ask it
    # for (a registered name asks for its served name; None: what the server serves), and
    # the relevance scorer and locator, as for `judge`.
    model_options: ModelOptions = field(default_factory=ModelOptions)
    images: int = 24  # images judged by both the engine and the naive algorithm
    concurrency: int = 16  # image concurrency of the engine in section 1
    backend_concurrency: int = 16  # HTTP requests in flight
    scaling: tuple[int, ...] = (1, 4, 16, 64)
    scaling_images: int = 64  # per concurrency level (at least the level itself)
    memory_images: int = 1000
    compile_rules: int = 100
    # Cap generation lengths in the compile section; None: a registered model name's own
    # `max_new_tokens` (judge.models.resolve), else no cap.
    compile_max_tokens: int | None = None
    gpu_model: str | None = None
    gpu_images: int = 200
    options: Any = None  # JudgeOptions for both judges; None: the defaults
    sections: tuple[str, ...] = SECTIONS
    fleet_servers: tuple[str, ...] = ()  # two or more replicas for the fleet section
    fleet_images: int = 24
    video_lengths: tuple[float, ...] = VIDEO_LENGTHS  # seconds of each bench clip
    cost_images: int = 8  # images per point of the cost curve (6 points)

    @property
    def server(self) -> str:
        """The server the server sections ask ("" when none is set)."""
        return self.model_options.server or ""


@dataclass
class Row:
    section: str
    measure: str
    value: str
    ratio: float | None = None
    target: str = ""
    ok: bool | None = None


@dataclass
class BenchResult:
    rows: list[Row] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)
    verdict_mismatches: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def add(self, *args: Any, **kwargs: Any) -> None:
        self.rows.append(Row(*args, **kwargs))

    def summary_line(self) -> str:
        """One line with the key ratios, the last line `judge bench` prints."""
        s = self.summary

        def fmt(key: str, spec: str = ".2f", suffix: str = "") -> str:
            value = s.get(key)
            if value is None:
                return "n/a"
            if isinstance(value, float) and math.isnan(value):
                return "n/a"
            return f"{value:{spec}}{suffix}" if isinstance(value, (int, float)) else str(value)

        def fmt_at(size: int) -> str:
            value = (s.get("computed_over_ideal_at_block") or {}).get(str(size))
            return "n/a" if value is None else f"{value:.2f}"

        parts = [
            f"cache_hit={fmt('cache_hit_usage')} (metrics {fmt('cache_hit_metrics')})",
            f"computed/ideal={fmt('computed_over_ideal')} "
            f"(block {s.get('block_size') or '?'}"
            + (f"; {CPU_DEFAULT_BLOCK}: {fmt_at(CPU_DEFAULT_BLOCK)})"
               if s.get("block_size") != CPU_DEFAULT_BLOCK else ")"),
            f"sent/ideal={fmt('sent_over_ideal')}",
            f"speedup_vs_naive={fmt('speedup', '.1f', 'x')}",
            f"verdicts_same={s.get('verdicts_same', 'n/a')}",
            f"scaling_c{s.get('scaling_top', '?')}/c1={fmt('scaling_ratio', '.2f', 'x')}",
            f"rss_late/early={fmt('rss_ratio', '.3f')}",
            f"compile_batched/seq={fmt('compile_speedup', '.1f', 'x')}",
            "gpu=" + (fmt("gpu_images_per_s", ".2f", " img/s") if "gpu_images_per_s" in s
                      else "skipped"),
            fleet_summary(s),
            video_summary(s),
            geometry_summary(s),
            cost_summary(s),
        ]
        return "bench: " + " | ".join(parts)


# ---- inputs ---------------------------------------------------------------------------

def load_lock(constitution: str | Path | Lock) -> Lock:
    """The lock of a constitution file (it must be fresh), or the lock itself."""
    if isinstance(constitution, Lock):
        return constitution
    from judge.constitution import Constitution

    policy = Constitution.load(constitution)
    status, _ = policy.lock_status()
    if status != "fresh" and all(r.preconditions for r in policy.spec.rules):
        # Hand-written chains only (the toy constitution): compiling needs no model.
        return policy.compile(None)
    return policy.lock


def scenes(first_seed: int, n: int) -> Iterator[tuple[str, Image.Image]]:
    """`n` toy scenes, drawn one at a time as they are asked for."""
    from judge.toy.world import make_scene

    for seed in range(first_seed, first_seed + n):
        image = make_scene(seed).image
        assert image is not None
        yield f"scene-{seed}", image


def _ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or b == 0:
        return None
    return a / b


def _per_image(counts: Counter[str], n: int) -> str:
    return ", ".join(f"{k} {v / n:.2f}" for k, v in sorted(counts.items())) or "none"


# ---- the server ---------------------------------------------------------------------------


def reset_prefix_cache(url: str) -> bool:
    """Empty the server's prefix cache (vLLM dev mode only); False when not allowed."""
    try:
        response = httpx.post(f"{server_root(url)}/reset_prefix_cache", timeout=30.0)
    except httpx.HTTPError:
        return False
    return response.status_code == 200


class PrefixLength:
    """Tokens of [chat head][instructions][image] before a statement's own tokens, per
    image size, from the server's /tokenize: two visibility questions about one image,
    built by `judge.queries` as the engine builds them, in the chat layout the back end
    sends."""

    def __init__(self, url: str, model: str) -> None:
        self.url, self.model = url, model
        self._by_size: dict[tuple[int, int], int | None] = {}

    def _tokens(self, statement: str, image: Image.Image) -> list[int]:
        query = queries.visibility_query(statement, image)
        return tokenize_chat(self.url, self.model, query.instructions, query.question, image)

    def __call__(self, size: tuple[int, int]) -> int | None:
        if size not in self._by_size:
            image = Image.new("RGB", size, (128, 128, 128))
            try:
                a = self._tokens("a red shape", image)
                b = self._tokens("written text", image)
                self._by_size[size] = common_prefix(a, b)
            except (httpx.HTTPError, KeyError, ValueError):
                self._by_size[size] = None
        return self._by_size[size]


@dataclass
class Prefill:
    images: int
    sent: int  # prompt tokens of every Yes/No request, priors included
    cached: int
    ideal: int | None  # per distinct image: its prefix once, plus each distinct statement
    queries: int
    prefix: float | None = None  # mean shared prefix (instructions + image tokens) per image
    prior_computed: int = 0  # computed tokens of the priors (text only, once per model)
    # Per image query in order: (image digest, prompt tokens, cached tokens, prefix).
    image_queries: list[tuple[str, int, int, int]] = field(default_factory=list)

    @property
    def computed(self) -> int:
        return self.sent - self.cached

    def computed_at(self, block: int) -> int | None:
        """Computed tokens this run would have had with `block`-token KV blocks, from the
        same requests: a prefix is reused in whole blocks only, so each later query about
        an image computes again the `prefix mod block` tokens past its last whole block,
        then its own suffix. The first query about each image and the priors count as
        measured, except that of what the server served them (the chat head and
        instructions every prompt shares) only whole `block`s count. With the server's
        own block size this reproduces the measured count (the bench shows both); for a
        larger block it is the same requests' cost, not a guess."""
        if self.ideal is None or block < 1:
            return None
        seen: set[str] = set()
        total = self.prior_computed
        for digest, prompt, cached, prefix in self.image_queries:
            if digest in seen:
                total += prompt - (min(prefix, prompt - 1) // block) * block
            else:
                seen.add(digest)
                total += prompt - (cached // block) * block
        return total


def prefill_of(records: Sequence[QueryRecord], n_images: int, prefix: PrefixLength) -> Prefill:
    """Sent, cached and ideal Yes/No prompt tokens over a run.

    Masked images and crops are images of their own (their tokens must be prefilled);
    priors count as sent but not in the ideal, which computes each prior once per model.
    """
    sent = sum(r.prompt_tokens for r in records)
    cached = sum(r.cached_tokens for r in records)
    groups: dict[str, dict[str, int]] = {}
    sizes: dict[str, tuple[int, int]] = {}
    for r in records:
        if r.image_digest is None or r.prompt_tokens <= 0 or r.image_size is None:
            continue
        groups.setdefault(r.image_digest, {}).setdefault(r.statement_text, r.prompt_tokens)
        sizes[r.image_digest] = r.image_size
    ideal: int | None = 0
    prefixes: list[int] = []
    by_digest: dict[str, int] = {}
    for digest, statements in groups.items():
        p = prefix(sizes[digest])
        if p is None or ideal is None:
            ideal = None
            continue
        prefixes.append(p)
        by_digest[digest] = p
        ideal += p + sum(max(0, n - p) for n in statements.values())
    mean_prefix = sum(prefixes) / len(prefixes) if prefixes and ideal is not None else None
    prior_computed = sum(
        r.prompt_tokens - r.cached_tokens for r in records if r.image_digest is None
    )
    image_queries = [
        (r.image_digest, r.prompt_tokens, r.cached_tokens, by_digest[r.image_digest])
        for r in records
        if r.image_digest in by_digest and r.prompt_tokens > 0
    ]
    return Prefill(n_images, sent, cached, ideal, len(records), mean_prefix,
                   prior_computed, image_queries)


# ---- running the engine and the naive algorithm ---------------------------------------


async def _engine_pass(
    judge: Any, images: Iterator[tuple[str, Image.Image]], concurrency: int
) -> tuple[list[Verdict], float]:
    started = time.perf_counter()
    verdicts = [v async for v in judge.astream(images, concurrency=concurrency)]
    return verdicts, time.perf_counter() - started


async def _naive_pass(
    naive: NaiveJudge, images: Iterator[tuple[str, Image.Image]]
) -> tuple[list[Verdict], float]:
    started = time.perf_counter()
    verdicts = [await naive.ajudge(item) for item in images]
    return verdicts, time.perf_counter() - started


def _calls(verdicts: Sequence[Verdict]) -> Counter[str]:
    total: Counter[str] = Counter()
    for v in verdicts:
        if v.run is not None:
            total.update(v.run.calls)
    return total


def _outcomes(verdicts: Sequence[Verdict]) -> Counter[str]:
    return Counter(v.outcome for v in verdicts)


class Bench:
    """One benchmark run against one server (see the module docstring)."""

    def __init__(self, config: BenchConfig, console: Any | None = None) -> None:
        self.config = config
        self.console = console
        self.result = BenchResult()
        self._tmp = tempfile.TemporaryDirectory(prefix="judge-bench-")
        self.lock = load_lock(config.constitution)
        if len(self.lock.enabled_rules()) < 10:
            self.result.notes.append(
                f"{len(self.lock.enabled_rules())} rules: the 80% prefix-cache target is "
                "stated for constitutions of 10 rules or more"
            )

    def say(self, text: str) -> None:
        if self.console is not None:
            self.console.print(f"[dim]{text}[/]", highlight=False)

    # -- construction

    @property
    def served_model(self) -> str | None:
        """The model to ask the server (or the fleet's replicas) for; None: whatever it
        serves. A registered name asks for its served name, as everywhere."""
        return self._on_server().resolve().backend_model()

    def _on_server(self) -> ModelOptions:
        return replace(self.config.model_options, backend="vllm-server")

    def _backend(self) -> RecordingBackend:
        return RecordingBackend(
            self._on_server().open(concurrency=self.config.backend_concurrency)
        )

    def judge_on(
        self, backend: Backend, store_name: str, lock: Lock | None = None, options: Any = None
    ) -> Any:
        """A Judge of the bench's lock (or `lock`) over `backend`, with the model options'
        relevance scorer and locator (a registered name's own by default), the bench's
        judging options (or `options`) and a store of its own."""
        from judge.engine.judge import Judge
        from judge.store import Store

        # A file store: an in-memory one would grow with the decision log.
        store = Store(Path(self._tmp.name) / f"{store_name}.sqlite3")
        return Judge(
            lock or self.lock,
            **self.config.model_options.judge_kwargs(backend=backend),
            options=options or self.config.options,
            store=store,
        )

    # -- the whole run

    async def run(self) -> BenchResult:
        wanted = set(self.config.sections)
        if wanted & set(SERVER_SECTIONS):
            await self._server_sections(wanted)
        if "gpu" in wanted:
            await self._gpu()
        if "fleet" in wanted:
            await run_fleet_section(self, self.config.fleet_servers, self.config.fleet_images)
        if "video" in wanted:
            await run_video_section(self, self.config.video_lengths, reset_prefix_cache)
        self._tmp.cleanup()
        return self.result

    async def _server_sections(self, wanted: set[str]) -> None:
        if "geometry" in wanted:
            await self._geometry()
        if wanted & set(JUDGE_SECTIONS):
            await self._judge_sections(wanted)

    async def _geometry(self) -> None:
        from judge.bench.geometry import add_geometry_rows, lock_statements, measure_geometry

        backend = self._backend()
        self.say("geometry: image tokens, shared prefix and prefix-cache hit of the model")
        try:
            found = await measure_geometry(
                backend, self.config.server, lock_statements(self.lock), reset_prefix_cache
            )
        finally:
            await backend.aclose()
        add_geometry_rows(self.result, found)

    async def _judge_sections(self, wanted: set[str]) -> None:
        engine_backend = self._backend()
        naive_backend = self._backend()
        engine = self.judge_on(engine_backend, "engine")
        reference = self.judge_on(naive_backend, "naive")
        try:
            naive = NaiveJudge.like(reference, naive_backend)
            if wanted & {"prefill", "naive", "scaling", "memory"}:
                await self._warm_up(engine, naive)
            if wanted & {"prefill", "naive"}:
                await self._main(engine, engine_backend, naive, naive_backend)
            if "scaling" in wanted:
                await self._scaling(engine)
            if "memory" in wanted:
                await self._memory(engine, engine_backend)
            if "compile" in wanted:
                await self._compile(naive_backend)
            if "cost" in wanted:
                await run_cost_section(self, self.config.cost_images, reset_prefix_cache)
        finally:
            for judge in (engine, reference):
                await judge.aclose()
                judge.store.close()  # given to the Judge, so not closed by it
            with contextlib.suppress(Exception):
                await engine_backend.aclose()
                await naive_backend.aclose()

    async def _warm_up(self, engine: Any, naive: NaiveJudge) -> None:
        # First requests compile kernels and load the encoders: keep that out of the timings.
        self.say("warming up (first requests compile kernels)")
        started = time.perf_counter()
        await naive.ajudge(next(scenes(SEEDS["warmup"], 1)))
        warm = self.judge_on(engine.backend, "warmup")  # its own prior cache
        try:
            await _engine_pass(warm, scenes(SEEDS["warmup"] + 1, 4), 4)
        finally:
            await warm.aclose()
            warm.store.close()
        self.result.notes.append(f"warm-up took {time.perf_counter() - started:.1f} s")

    # -- sections 1 and 2

    async def _main(
        self,
        engine: Any,
        engine_backend: RecordingBackend,
        naive: NaiveJudge,
        naive_backend: RecordingBackend,
    ) -> None:
        cfg, res = self.config, self.result
        n = cfg.images
        reset = reset_prefix_cache(cfg.server)
        if not reset:
            res.notes.append(
                "the server's prefix cache could not be reset (start it with "
                "VLLM_SERVER_DEV_MODE=1 for that); sections reuse its warm cache"
            )
        self.say(f"engine: {n} images at concurrency {cfg.concurrency}")
        engine_backend.recording.clear()
        requests_before = engine_backend.stats.requests
        metrics_before = scrape_metrics(cfg.server)
        e_verdicts, e_seconds = await _engine_pass(
            engine, scenes(SEEDS["main"], n), cfg.concurrency
        )
        metrics_after = scrape_metrics(cfg.server)
        e_requests = engine_backend.stats.requests - requests_before
        records = list(engine_backend.recording.queries)

        self.say(f"naive: the same {n} images, one request at a time")
        if reset:
            reset_prefix_cache(cfg.server)
        naive_backend.recording.clear()
        n_requests_before = naive_backend.stats.requests
        n_verdicts, n_seconds = await _naive_pass(naive, scenes(SEEDS["main"], n))
        n_requests = naive_backend.stats.requests - n_requests_before
        naive_records = list(naive_backend.recording.queries)

        # 1. prefill
        if "prefill" in cfg.sections:
            prefix = PrefixLength(cfg.server, engine_backend.model_id)
            pre = prefill_of(records, n, prefix)
            naive_pre = prefill_of(naive_records, n, prefix)
            hit_usage = _ratio(pre.cached, pre.sent)
            hits = counter_delta(metrics_before, metrics_after, PREFIX_HITS)
            queries = counter_delta(metrics_before, metrics_after, PREFIX_QUERIES)
            hit_metrics = _ratio(hits, queries)
            block = server_block_size(cfg.server)
            res.add("prefill", "KV-cache block size (server)",
                    "unknown" if block is None else f"{block} tokens")
            res.add("prefill", "Yes/No prompt tokens sent / image", f"{pre.sent / n:.0f}")
            res.add("prefill", "  computed (not cached) / image", f"{pre.computed / n:.0f}")
            if pre.ideal is not None:
                if pre.prefix is not None:
                    # The image's share of it is the token geometry (16 for the toy VLM,
                    # 256 for Qwen2.5-VL at 448 px).
                    res.add("prefill", "  shared prefix (instructions + image) / image",
                            f"{pre.prefix:.0f}")
                res.add("prefill", "  ideal / image (prefix once + statements)",
                        f"{pre.ideal / n:.0f}")
                res.add("prefill", "sent / ideal", f"{pre.sent}/{pre.ideal}",
                        _ratio(pre.sent, pre.ideal))
                over = _ratio(pre.computed, pre.ideal)
                res.add("prefill", "computed / ideal", f"{pre.computed}/{pre.ideal}",
                        over, f"<= {COMPUTED_TARGET}",
                        None if over is None else over <= COMPUTED_TARGET)
                res.add("prefill", "  of which priors (once per model)",
                        f"{pre.prior_computed / n:.0f} / image")
                at: dict[str, float | None] = {}
                for size in sorted({CPU_DEFAULT_BLOCK, *([block] if block else [])}):
                    projected = pre.computed_at(size)
                    at[str(size)] = _ratio(projected, pre.ideal)
                    res.add("prefill", f"computed / ideal with {size}-token blocks "
                            "(same requests)", f"{projected}/{pre.ideal}", at[str(size)],
                            "= measured" if size == block else "vLLM CPU default")
                res.summary["computed_over_ideal_at_block"] = at
            else:
                res.notes.append("the server has no /tokenize: the ideal is not known")
            res.add("prefill", "cache hit (usage.cached_tokens)", f"{pre.cached}/{pre.sent}",
                    hit_usage, f">= {CACHE_TARGET:.0%}",
                    None if hit_usage is None else hit_usage >= CACHE_TARGET)
            res.add("prefill", "cache hit (/metrics hits/queries)",
                    "n/a" if hits is None or queries is None else f"{hits:.0f}/{queries:.0f}",
                    hit_metrics, f">= {CACHE_TARGET:.0%}",
                    None if hit_metrics is None else hit_metrics >= CACHE_TARGET)
            res.add("prefill", "naive: Yes/No tokens sent / image", f"{naive_pre.sent / n:.0f}",
                    _ratio(naive_pre.sent, pre.sent), "vs engine")
            res.summary.update(
                cache_hit_usage=hit_usage,
                cache_hit_metrics=hit_metrics,
                sent_over_ideal=_ratio(pre.sent, pre.ideal),
                computed_over_ideal=_ratio(pre.computed, pre.ideal),
                block_size=block,
                shared_prefix_tokens=pre.prefix,
                rules=len(engine.lock.enabled_rules()),
            )

        # 2. against the naive algorithm
        e_rate, n_rate = n / e_seconds, n / n_seconds
        e_calls, n_calls = _calls(e_verdicts), _calls(n_verdicts)
        by_id = {v.image_id: v for v in n_verdicts}
        mismatches: list[str] = []
        for v in e_verdicts:
            other = by_id.get(v.image_id)
            if other is None:
                mismatches.append(f"{v.image_id}: no naive verdict")
            else:
                mismatches += same_verdicts(v, other)
        res.verdict_mismatches = mismatches
        same = n - len({m.split(":", 1)[0] for m in mismatches})
        speedup = e_rate / n_rate
        res.add("naive", "engine calls / image", _per_image(e_calls, n))
        res.add("naive", "naive calls / image", _per_image(n_calls, n))
        res.add("naive", "HTTP requests / image (engine vs naive)",
                f"{e_requests / n:.1f} vs {n_requests / n:.1f}", _ratio(n_requests, e_requests),
                "naive/engine")
        res.add("naive", "engine images/s", f"{e_rate:.2f}")
        res.add("naive", "naive images/s", f"{n_rate:.2f}")
        res.add("naive", "speed-up (engine / naive)", f"{speedup:.1f}x", speedup,
                f">= {SPEEDUP_TARGET:.0f}x", speedup >= SPEEDUP_TARGET)
        res.add("naive", "same verdicts", f"{same}/{n}", same / n, "all", not mismatches)
        outcomes = _outcomes(e_verdicts)
        res.add("naive", "engine outcomes",
                ", ".join(f"{k} {v}" for k, v in sorted(outcomes.items())))
        res.summary.update(
            speedup=speedup,
            engine_images_per_s=e_rate,
            naive_images_per_s=n_rate,
            verdicts_same=f"{same}/{n}",
            engine_calls_per_image={k: v / n for k, v in e_calls.items()},
            naive_calls_per_image={k: v / n for k, v in n_calls.items()},
        )

    # -- section 3

    async def _scaling(self, engine: Any) -> None:
        cfg, res = self.config, self.result
        rates: dict[int, float] = {}
        seed = SEEDS["scaling"]
        n = cfg.scaling_images
        for level in cfg.scaling:
            reset_prefix_cache(cfg.server)
            self.say(f"scaling: {n} images at concurrency {level}")
            _, seconds = await _engine_pass(engine, scenes(seed, n), level)
            seed += n
            rates[level] = n / seconds
            capped = f" (only {n} images: at most {n} in flight)" if level > n else ""
            res.add("scaling", f"images/s at concurrency {level}{capped}", f"{rates[level]:.2f}",
                    rates[level] / rates[cfg.scaling[0]], f"vs c{cfg.scaling[0]}")
        top = max(cfg.scaling)
        res.summary.update(
            scaling={str(k): v for k, v in rates.items()},
            scaling_top=top,
            scaling_ratio=rates[top] / rates[cfg.scaling[0]],
        )

    # -- section 4

    async def _memory(self, engine: Any, backend: RecordingBackend) -> None:
        cfg, res = self.config, self.result
        n = cfg.memory_images
        done = 0
        backend.record = False  # the recording itself would grow with the images
        self.say(f"memory: streaming {n} images")
        with RssSampler(lambda: done, interval=0.2) as sampler:
            started = time.perf_counter()
            async for _ in _aiter(engine.astream(scenes(SEEDS["memory"], n), cfg.concurrency)):
                done += 1
            seconds = time.perf_counter() - started
        backend.record = True
        trend = memory_trend(sampler.samples, n)
        res.add("memory", f"peak RSS over {n} images", f"{trend.peak_mib:.0f} MiB")
        res.add("memory", "RSS early -> late (after warm-up)",
                f"{trend.early_mib:.0f} -> {trend.late_mib:.0f} MiB", trend.late_vs_early,
                f"<= {FLAT_TARGET}", trend.late_vs_early <= FLAT_TARGET)
        res.add("memory", "RSS slope", f"{trend.slope_mib_per_1k:+.1f} MiB / 1k images")
        res.add("memory", "images/s while streaming", f"{n / seconds:.2f}")
        res.summary.update(
            rss_peak_mib=trend.peak_mib,
            rss_ratio=trend.late_vs_early,
            rss_slope_mib_per_1k=trend.slope_mib_per_1k,
        )

    # -- section 5

    async def _compile(self, backend: RecordingBackend) -> None:
        from judge.constitution.compiler import CompileOptions, compile_benchmark_async

        cfg, res = self.config, self.result
        options = CompileOptions()
        cap = cfg.compile_max_tokens
        if cap is None:
            named = self._on_server().resolve().named
            cap = named.max_new_tokens if named is not None else None
        if cap is not None:
            options = CompileOptions(
                max_tokens_score=cap, max_tokens_rewrite=cap, max_tokens_preconditions=cap
            )
        self.say(f"compile: {cfg.compile_rules} rules, sequential then batched")
        report = await compile_benchmark_async(
            backend.inner, cfg.compile_rules, concurrency=16, options=options
        )
        seq, conc = report["sequential_s"], report["concurrent_s"]
        speedup = seq / max(conc, 1e-9)
        res.add("compile", f"{cfg.compile_rules} rules sequential", f"{seq:.1f} s "
                f"({report['sequential_calls']} calls)")
        res.add("compile", f"{cfg.compile_rules} rules batched (16 at once)", f"{conc:.1f} s "
                f"({report['concurrent_calls']} calls)")
        res.add("compile", "speed-up (sequential / batched)", f"{speedup:.1f}x", speedup)
        if cap is not None:
            res.notes.append(f"compile: answers capped at {cap} tokens")
        if report.get("concurrent_fallbacks") or report.get("sequential_fallbacks"):
            res.notes.append(
                f"compile: {report['sequential_fallbacks']} / {report['concurrent_fallbacks']} "
                "rules fell back (the model's answers were unusable); timings still count"
            )
        res.summary.update(compile_speedup=speedup, compile=report)

    # -- section 6

    async def _gpu(self) -> None:
        cfg, res = self.config, self.result
        if not cfg.gpu_model:
            res.add("gpu", "skipped", "no --gpu-model given")
            return
        try:
            import torch

            has_gpu = bool(torch.cuda.is_available())
        except ImportError:
            has_gpu = False
        if not has_gpu:
            res.add("gpu", "skipped", "no CUDA GPU visible")
            return
        from judge.models.registry import load_backend

        try:
            import vllm  # noqa: F401

            kind = "vllm"
        except ImportError:
            kind = "hf"
        self.say(f"gpu: {cfg.gpu_images} images with {cfg.gpu_model} on the {kind} back end")
        backend = RecordingBackend(load_backend(kind, model=cfg.gpu_model))
        backend.record = False
        # The relevance scorer and locator are --model's, as in the other sections.
        judge = self.judge_on(backend, "gpu")
        try:
            await _engine_pass(judge, scenes(SEEDS["gpu"] - 8, 8), 8)  # warm-up
            n = cfg.gpu_images
            verdicts, seconds = await _engine_pass(judge, scenes(SEEDS["gpu"], n), 64)
            naive = NaiveJudge.like(judge, backend)
            m = min(8, n)
            _, naive_seconds = await _naive_pass(naive, scenes(SEEDS["gpu"], m))
        finally:
            await judge.aclose()
            judge.store.close()
            await backend.aclose()
        rate = n / seconds
        naive_rate = m / naive_seconds
        res.add("gpu", f"{kind} back end, {n} images at concurrency 64",
                f"{seconds / n:.3f} s/image", rate, "images/s")
        res.add("gpu", "naive on the same GPU", f"{naive_seconds / m:.3f} s/image", naive_rate,
                "images/s")
        res.add("gpu", "speed-up (engine / naive)", f"{rate / naive_rate:.1f}x", rate / naive_rate)
        res.summary.update(
            gpu_images_per_s=rate, gpu_s_per_image=seconds / n, gpu_speedup=rate / naive_rate,
            gpu_outcomes=dict(_outcomes(verdicts)),
        )


async def _aiter(agen: Any) -> AsyncIterator[Any]:
    async for item in agen:
        yield item


def run_bench(config: BenchConfig, console: Any | None = None) -> BenchResult:
    """Run every section of `config` and return the rows, ratios and mismatches."""
    if config.images < 1 or config.memory_images < 10:
        raise InputError("--images must be at least 1 and --memory-images at least 10")
    return asyncio.run(Bench(config, console).run())


def render(result: BenchResult, console: Any) -> None:
    """The table, the notes, any verdict mismatches, then the one-line summary last."""
    from rich.table import Table

    table = Table(title="judge bench", show_lines=False)
    for name in ("section", "measure", "value", "ratio", "target", "ok"):
        table.add_column(name, justify="right" if name == "ratio" else "left")
    for row in result.rows:
        ok = "" if row.ok is None else ("[green]yes[/]" if row.ok else "[red]no[/]")
        ratio = "" if row.ratio is None else f"{row.ratio:.3g}"
        table.add_row(row.section, row.measure, row.value, ratio, row.target, ok)
    console.print(table)
    for note in result.notes:
        console.print(f"note: {note}", highlight=False)
    for problem in result.verdict_mismatches[:20]:
        console.print(f"[red]verdicts differ:[/] {problem}", highlight=False)
    console.print(result.summary_line(), highlight=False, markup=False, soft_wrap=True)
