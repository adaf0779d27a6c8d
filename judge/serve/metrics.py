"""Prometheus metrics of the service, in one registry per app (tests start many apps).

    judge_serve_requests_total{endpoint,status}       requests answered
    judge_serve_request_seconds{endpoint}             latency histogram
    judge_serve_stage_seconds{stage}                  per-image time by stage (verdict timings)
    judge_serve_images_total{outcome}                 verdicts by outcome
    judge_serve_rule_outcomes_total{rule,outcome}     rule verdicts
    judge_serve_undecided_images_total{cause}         undecided images (model failure, timeout, ...)
    judge_serve_model_calls_total{kind}               model calls by kind (first_pass, cascade, ...)
    judge_serve_rejected_total{reason}                refusals (auth, limits, queue full)
    judge_serve_in_flight, judge_serve_queued         requests being judged / waiting
    judge_serve_backend_prompt_tokens_total, judge_serve_backend_cached_tokens_total
                                                      prompt tokens and prefix-cache hits, where
                                                      the back end reports them
    judge_serve_policy_reloads_total{result}          reloads accepted and refused
    judge_serve_policy_info{lock_hash,name}           the active policy (value 1)
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

_LATENCY = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)


class _Live(Collector):
    """Values read at scrape time: queue depth, back-end token counters, the policy."""

    def __init__(self, read: Callable[[], dict[str, Any]]) -> None:
        self.read = read

    def collect(self) -> Iterator[Any]:
        state = self.read()
        yield GaugeMetricFamily("judge_serve_in_flight", "requests being judged",
                                value=state.get("running", 0))
        yield GaugeMetricFamily("judge_serve_queued", "requests waiting for a slot",
                                value=state.get("waiting", 0))
        stats = state.get("stats") or {}
        yield CounterMetricFamily("judge_serve_backend_prompt_tokens",
                                  "prompt tokens the back end reported",
                                  value=float(stats.get("prompt_tokens", 0)))
        yield CounterMetricFamily("judge_serve_backend_cached_tokens",
                                  "prompt tokens served from the prefix cache",
                                  value=float(stats.get("cached_tokens", 0)))
        info = GaugeMetricFamily("judge_serve_policy_info", "the active policy",
                                 labels=["lock_hash", "name"])
        if state.get("lock_hash"):
            info.add_metric([state["lock_hash"], state.get("policy_name", "")], 1)
        yield info


class Metrics:
    def __init__(self, read_live: Callable[[], dict[str, Any]]) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("judge_serve_requests", "requests answered",
                                ["endpoint", "status"], registry=r)
        self.latency = Histogram("judge_serve_request_seconds", "request latency",
                                 ["endpoint"], buckets=_LATENCY, registry=r)
        self.stages = Histogram("judge_serve_stage_seconds", "per-image time by stage",
                                ["stage"], buckets=_LATENCY, registry=r)
        self.images = Counter("judge_serve_images", "verdicts by outcome", ["outcome"],
                              registry=r)
        self.rules = Counter("judge_serve_rule_outcomes", "rule verdicts",
                             ["rule", "outcome"], registry=r)
        self.undecided = Counter("judge_serve_undecided_images", "undecided images by cause",
                                 ["cause"], registry=r)
        self.calls = Counter("judge_serve_model_calls", "model calls by kind", ["kind"],
                             registry=r)
        self.rejected = Counter("judge_serve_rejected", "refused requests", ["reason"],
                                registry=r)
        self.reloads = Counter("judge_serve_policy_reloads", "policy reloads", ["result"],
                               registry=r)
        r.register(_Live(read_live))

    def observe_verdict(self, verdict: Any, cause: str | None) -> None:
        self.images.labels(verdict.outcome).inc()
        for rule in verdict.rules:
            self.rules.labels(rule.rule_id, rule.outcome).inc()
        if verdict.outcome == "undecided":
            self.undecided.labels(cause or "uncertain").inc()
        if verdict.run is not None:
            for stage, seconds in verdict.run.timings.items():
                self.stages.labels(stage).observe(seconds)
            for kind, count in verdict.run.calls.items():
                self.calls.labels(kind).inc(count)

    def render(self) -> bytes:
        return generate_latest(self.registry)
