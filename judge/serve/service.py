"""The service's state and the judging path both endpoints share.

`Service` holds what lives as long as the process: the config, the shared back end and
store, the policy holder, admission control, metrics and the decision log.

A request does all its work inside one slot (`Service.slot`, or 429 when the queue is
full): its body is read and parsed, its remote images fetched, its images checked,
decoded and judged there, so `--max-concurrent` bounds all of it. The slot is given back
when the last thread the request started has returned (judge/serve/work.py), which may be
after the answer when a decode outlived the timeout. `judge_images` is the one way images
are judged: take the active policy (a reload during the request does not change it),
judge every image at once with a timeout each (at the timeout the image's tasks are
cancelled, so no model call is made for it any more), log each decision, count it.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from judge.serve.admission import Admission
from judge.serve.config import ServeConfig
from judge.serve.decisions import DecisionLog
from judge.serve.inputs import ImageBytes
from judge.serve.metrics import Metrics
from judge.serve.moderation import flag, restrict
from judge.serve.policy import ActivePolicy, ModelOptions, PolicyHolder
from judge.serve.problems import ApiError
from judge.serve.work import track, untrack


@dataclass
class Judged:
    """One judged image: its verdict and what the service decided about it."""

    verdict: Any
    flagged: bool
    reason: str | None
    decision_id: str
    lock_hash: str


def all_undecided(image_id: str, sha256: str, rule_ids: list[str], reason: str) -> Any:
    """The verdict of an image the Judge gave no verdict for: every rule undecided."""
    from judge import RuleVerdict, Verdict

    return Verdict(
        image_id=image_id,
        sha256=sha256,
        outcome="undecided",
        undecided=list(rule_ids),
        rules=[RuleVerdict(rule_id=r, outcome="undecided", reason=reason) for r in rule_ids],
    )


def _cause(verdict: Any) -> str | None:
    if verdict.outcome != "undecided":
        return None
    reasons = " ".join(r.reason or "" for r in verdict.rules if r.outcome == "undecided")
    if "timed out" in reasons:
        return "timeout"
    if "internal error" in reasons:
        return "internal_error"
    if "model failure" in reasons:
        return "model_failure"
    return "uncertain"


def check_rules(rules: list[str], known: list[str]) -> None:
    """Refuse a rule subset that is empty or names a rule the policy lacks: an empty
    subset would judge nothing and answer "safe" for any image.

    Raises:
        ApiError: 422 `empty_rules` or `unknown_rule`.
    """
    if not rules:
        raise ApiError(
            422, "empty_rules",
            "the rule subset is empty, so nothing would be judged; name at least one rule "
            f"id, or leave rules out to judge every rule (the policy's rules: "
            f"{', '.join(known)})",
            param="rules",
        )
    unknown = sorted(set(rules) - set(known))
    if unknown:
        raise ApiError(
            422, "unknown_rule",
            f"the policy has no rule(s) {', '.join(unknown)}; its rules: {', '.join(known)}",
            param="rules",
        )


class Service:
    def __init__(
        self, config: ServeConfig, *, backend: Any, options: ModelOptions, store: Any
    ) -> None:
        self.config, self.backend, self.store = config, backend, store
        self.tokens = config.tokens
        limits = config.limits
        self.admission = Admission(limits.max_concurrent, limits.max_queue, limits.retry_after_s)
        self.holder = PolicyHolder(config.constitution, options, backend, store)
        self.log = DecisionLog(store, keep_images=config.log_images)
        self.metrics = Metrics(self._live)
        self.started_at = time.time()
        self.ready_cache: tuple[float, bool, list[dict[str, Any]]] | None = None
        self.stopping = False

    async def aclose(self) -> None:
        """Close the back end and the store (the service owns both)."""
        self.stopping = True
        try:
            await self.backend.aclose()
        finally:
            self.store.close()

    def _live(self) -> dict[str, Any]:
        active = self.holder.active
        stats = getattr(self.backend, "stats", None)
        return {
            "running": self.admission.running,
            "waiting": self.admission.waiting,
            "stats": stats.snapshot() if stats is not None else {},
            "lock_hash": active.lock_hash if active else None,
            "policy_name": active.lock.name if active else "",
        }

    def policy(self) -> ActivePolicy:
        if self.stopping or self.holder.active is None:
            raise ApiError(503, "not_ready", "the service has no policy loaded yet, or is "
                           "stopping; retry shortly", headers={"Retry-After": "1"})
        return self.holder.active

    async def reload(self) -> tuple[bool, str, ActivePolicy | None]:
        """Re-read the tokens file (if any) and the policy; each failure keeps the old."""
        note = self._reload_tokens()
        changed, message, active = await self.holder.reload()
        self.metrics.reloads.labels("accepted" if changed else "refused").inc()
        return changed, message + note, active

    def _reload_tokens(self) -> str:
        path = self.config.tokens_file
        if path is None:
            return ""
        from judge.errors import JudgeError
        from judge.serve.auth import load_tokens

        try:
            fresh = load_tokens(path)
        except JudgeError as error:
            self.metrics.reloads.labels("tokens_refused").inc()
            return f"; tokens kept as they were: {error}"
        self.tokens = fresh  # one assignment: a request sees the old set or the new
        return f"; {len(fresh.names)} token(s) read from {path.name}"

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """Hold one judging slot for the body of the `async with`: a whole request. The
        slot is released once every thread started inside has returned.

        Raises:
            ApiError: 429 when every slot is busy and the queue is full.
        """
        await self.admission.acquire()
        work, token = track()
        try:
            yield
        finally:
            untrack(token)
            work.when_done(self.admission.release)

    async def judge_images(
        self,
        images: list[ImageBytes],
        *,
        endpoint: str,
        token_name: str | None,
        rules: list[str] | None = None,
        ids: list[str | None] | None = None,
        prefix: str = "req",
    ) -> tuple[str, ActivePolicy, list[Judged]]:
        """Judge `images` under one policy; (request id, that policy, one Judged each).
        Call it inside `slot()`.

        Raises:
            ApiError: 503 (no policy), 422 (an empty rule subset, an unknown rule id, or
                an image that could not be decoded).
        """
        request_id = f"{prefix}-{uuid.uuid4().hex}"
        policy = self.policy()
        if rules is not None:
            check_rules(rules, policy.rule_ids)
        policy.in_flight += 1
        try:
            names = ids or [None] * len(images)
            judged = await asyncio.gather(*(
                self._one(policy, request_id, index, image, names[index], endpoint,
                          token_name, rules)
                for index, image in enumerate(images)
            ))
        finally:
            policy.in_flight -= 1
        broken = [
            (i, j.verdict.error) for i, j in enumerate(judged) if j.verdict.outcome == "error"
        ]
        if broken:
            raise ApiError(
                422, "bad_image",
                "; ".join(f"image {i}: {error}" for i, error in broken), param="input",
            )
        return request_id, policy, list(judged)

    async def _one(
        self,
        policy: ActivePolicy,
        request_id: str,
        index: int,
        image: ImageBytes,
        name: str | None,
        endpoint: str,
        token_name: str | None,
        rules: list[str] | None,
    ) -> Judged:
        # The Judge and both logs see the generated id, never the caller's: a caller's name
        # cannot pose as another request's image. The answer shows the caller's name.
        image_id = f"{request_id}/{index}"
        limits = self.config.limits
        timeout = limits.video_timeout_s if image.video else limits.request_timeout_s
        started = time.perf_counter()
        try:
            verdict = await asyncio.wait_for(
                policy.judge.ajudge((image_id, image.data)), timeout=timeout
            )
        except TimeoutError:
            verdict = all_undecided(
                image_id, image.sha256, policy.rule_ids,
                f"timed out after {timeout:g} s (the model is slow or unreachable)",
            )
        except Exception as error:
            # A bug must not answer "safe", nor a bare 500: fail closed, with the trace
            # in the log and only the error's type in the answer.
            logging.getLogger("judge.serve").exception("judging %s failed", image_id)
            verdict = all_undecided(
                image_id, image.sha256, policy.rule_ids,
                f"internal error ({type(error).__name__}); see the service's log",
            )
        total = time.perf_counter() - started
        if rules is not None:
            verdict = restrict(verdict, rules)
        logged = verdict
        if name is not None:
            verdict = verdict.model_copy(update={"image_id": name})
        flagged, reason = flag(verdict, self.config.fail_closed)
        timings = dict(verdict.run.timings) if verdict.run is not None else {}
        timings["total"] = total
        try:
            decision_id = await asyncio.to_thread(
                self.log.record,
                request_id=request_id, image_id=image_id, caller_image_id=name,
                endpoint=endpoint, token_name=token_name, sha256=image.sha256,
                lock_hash=policy.lock_hash, verdict=logged, flagged=flagged, reason=reason,
                timings=timings, image=image.data,
            )
        except Exception as error:  # a full disk must not turn a verdict into a 500
            logging.getLogger("judge.serve").error("could not log a decision: %s", error)
            self.metrics.rejected.labels("log_failed").inc()
            decision_id = "unlogged"
        self.metrics.observe_verdict(verdict, _cause(verdict))
        return Judged(verdict, flagged, reason, decision_id, policy.lock_hash)

    async def readiness(self) -> tuple[bool, list[dict[str, Any]]]:
        """(ready, checks): a policy is loaded and the model passes the doctor's checks.
        A pass is reused for `ready_check_s`; a failure is re-checked on the next call."""
        now = time.monotonic()
        if self.ready_cache and self.ready_cache[1] and now - self.ready_cache[0] < (
            self.config.ready_check_s
        ):
            return self.ready_cache[1], self.ready_cache[2]
        checks: list[dict[str, Any]] = []
        active = self.holder.active
        checks.append({
            "name": "policy", "ok": active is not None,
            "found": f"lock {active.lock_hash}" if active else "no policy loaded",
        })
        try:
            rows = await asyncio.wait_for(self.backend.check(), timeout=15)
        except TimeoutError:
            rows = [("model", False, "the model did not answer the checks within 15 s")]
        except Exception as error:  # a failed probe is a "not ready", never a crash
            rows = [("model", False, f"{type(error).__name__}: {error}")]
        checks += [{"name": n, "ok": bool(ok), "found": str(found)} for n, ok, found in rows]
        ready = all(c["ok"] for c in checks) and not self.stopping
        self.ready_cache = (now, ready, checks)
        return ready, checks
