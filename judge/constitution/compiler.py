"""Compile a constitution into its lock: CLUE stages 1 and 2, run once per rule text.

For each rule that changed since the last lock (or every rule with `force`):

1. objectify: the model scores the rule's objectiveness (1-10, explanation first); a rule
   under `target_score` is rewritten into observable terms and re-scored, up to
   `max_rewrites` times. The best-scoring text is kept next to the author's original, and
   a rule that never reaches the target is flagged for review;
2. precondition chain: the model turns the (objectified) rule into an AND of OR
   alternatives with central object words, and names the rule's topic (a short phrase for
   the VLM relevance scan). Hand-written preconditions and topics are used as written.
   When the model's answer cannot be used even after `parse_retries` corrections, the rule
   falls back to one precondition equal to its own text. An extraction keeps at most
   `MAX_PRECONDITIONS` preconditions (a longer chain is asked for again), and
   `MAX_ALTERNATIVES` alternatives and `MAX_OBJECTS` object words per precondition (more
   are cut; constrained decoding stops there too). A chain that reaches a limit needs
   review (judge.constitution.review), so nothing is dropped unseen.

Every compiled field records who produced it (`CompiledRule.produced_by`): the model's id,
"hand-written", or "fallback". Rules whose output fails the quality gates of
`judge.constitution.review` are listed in the report as needing review.

The model is reached only through `Backend.generate`, with a JSON schema (constrained
decoding where the back end has it) and a tolerant parser for back ends without it. Rules
are compiled concurrently, at most `concurrency` at a time.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

from pydantic import ValidationError

from judge.constitution.review import (
    MAX_ALTERNATIVES,
    MAX_OBJECTS,
    MAX_PRECONDITIONS,
    needs_review,
)
from judge.constitution.schema import (
    FALLBACK,
    HAND_WRITTEN,
    CompiledRule,
    ConstitutionSpec,
    Lock,
    Objectiveness,
    PreconditionSpec,
    Provenance,
    RuleSpec,
)
from judge.errors import BackendError, ConstitutionError
from judge.models.base import Backend, Message
from judge.prompts import render, versions

PROMPTS = ("objectify_score", "objectify_rewrite", "preconditions", "json_retry")
# A topic is a phrase: at most this many words of central objects when it falls back.
_TOPIC_WORDS = 6

SCORE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "explanation": {"type": "string", "maxLength": 1000},
        "score": {"type": "integer", "minimum": 1, "maximum": 10},
    },
    "required": ["explanation", "score"],
    "additionalProperties": False,
}
REWRITE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"rule": {"type": "string", "minLength": 1, "maxLength": 2000}},
    "required": ["rule"],
    "additionalProperties": False,
}
PRECONDITIONS_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "preconditions": {
            "type": "array",
            "minItems": 1,
            "maxItems": MAX_PRECONDITIONS,
            "items": {
                "type": "object",
                "properties": {
                    "any_of": {
                        "type": "array",
                        "minItems": 1,
                        "maxItems": MAX_ALTERNATIVES,
                        "items": {"type": "string", "minLength": 1, "maxLength": 2000},
                    },
                    "objects": {
                        "type": "array",
                        "maxItems": MAX_OBJECTS,
                        "items": {"type": "string", "minLength": 1, "maxLength": 100},
                    },
                },
                "required": ["any_of", "objects"],
                "additionalProperties": False,
            },
        },
        # After the chain and optional: a model that omits it gets the fallback topic.
        "topic": {"type": "string", "minLength": 1, "maxLength": 120},
    },
    "required": ["preconditions"],
    "additionalProperties": False,
}
_FORMS = {
    "score": '{"explanation": "...", "score": N}',
    "rewrite": '{"rule": "the rewritten rule"}',
    "preconditions": (
        '{"preconditions": [{"any_of": ["statement", "..."], "objects": ["noun"]}], '
        '"topic": "phrase"}'
    ),
}


@dataclass(frozen=True)
class CompileOptions:
    """Knobs of the compile loop; the defaults are what `judge compile` uses."""

    concurrency: int = 8
    target_score: int = 9
    max_rewrites: int = 3
    parse_retries: int = 2  # corrections asked for after a malformed answer
    max_tokens_score: int = 256
    max_tokens_rewrite: int = 256
    max_tokens_preconditions: int = 512


@dataclass
class RuleReport:
    """What happened to one rule, for the command's summary."""

    id: str
    sent_to_model: bool
    extraction: str
    score: int | None = None
    reached: bool = True
    rewritten: bool = False
    reused: bool = False  # taken unchanged from the previous lock
    notes: list[str] = field(default_factory=list)
    review: list[str] = field(default_factory=list)  # why the rule needs review, if it does


@dataclass
class CompileReport:
    lock: Lock
    rules: list[RuleReport]
    seconds: float
    model_calls: int

    def ids(self, predicate: Callable[[RuleReport], bool]) -> list[str]:
        return [r.id for r in self.rules if predicate(r)]

    @property
    def compiled(self) -> list[str]:
        return self.ids(lambda r: r.sent_to_model)

    @property
    def reused(self) -> list[str]:
        return self.ids(lambda r: r.reused)

    @property
    def fallbacks(self) -> list[str]:
        return self.ids(lambda r: r.extraction == "fallback")

    @property
    def unreached(self) -> list[str]:
        return self.ids(lambda r: r.score is not None and not r.reached)

    @property
    def unscored(self) -> list[str]:
        return self.ids(lambda r: r.score is None)

    @property
    def needs_review(self) -> dict[str, list[str]]:
        """Rule id -> why it needs review (see judge.constitution.review)."""
        return {r.id: r.review for r in self.rules if r.review}


# ---- tolerant parsing ----------------------------------------------------------------


class BadAnswer(ValueError):
    """The model's answer cannot be used; the message is fed back to it on retry."""


_FENCE = re.compile(r"```(?:json)?\s*(.*?)```", re.S)
_SCORE_TEXT = re.compile(r"\"?score\"?\s*[:=]\s*\"?(\d+(?:\.\d+)?)", re.I)


def extract_json(text: str) -> dict[str, Any]:
    """The first JSON object in `text`, tolerating prose and code fences around it."""
    candidates = [m.group(1) for m in _FENCE.finditer(text)] + [text]
    decoder = json.JSONDecoder()
    for candidate in candidates:
        for start in (i for i, ch in enumerate(candidate) if ch == "{"):
            try:
                value, _ = decoder.raw_decode(candidate, start)
            except (json.JSONDecodeError, RecursionError):
                continue
            if isinstance(value, dict):
                return value
    raise BadAnswer("the answer contains no JSON object")


def _coerce_score(value: Any) -> int:
    try:
        score = float(value)
    except (TypeError, ValueError):
        raise BadAnswer(f"'score' must be a number from 1 to 10, not {value!r}") from None
    if not 1 <= score <= 10:
        raise BadAnswer(f"'score' must be from 1 to 10, not {value!r}")
    return round(score)


def parse_score(text: str) -> tuple[int, str]:
    """(score, explanation) from an objectiveness answer."""
    try:
        data = extract_json(text)
    except BadAnswer:
        # A model that ignored the format but still wrote "score: 7" has answered.
        match = _SCORE_TEXT.search(text)
        if not match:
            raise
        return _coerce_score(match.group(1)), text[: match.start()].strip()[:1000]
    if "score" not in data:
        raise BadAnswer("the JSON has no 'score'")
    explanation = data.get("explanation", "")
    return _coerce_score(data["score"]), str(explanation).strip()[:1000]


def parse_rewrite(text: str) -> str:
    data = extract_json(text)
    rule = data.get("rule")
    if not isinstance(rule, str) or not rule.strip():
        raise BadAnswer("the JSON has no non-empty 'rule' text")
    if len(rule) > 2000:
        raise BadAnswer("the rewritten rule is longer than 2000 characters")
    return rule.strip()


def parse_topic(text: str) -> str | None:
    """The extraction answer's topic, or None if it has no usable one (then it falls back)."""
    try:
        topic = extract_json(text).get("topic")
    except BadAnswer:
        return None
    if not isinstance(topic, str) or not topic.strip() or len(topic) > 120:
        return None
    return " ".join(topic.split())


def parse_extraction(text: str) -> tuple[list[PreconditionSpec], str | None]:
    """(chain, topic) from a precondition-extraction answer."""
    return parse_preconditions(text), parse_topic(text)


def parse_preconditions(text: str) -> list[PreconditionSpec]:
    data = extract_json(text)
    items = data.get("preconditions")
    if not isinstance(items, list) or not items:
        raise BadAnswer("'preconditions' must be a non-empty list")
    if len(items) > MAX_PRECONDITIONS:
        raise BadAnswer(f"at most {MAX_PRECONDITIONS} preconditions")
    chain = []
    for index, item in enumerate(items):
        if isinstance(item, dict):
            # Extra keys a model adds ("reason", ...) are dropped; long lists are cut at the
            # limit, which makes the rule need review (judge.constitution.review).
            item = {k: v for k, v in item.items() if k in ("any_of", "statement", "objects")}
            if isinstance(item.get("objects"), list):
                item["objects"] = item["objects"][:MAX_OBJECTS]
            if isinstance(item.get("any_of"), list):
                item["any_of"] = item["any_of"][:MAX_ALTERNATIVES]
        try:
            chain.append(PreconditionSpec.model_validate(item))
        except ValidationError as error:
            first = error.errors(include_url=False)[0]
            raise BadAnswer(f"precondition {index + 1} is malformed: {first['msg']}") from None
    return chain


# ---- talking to the model ------------------------------------------------------------

T = TypeVar("T")


class _Session:
    """One compile run: the back end, options, and counters shared by all rules."""

    def __init__(self, backend: Backend, options: CompileOptions) -> None:
        self.backend = backend
        self.options = options
        self.calls = 0
        self.failed_calls = 0
        self.first_error: str | None = None

    async def ask(
        self,
        prompt: str,
        *,
        form: str,
        schema: dict[str, Any],
        max_tokens: int,
        parse: Callable[[str], T],
        notes: list[str],
    ) -> T | None:
        """The parsed answer to `prompt`, asking again after a malformed one; None if
        every try failed (the reasons go to `notes`)."""
        first = Message.user(prompt)
        chat: list[Message] = [first]
        for _ in range(1 + self.options.parse_retries):
            results = await self.backend.generate([chat], max_tokens, json_schema=schema)
            self.calls += 1
            if len(results) != 1:
                raise BackendError(
                    f"the back end returned {len(results)} generations for 1 chat",
                    hint="this is a bug in the back end",
                )
            answer = results[0]
            if answer.error is not None:
                self.failed_calls += 1
                self.first_error = self.first_error or answer.error
                notes.append(f"{form}: model error: {answer.error}")
                continue
            try:
                return parse(answer.text)
            except BadAnswer as error:
                notes.append(f"{form}: {error}")
                # Show the model its own answer and what was wrong with it: at temperature
                # 0 the same prompt alone would give the same answer again.
                retry = render("json_retry", error=str(error), form=_FORMS[form])
                chat = [first, Message.assistant(answer.text[:4000]), Message.user(retry)]
        return None


async def _objectify(
    session: _Session, rule: RuleSpec, notes: list[str]
) -> tuple[str, Objectiveness | None]:
    """The best text and its score; (the author's text, None) if it could not be scored."""
    opts = session.options
    scored = await session.ask(
        render("objectify_score", rule=rule.text),
        form="score",
        schema=SCORE_SCHEMA,
        max_tokens=opts.max_tokens_score,
        parse=parse_score,
        notes=notes,
    )
    if scored is None:
        notes.append("objectiveness could not be scored; the text is kept as written")
        return rule.text, None
    best_score, best_explanation = scored
    best_text = rule.text
    current_text, (score, explanation) = rule.text, scored
    attempts = 1
    for _ in range(opts.max_rewrites):
        if score >= opts.target_score:
            break
        rewritten = await session.ask(
            render("objectify_rewrite", rule=current_text, explanation=explanation),
            form="rewrite",
            schema=REWRITE_SCHEMA,
            max_tokens=opts.max_tokens_rewrite,
            parse=parse_rewrite,
            notes=notes,
        )
        if rewritten is None:
            break
        rescored = await session.ask(
            render("objectify_score", rule=rewritten),
            form="score",
            schema=SCORE_SCHEMA,
            max_tokens=opts.max_tokens_score,
            parse=parse_score,
            notes=notes,
        )
        attempts += 1
        if rescored is None:
            break
        current_text, (score, explanation) = rewritten, rescored
        if score >= best_score:  # ties go to the rewrite: it was made to be more objective
            best_text, best_score, best_explanation = current_text, score, explanation
    reached = best_score >= opts.target_score
    if not reached:
        notes.append(
            f"objectiveness {best_score} is under {opts.target_score} after "
            f"{attempts - 1} rewrite(s): review the rule"
        )
    return best_text, Objectiveness(
        score=best_score,
        explanation=best_explanation,
        rewritten=best_text != rule.text,
        reached=reached,
        attempts=attempts,
    )


async def _compile_rule(
    session: _Session, rule: RuleSpec, slots: asyncio.Semaphore
) -> tuple[CompiledRule, RuleReport]:
    notes: list[str] = []
    topic, topic_by = (rule.topic, HAND_WRITTEN) if rule.topic else (None, None)
    async with slots:
        text, objectiveness = await _objectify(session, rule, notes)
        # Read after a request: a server asked for "whatever it serves" names its model
        # in its first answer.
        model = session.backend.model_id
        if rule.preconditions:
            chain, chain_by = list(rule.preconditions), HAND_WRITTEN
        else:
            extracted = await session.ask(
                render("preconditions", rule=text),
                form="preconditions",
                schema=PRECONDITIONS_SCHEMA,
                max_tokens=session.options.max_tokens_preconditions,
                parse=parse_extraction,
                notes=notes,
            )
            if extracted is None:
                chain, chain_by = [PreconditionSpec(any_of=[text])], FALLBACK
                notes.append(
                    "precondition extraction failed: the rule's text is its one precondition"
                )
            else:
                chain, chain_by = extracted[0], model
                if topic is None and extracted[1] is not None:
                    topic, topic_by = extracted[1], model
    if topic is None:
        topic = fallback_topic(chain)
        topic_by = FALLBACK if topic is not None else None
    produced_by = Provenance(
        text=model if text != rule.text else HAND_WRITTEN,
        objectiveness=model if objectiveness is not None else FALLBACK,
        preconditions=chain_by,
        topic=topic_by,
    )
    compiled = _compiled(
        rule,
        text=text,
        objectiveness=objectiveness,
        produced_by=produced_by,
        chain=chain,
        topic=topic,
    )
    return compiled, _report(compiled, sent_to_model=True, notes=notes)


def fallback_topic(chain: Sequence[PreconditionSpec]) -> str | None:
    """A topic made of the chain's central object words ("gun, person or muzzle"), when no
    one wrote one: it asks at least as broadly as the rule's own objects."""
    words = list(dict.fromkeys(w.strip() for p in chain for w in p.all_objects() if w.strip()))
    words = words[:_TOPIC_WORDS]
    if not words:
        return None
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " or " + words[-1]


def _report(compiled: CompiledRule, *, sent_to_model: bool, notes: list[str]) -> RuleReport:
    scored = compiled.objectiveness
    return RuleReport(
        id=compiled.id,
        sent_to_model=sent_to_model,
        extraction=compiled.extraction,
        score=scored.score if scored else None,
        reached=scored.reached if scored else False,
        rewritten=scored.rewritten if scored else False,
        notes=notes,
        review=needs_review([compiled]).get(compiled.id, []),
    )


def _compiled(
    rule: RuleSpec,
    *,
    text: str,
    objectiveness: Objectiveness | None,
    produced_by: Provenance,
    chain: Sequence[PreconditionSpec],
    topic: str | None,
) -> CompiledRule:
    return CompiledRule(
        id=rule.id,
        source_text=rule.text,
        text=text,
        text_sha256=rule.text_sha256(),
        topic=topic,
        category=rule.category,
        severity=rule.severity,
        enabled=rule.enabled,
        thresholds=rule.thresholds,
        objectiveness=objectiveness,
        produced_by=produced_by,
        preconditions=list(chain),
    )


def hand_written_lock(
    spec: ConstitutionSpec, *, source: str, source_sha256: str, compiled_at: str | None = None
) -> Lock:
    """The lock of `spec` made without a model, as `judge compile --no-model --force`
    writes it: every rule as hand-written (each needs hand-written preconditions), nothing
    scored. `dump_lock` words its header from that. For generated locks (the toy's).

    Raises:
        ValueError: a rule has no hand-written preconditions.
    """
    return Lock(
        name=spec.name,
        source=source,
        source_sha256=source_sha256,
        compiler_model=HAND_WRITTEN,
        compiled_at=compiled_at or datetime.now(UTC).isoformat(timespec="seconds"),
        defaults=spec.defaults,
        rules=[hand_written(rule) for rule in spec.rules],
    )


def hand_written(rule: RuleSpec) -> CompiledRule:
    """`rule` compiled without a model: its own text, its hand-written chain and topic (or
    the chain's object words as the topic), nothing scored.

    Raises:
        ValueError: the rule has no hand-written preconditions.
    """
    if not rule.preconditions:
        raise ValueError(f"rule {rule.id} has no hand-written preconditions")
    topic = rule.topic or fallback_topic(rule.preconditions)
    topic_by = HAND_WRITTEN if rule.topic else (FALLBACK if topic else None)
    return _compiled(
        rule,
        text=rule.text,
        objectiveness=None,
        produced_by=Provenance(topic=topic_by),
        chain=rule.preconditions,
        topic=topic,
    )


def _reuse(previous: CompiledRule, rule: RuleSpec) -> CompiledRule:
    """A rule whose text is unchanged keeps its compiled parts; the fields the compiler
    never reads (category, severity, enabled, thresholds) come from the source, and so
    does a hand-written topic (written, changed or removed since)."""
    update: dict[str, object] = {
        "id": rule.id,
        "category": rule.category,
        "severity": rule.severity,
        "enabled": rule.enabled,
        "thresholds": rule.thresholds,
    }
    made = previous.produced_by
    if rule.topic:
        update["topic"] = rule.topic
        update["produced_by"] = made.model_copy(update={"topic": HAND_WRITTEN})
    elif made.topic == HAND_WRITTEN or (previous.topic is None and made.topic is None):
        topic = fallback_topic(previous.preconditions)
        update["topic"] = topic
        update["produced_by"] = made.model_copy(update={"topic": FALLBACK if topic else None})
    return previous.model_copy(update=update)


def plan(
    spec: ConstitutionSpec, previous: Lock | None, *, force: bool = False
) -> tuple[list[RuleSpec], dict[str, CompiledRule]]:
    """Which rules must go to the model, and the reusable compiled rules of the others."""
    reusable: dict[str, CompiledRule] = {}
    if previous is not None and not force:
        by_id = {r.id: r for r in previous.rules}
        by_hash = {r.text_sha256: r for r in previous.rules}
        for rule in spec.rules:
            sha = rule.text_sha256()
            old = by_id.get(rule.id)
            if old is None or old.text_sha256 != sha:
                old = by_hash.get(sha)  # a renamed rule keeps its compiled text
            if old is not None and old.text_sha256 == sha:
                reusable[rule.id] = old
    todo = [rule for rule in spec.rules if rule.id not in reusable]
    return todo, reusable


async def compile_spec(
    spec: ConstitutionSpec,
    backend: Backend | None,
    *,
    source: str,
    source_sha256: str,
    previous: Lock | None = None,
    force: bool = False,
    options: CompileOptions | None = None,
) -> CompileReport:
    """Compile `spec` into a Lock, sending only changed rules to `backend`.

    Args:
        source: the constitution's file name, recorded in the lock (relative to it).
        previous: the current lock, whose unchanged rules are reused unless `force`.
        backend: None compiles without a model: every rule to compile must then have
            hand-written preconditions, and its objectiveness stays unscored.
    """
    options = options or CompileOptions()
    if options.concurrency < 1:
        raise ValueError("concurrency must be at least 1")
    started = time.perf_counter()
    todo, reusable = plan(spec, previous, force=force)
    session = _Session(backend, options) if backend is not None else None
    fresh: dict[str, tuple[CompiledRule, RuleReport]] = {}
    if session is not None and todo:
        slots = asyncio.Semaphore(options.concurrency)
        results = await asyncio.gather(*(_compile_rule(session, r, slots) for r in todo))
        fresh = {compiled.id: (compiled, report) for compiled, report in results}
        if session.calls and session.failed_calls == session.calls:
            raise BackendError(
                f"every request to model {backend.model_id if backend else '?'} failed: "
                f"{session.first_error}",
                hint="check the model and server",
            )
    else:
        for rule in todo:
            if not rule.preconditions:
                raise ConstitutionError(
                    "has no hand-written preconditions, so compiling it needs a model "
                    "(--model, --server or --backend)",
                    file=source,
                    rule_id=rule.id,
                )
            compiled = hand_written(rule)
            notes = ["compiled without a model: objectiveness not scored"]
            fresh[rule.id] = (compiled, _report(compiled, sent_to_model=False, notes=notes))

    rules: list[CompiledRule] = []
    reports: list[RuleReport] = []
    for rule in spec.rules:
        if rule.id in fresh:
            compiled, report = fresh[rule.id]
        else:
            compiled = _reuse(reusable[rule.id], rule)
            notes = ["unchanged: reused from the lock"]
            report = _report(compiled, sent_to_model=False, notes=notes)
            report.reused = True
        rules.append(compiled)
        reports.append(report)

    # The lock names the models that produced what it holds or were asked this time (even
    # if every answer fell back), nothing else: a lock whose every field was written by
    # hand says so.
    used_model = session is not None and session.calls > 0
    models = sorted(
        {m for rule in rules for m in rule.produced_by.models()}
        | ({backend.model_id} if used_model and backend is not None else set())
    )
    if used_model:
        prompt_versions = versions(*PROMPTS)
    elif models and previous is not None:
        prompt_versions = dict(previous.prompt_versions)
    else:
        prompt_versions = {}
    compiler_model = ", ".join(models) if models else HAND_WRITTEN
    lock = Lock(
        name=spec.name,
        source=source,
        source_sha256=source_sha256,
        compiler_model=compiler_model,
        prompt_versions=prompt_versions,
        compiled_at=datetime.now(UTC).isoformat(timespec="seconds"),
        defaults=spec.defaults,
        calibration=previous.calibration if previous is not None else None,
        rules=rules,
    )
    if previous is not None and lock.lock_hash() == previous.lock_hash():
        # Nothing compiled changed: keep the old timestamp so the lock file stays as it was.
        lock = lock.model_copy(update={"compiled_at": previous.compiled_at})
    return CompileReport(
        lock=lock,
        rules=reports,
        seconds=time.perf_counter() - started,
        model_calls=session.calls if session else 0,
    )


# ---- benchmark -----------------------------------------------------------------------

_BENCH_SUBJECTS = (
    "a knife blade",
    "a handgun",
    "a syringe",
    "an open flame on skin",
    "exposed bone",
    "a noose",
    "a swastika",
    "pills spilled on a table",
    "a bleeding wound",
    "bare buttocks",
)


def benchmark_spec(n_rules: int, *, salt: str = "") -> ConstitutionSpec:
    """A synthetic constitution of `n_rules` distinct rules (no hand-written chains)."""
    rules = [
        RuleSpec(
            id=f"rule-{i:04d}",
            text=f"Images must not show {_BENCH_SUBJECTS[i % len(_BENCH_SUBJECTS)]} "
            f"covering more than {5 + i % 90} percent of the image{salt}.",
        )
        for i in range(n_rules)
    ]
    return ConstitutionSpec(name="benchmark", rules=rules)


async def compile_benchmark_async(
    backend: Backend,
    n_rules: int = 100,
    *,
    concurrency: int = 16,
    options: CompileOptions | None = None,
) -> dict[str, Any]:
    """Time compiling `n_rules` rules one at a time against `concurrency` at a time.

    Each run gets its own rule texts, so a prefix cache warmed by one run cannot favour
    the other.

    Returns:
        seconds and model calls of each run, the speed-up, and how many rules fell back.
    """
    options = options or CompileOptions()
    await backend.generate([[Message.user("Hello")]], 1)  # warm-up: first-request compile
    out: dict[str, Any] = {
        "n_rules": n_rules,
        "concurrency": concurrency,
        "model": backend.model_id,
    }
    for label, slots in (("sequential", 1), ("concurrent", concurrency)):
        spec = benchmark_spec(n_rules, salt=f" ({label})")
        report = await compile_spec(
            spec,
            backend,
            source="benchmark.yaml",
            source_sha256="0" * 64,
            options=CompileOptions(**{**options.__dict__, "concurrency": slots}),
        )
        out[f"{label}_s"] = round(report.seconds, 3)
        out[f"{label}_calls"] = report.model_calls
        out[f"{label}_fallbacks"] = len(report.fallbacks)
    out["speedup"] = round(out["sequential_s"] / max(out["concurrent_s"], 1e-9), 2)
    return out


def compile_benchmark(backend: Backend, n_rules: int = 100, **kwargs: Any) -> dict[str, Any]:
    """Synchronous `compile_benchmark_async`."""
    return asyncio.run(compile_benchmark_async(backend, n_rules, **kwargs))
