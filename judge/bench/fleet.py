"""`judge bench` section "fleet": two or more vLLM replicas, affinity routing against
round-robin, in one run.

The same images are judged twice through a `FleetBackend` over the same servers: once
with prefix-aware routing (every query about an image on one replica) and once with
round-robin (each query to the next replica, what a plain load balancer does). Before
each pass every replica's prefix cache is reset (vLLM dev mode), so each pass starts
cold. Reported per policy: the prefix-cache hit rate from `usage.cached_tokens` and from
the replicas' /metrics counters (summed), images/s, and how the queries split over the
replicas; then whether both passes gave the same verdicts.

A prefix is reused in whole KV blocks: the part of the toy VLM's shared prefix
(instructions and 256 image tokens) past the last whole block is computed again for every
query (see the README's benchmark notes), so the local replicas this section starts use
the smallest block the CPU build takes, as every server `judge bench` starts
(`judge.bench.server.CPU_BLOCK_SIZE`, the default of `cpu_server_args`).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from judge.bench.probes import PREFIX_HITS, PREFIX_QUERIES, RecordingBackend, scrape_metrics

FLEET_SEED = 500_000
POLICIES = ("affinity", "round-robin")


def _hits(before: list[dict[str, float] | None], after: list[dict[str, float] | None]) -> Any:
    """Summed prefix-cache (hits, queries) deltas over the replicas; None if unknown."""
    hits = queries = 0.0
    for b, a in zip(before, after, strict=True):
        if b is None or a is None or PREFIX_HITS not in a or PREFIX_QUERIES not in a:
            return None
        hits += a[PREFIX_HITS] - b.get(PREFIX_HITS, 0.0)
        queries += a[PREFIX_QUERIES] - b.get(PREFIX_QUERIES, 0.0)
    return hits, queries


async def run_fleet_section(bench: Any, servers: Sequence[str], n_images: int) -> None:
    """Add the fleet rows and summary to `bench.result` (a `judge.bench.run.Bench`)."""
    from judge.bench.run import _engine_pass, _outcomes, _ratio, reset_prefix_cache, scenes
    from judge.models.fleet import FleetBackend

    cfg, res = bench.config, bench.result
    if len(servers) < 2:
        res.add("fleet", "skipped", "needs two or more servers: --server A --server B "
                "(or --sections fleet with no server, to start two local ones)")
        res.summary["fleet"] = "skipped"
        return
    served = bench.served_model  # the model to ask every replica for

    def judge_for(policy: str, backend: Any) -> Any:
        return bench.judge_on(backend, f"fleet-{policy}")

    # Warm-up through both replicas: kernels compile on first use, and the priors of the
    # statements are cached (in each pass's own store: computed again, the same way).
    bench.say(f"fleet: warming up {len(servers)} replicas")
    warm_backend = FleetBackend(served, servers=servers, routing="round-robin",
                                concurrency=cfg.backend_concurrency)
    warm = judge_for("warmup", warm_backend)
    try:
        await _engine_pass(warm, scenes(FLEET_SEED - 8, 4), 4)
    finally:
        await warm.aclose()
        warm.store.close()
        await warm_backend.aclose()

    verdicts: dict[str, list[Any]] = {}
    rates: dict[str, float] = {}
    hit_usage: dict[str, float | None] = {}
    hit_metrics: dict[str, float | None] = {}
    for policy in POLICIES:
        resets = [reset_prefix_cache(url) for url in servers]
        if not all(resets):
            res.notes.append("fleet: a replica's prefix cache could not be reset (start it "
                             "with VLLM_SERVER_DEV_MODE=1); the passes share warm caches")
        fleet = FleetBackend(served, servers=servers, routing=policy,  # type: ignore[arg-type]
                             concurrency=cfg.backend_concurrency)
        backend = RecordingBackend(fleet)
        judge = judge_for(policy, backend)
        bench.say(f"fleet: {n_images} images, {policy} routing over {len(servers)} replicas")
        before = [scrape_metrics(url) for url in servers]
        try:
            started = time.perf_counter()
            found, seconds = await _engine_pass(judge, scenes(FLEET_SEED, n_images),
                                                cfg.concurrency)
            seconds = time.perf_counter() - started
        finally:
            after = [scrape_metrics(url) for url in servers]
            await judge.aclose()
            judge.store.close()
            await fleet.aclose()
        records = backend.recording.queries
        sent = sum(r.prompt_tokens for r in records)
        cached = sum(r.cached_tokens for r in records)
        counts = _hits(before, after)
        verdicts[policy] = found
        rates[policy] = n_images / seconds
        hit_usage[policy] = _ratio(cached, sent)
        hit_metrics[policy] = None if counts is None else _ratio(counts[0], counts[1])
        split = ", ".join(f"{s['routed']}" for s in fleet.replica_stats())
        res.add("fleet", f"{policy}: cache hit (usage.cached_tokens)", f"{cached}/{sent}",
                hit_usage[policy])
        res.add("fleet", f"{policy}: cache hit (/metrics, all replicas)",
                "n/a" if counts is None else f"{counts[0]:.0f}/{counts[1]:.0f}",
                hit_metrics[policy])
        res.add("fleet", f"{policy}: images/s", f"{rates[policy]:.2f}")
        res.add("fleet", f"{policy}: queries per replica", split)
    same = _same(verdicts["affinity"], verdicts["round-robin"])
    res.add("fleet", "affinity / round-robin: cache hit (usage)",
            _fmt(hit_usage["affinity"], hit_usage["round-robin"]),
            _ratio(hit_usage["affinity"], hit_usage["round-robin"]), "> 1")
    res.add("fleet", "affinity / round-robin: images/s",
            f"{rates['affinity']:.2f} vs {rates['round-robin']:.2f}",
            _ratio(rates["affinity"], rates["round-robin"]))
    res.add("fleet", "same verdicts (affinity vs round-robin)", f"{same}/{n_images}",
            same / n_images, "all", same == n_images)
    outcomes = _outcomes(verdicts["affinity"])
    res.add("fleet", "outcomes", ", ".join(f"{k} {v}" for k, v in sorted(outcomes.items())))
    res.summary.update(
        fleet={"replicas": len(servers), "images": n_images,
               "hit_usage": hit_usage, "hit_metrics": hit_metrics, "images_per_s": rates,
               "same_verdicts": same},
    )


def _fmt(a: float | None, b: float | None) -> str:
    def one(x: float | None) -> str:
        return "n/a" if x is None else f"{x:.1%}"

    return f"{one(a)} vs {one(b)}"


def _same(a: Sequence[Any], b: Sequence[Any]) -> int:
    other = {v.image_id: v for v in b}
    return sum(
        1 for v in a
        if v.image_id in other
        and (v.outcome, v.violated, v.undecided)
        == (other[v.image_id].outcome, other[v.image_id].violated, other[v.image_id].undecided)
    )


def fleet_summary(summary: dict[str, Any]) -> str:
    """The fleet's part of the bench's one-line summary."""
    fleet = summary.get("fleet")
    if not isinstance(fleet, dict):
        return "fleet=skipped"
    hits, rates = fleet["hit_usage"], fleet["images_per_s"]
    return (
        f"fleet_hit={_fmt(hits['affinity'], hits['round-robin'])} (affinity vs rr), "
        f"fleet_img/s={rates['affinity']:.2f} vs {rates['round-robin']:.2f}"
    )


@contextlib.contextmanager
def start_local_fleet(
    model_path: Path, served_name: str | None, replicas: int = 2
) -> Iterator[list[Any]]:
    """`replicas` local vLLM servers of one model (the CPU build's smallest KV blocks),
    stopped at the end."""
    from judge.bench.server import cpu_server_args, local_vllm_server

    with contextlib.ExitStack() as stack:
        servers = [
            stack.enter_context(
                local_vllm_server(
                    model_path,
                    served_model_name=served_name,
                    args=cpu_server_args(max_num_seqs=4),
                )
            )
            for _ in range(replicas)
        ]
        yield servers
