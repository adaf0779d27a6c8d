"""`judge bench` section "cost": how the cost per image grows with the number of rules.

Policies of 10, 30 and 100 rules are drawn from the toy world's grammar (the statements
of `judge.toy.world.example_statements`: colours, colours with a shape, sizes, text) in
the toy constitution's forms: one object; two together; either of two with a third;
three together. Each larger policy extends the smaller one (the first 10 rules of the
30-rule policy are the 10-rule policy), so a larger policy asks at least what a smaller
one asks. Each policy judges the same images twice, with the relevance scan on and off
(`JudgeOptions.relevance`; everything else as configured), each pass with its own prior
cache, warmed on one other image first (priors are computed once per model, not per
image), then a cold prefix cache. Reported per image: HTTP requests, prompt tokens computed
(Yes/No tokens the prefix cache did not serve, plus the prompt tokens of generation
requests, counted in full), seconds, and the share of rules the relevance scan skipped.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import asdict, dataclass, replace
from typing import Any

from judge.constitution.schema import CompiledRule, Lock, PreconditionSpec

RULE_COUNTS = (10, 30, 100)
COST_SEED = 700_000
POLICY_SEED = 11


def _object_words(statement: str) -> str:
    """The object a statement is about, as the toy constitution names it ("red shape")."""
    return "text" if statement == "written text" else statement.removeprefix("a ").strip()


def _topic(statements: list[str]) -> str:
    return " or ".join(_object_words(s) for s in statements)


def synthetic_policy(n_rules: int, seed: int = POLICY_SEED) -> Lock:
    """A compiled policy of `n_rules` distinct rules over the toy world's statements.

    The same seed gives the same rules, and the first rules of a longer policy are the
    rules of a shorter one.
    """
    from judge.toy.world import example_statements

    pool = example_statements()
    rng = random.Random(seed)
    rules: list[CompiledRule] = []
    texts: set[str] = set()
    while len(rules) < n_rules:
        form = rng.choice(("one", "two", "either", "three"))
        size = {"one": 1, "two": 2, "either": 3, "three": 3}[form]
        picked = rng.sample(pool, size)
        if form == "one":
            text = f"Images must not show {picked[0]}."
            chain = [[picked[0]]]
        elif form == "two":
            text = f"Images must not show {picked[0]} together with {picked[1]}."
            chain = [[picked[0]], [picked[1]]]
        elif form == "either":
            text = (f"Images must not show {picked[0]} or {picked[1]} together with "
                    f"{picked[2]}.")
            chain = [[picked[0], picked[1]], [picked[2]]]
        else:
            text = f"Images must not show {picked[0]}, {picked[1]} and {picked[2]} together."
            chain = [[s] for s in picked]
        if text in texts:
            continue
        texts.add(text)
        rules.append(CompiledRule(
            id=f"synthetic-{len(rules) + 1:03d}",
            source_text=text,
            text=text,
            text_sha256=hashlib.sha256(text.encode()).hexdigest(),
            topic=_topic(picked),
            category="synthetic",
            severity="medium",
            preconditions=[
                PreconditionSpec(any_of=alts, objects=[_object_words(a) for a in alts])
                for alts in chain
            ],
        ))
    return Lock(
        name=f"synthetic-{n_rules}",
        source="synthetic.yaml",
        source_sha256="0" * 64,
        compiler_model="synthetic",
        compiled_at="2026-01-01T00:00:00+00:00",
        rules=rules,
    )


@dataclass
class CostPoint:
    rules: int
    relevance: bool
    images: int
    requests: float  # per image
    tokens: float  # prompt tokens computed per image
    seconds: float  # per image
    irrelevant: float  # share of rules the relevance scan skipped

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


async def run_cost_section(bench: Any, n_images: int, reset: Any) -> list[CostPoint]:
    """Add the cost rows and `summary["cost_curve"]` to `bench.result`."""
    from judge.bench.run import _engine_pass, _ratio, scenes
    from judge.engine.procedure import JudgeOptions

    cfg, res = bench.config, bench.result
    base = cfg.options or JudgeOptions()
    points: list[CostPoint] = []
    for n_rules in RULE_COUNTS:
        lock = synthetic_policy(n_rules)
        for relevance in (True, False):
            label = f"{n_rules} rules, relevance {'on' if relevance else 'off'}"
            bench.say(f"cost: {label}, {n_images} images")
            backend = bench._backend()
            judge = bench.judge_on(backend, f"cost-{n_rules}-{relevance}", lock=lock,
                                   options=replace(base, relevance=relevance))
            try:
                # Steady state: the policy's priors are computed once per model, so one
                # warm-up image computes them (with every statement's that it asks)
                # before the cold, timed pass.
                await _engine_pass(judge, scenes(COST_SEED - 1, 1), 1)
                reset(cfg.server)
                backend.recording.clear()
                before = backend.stats.requests
                verdicts, seconds = await _engine_pass(
                    judge, scenes(COST_SEED, n_images), cfg.concurrency
                )
                requests = backend.stats.requests - before
            finally:
                await judge.aclose()
                judge.store.close()
                await backend.aclose()
            rec = backend.recording
            tokens = sum(q.prompt_tokens - q.cached_tokens for q in rec.queries)
            tokens += rec.generation_prompt_tokens
            judged = [r for v in verdicts for r in v.rules]
            skipped = sum(1 for r in judged if r.outcome == "irrelevant")
            point = CostPoint(n_rules, relevance, n_images, requests / n_images,
                              tokens / n_images, seconds / n_images,
                              skipped / len(judged) if judged else 0.0)
            points.append(point)
            res.add("cost", label,
                    f"{point.requests:.1f} req, {point.tokens:.0f} tok, "
                    f"{point.seconds:.2f} s / image; {point.irrelevant:.0%} skipped")
    by = {(p.rules, p.relevance): p for p in points}
    low, high = RULE_COUNTS[0], RULE_COUNTS[-1]
    for relevance in (True, False):
        a, b = by[(low, relevance)], by[(high, relevance)]
        state = "on" if relevance else "off"
        res.add("cost", f"{high} / {low} rules, relevance {state}: requests, tokens, seconds",
                f"{_fmt(_ratio(b.requests, a.requests))}, {_fmt(_ratio(b.tokens, a.tokens))}, "
                f"{_fmt(_ratio(b.seconds, a.seconds))}", _ratio(b.tokens, a.tokens),
                f"tokens vs {low} rules")
    for n_rules in RULE_COUNTS:
        on, off = by[(n_rules, True)], by[(n_rules, False)]
        res.add("cost", f"{n_rules} rules, relevance off / on: requests, tokens, seconds",
                f"{_fmt(_ratio(off.requests, on.requests))}, "
                f"{_fmt(_ratio(off.tokens, on.tokens))}, "
                f"{_fmt(_ratio(off.seconds, on.seconds))}", _ratio(off.tokens, on.tokens),
                "tokens off / on")
    res.summary["cost_curve"] = [p.as_json() for p in points]
    return points


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}x"


def cost_summary(summary: dict[str, Any]) -> str:
    """The cost curve's part of the bench's one-line summary."""
    curve = summary.get("cost_curve")
    if not isinstance(curve, list) or not curve:
        return "cost=skipped"
    by = {(p["rules"], p["relevance"]): p for p in curve}
    low, high = RULE_COUNTS[0], RULE_COUNTS[-1]
    parts = []
    for relevance, name in ((True, "on"), (False, "off")):
        a, b = by.get((low, relevance)), by.get((high, relevance))
        if a and b and a["tokens"]:
            parts.append(f"{name} {b['tokens'] / a['tokens']:.2f}x")
    return f"cost_tok_{high}/{low}_rules=" + (", ".join(parts) or "n/a")
