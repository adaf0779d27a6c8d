"""The `vllm-fleet` back end: several vLLM servers (replicas of one model) as one back end.

    backend = load_backend("vllm-server", server=["http://a:8000", "http://b:8000"])
    judge = Judge(policy, servers=["http://a:8000", "http://b:8000"])

Each replica is a `VLLMServerBackend` (its own connections, retries and circuit breaker).
Queries are routed by `judge.models.fleet_routing`: all queries about one image go to one
replica (consistent hashing on the image key, load as tie-breaker), so its prefix cache
serves the image's tokens to every statement; "round-robin" is there to compare against.

Health: a query that fails on a replica makes the fleet ask that replica's `/health`. If
it does not answer 200, the replica is taken out of service, its keys move to the next
replica on the ring and the failed queries are sent there (each query tries each replica
at most once). A query that failed on a healthy replica (a request the server refused) is
not re-sent: it stays failed, and the engine makes its precondition undecided, never
"not met". Replicas out of service are probed every `health_interval` seconds while the
fleet is in use, and come back once `/health` answers 200 and they serve the same model.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from judge.errors import BackendError, InputError, ModelCapabilityError
from judge.models._chat import chat_images
from judge.models._secret import Secret
from judge.models.base import Backend, Chat, Generation, YesNoQuery, YesNoResult
from judge.models.fleet_routing import Policy, Router

log = logging.getLogger(__name__)
R = TypeVar("R", YesNoResult, Generation)
Q = TypeVar("Q")

ServerArg = str | Sequence[str] | None


def split_servers(servers: ServerArg) -> list[str]:
    """Server URLs from one string (comma- or space-separated), or several, in order, each
    once. `JUDGE_SERVER` may hold several the same way."""
    if servers is None:
        return []
    items = [servers] if isinstance(servers, str) else list(servers)
    out: list[str] = []
    for item in items:
        out += [u for u in item.replace(",", " ").split() if u]
    return list(dict.fromkeys(out))


def query_key(query: YesNoQuery) -> str:
    """The routing key of a Yes/No query: its image's key; for a prior, its question."""
    if query.image is None:
        return "prior:" + query.question
    if query.image_key:
        return query.image_key
    return "pixels:" + _pixels_key(query.image)


def chat_key(chat: Chat) -> str:
    """The routing key of a chat: its first image's key (the engine names it), else text."""
    images = chat_images(chat)
    if images:
        named = images[0].info.get("judge_key")
        return str(named) if named else "pixels:" + _pixels_key(images[0])
    return "text:" + "".join(p for m in chat for p in m.parts if isinstance(p, str))[:512]


def _pixels_key(image: Any) -> str:
    import hashlib

    digest = hashlib.blake2b(digest_size=12)
    digest.update(f"{image.mode}{image.size}".encode())
    digest.update(image.tobytes())
    return digest.hexdigest()


@dataclass
class Replica:
    """One server of the fleet and what the fleet knows about it."""

    url: str
    backend: Any  # VLLMServerBackend
    healthy: bool = True
    reason: str = ""  # why it is out of service
    next_probe: float = 0.0
    in_flight: int = 0
    routed: int = 0  # queries and chats sent to it
    taken_out: int = 0  # times it was taken out of service
    probing: bool = field(default=False, repr=False)


class FleetBackend(Backend):
    """Several OpenAI-compatible (vLLM) servers serving one model, as one back end.

    Args:
        model: the model every replica must serve; None takes the one they serve.
        servers: the replicas' base URLs (two or more; one works too).
        api_key: sent to every replica.
        routing: "affinity" (prefix-aware, the default) or "round-robin".
        load_factor: how far above the mean load a replica keeps taking new images.
        health_interval: seconds between probes of a replica out of service.
        health_timeout: seconds a `/health` probe may take.
        retries: retries on one replica before the fleet moves the query on.
        **options: the other `VLLMServerBackend` options, for every replica.
    """

    kind = "vllm-fleet"

    def __init__(
        self,
        model: str | None = None,
        *,
        servers: ServerArg = None,
        api_key: Secret | str | None = None,
        routing: Policy = "affinity",
        load_factor: float = 1.5,
        health_interval: float = 5.0,
        health_timeout: float = 3.0,
        retries: int = 1,
        backoff: float = 0.25,
        **options: Any,
    ) -> None:
        super().__init__()
        from judge.models.vllm_server import VLLMServerBackend, normalize_url

        urls = split_servers(servers if servers is not None else os.environ.get("JUDGE_SERVER"))
        if not urls:
            raise InputError("a fleet needs server URLs: pass --server URL (several times)")
        self.urls = [normalize_url(u) for u in urls]
        if len(set(self.urls)) != len(self.urls):
            raise InputError(f"a server is listed twice: {', '.join(urls)}")
        try:
            self.router = Router(self.urls, routing, load_factor)
        except ValueError as error:
            raise InputError(str(error)) from None
        self.replicas = [
            Replica(
                url,
                VLLMServerBackend(
                    model, server=url, api_key=api_key, retries=retries, backoff=backoff,
                    **options,
                ),
            )
            for url in self.urls
        ]
        self.health_interval, self.health_timeout = health_interval, health_timeout
        self._requested_model = model
        self._started = False
        self._start_lock: asyncio.Lock | None = None
        self._probes: set[asyncio.Task[None]] = set()

    def __repr__(self) -> str:
        return f"FleetBackend({self.urls!r}, routing={self.router.policy!r})"

    # -- properties ----------------------------------------------------------------------

    @property
    def model_id(self) -> str:
        for replica in self.replicas:
            if replica.backend.model_id:
                return str(replica.backend.model_id)
        return self._requested_model or ""

    @property
    def supports_json_schema(self) -> bool:
        return all(r.backend.supports_json_schema for r in self.replicas)

    @property
    def max_image_pixels(self) -> int | None:
        value = self.replicas[0].backend.max_image_pixels
        return int(value) if value is not None else None

    def healthy(self) -> list[int]:
        return [i for i, r in enumerate(self.replicas) if r.healthy]

    def replica_stats(self) -> list[dict[str, Any]]:
        """Per replica: URL, in service or not (and why), queries routed, server counters."""
        return [
            {
                "url": r.url,
                "healthy": r.healthy,
                "reason": r.reason,
                "routed": r.routed,
                "taken_out": r.taken_out,
                **{k: v for k, v in r.backend.stats.snapshot().items()},
            }
            for r in self.replicas
        ]

    def _sync_stats(self) -> None:
        # Transport counters live in the replicas; the fleet's stats add them up.
        self.stats.requests = sum(r.backend.stats.requests for r in self.replicas)
        self.stats.retries = sum(r.backend.stats.retries for r in self.replicas)

    # -- start ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Connect to every replica; those that cannot be used are taken out.

        Raises:
            BackendError: no replica can be used, or they serve different models.
            ModelCapabilityError: a replica's model cannot do what judge needs.
        """
        await self._ensure_started()

    async def _ensure_started(self) -> None:
        if self._started:
            return
        if self._start_lock is None:
            self._start_lock = asyncio.Lock()
        async with self._start_lock:
            if self._started:
                return
            results = await asyncio.gather(
                *(r.backend.start() for r in self.replicas), return_exceptions=True
            )
            for replica, result in zip(self.replicas, results, strict=True):
                if isinstance(result, ModelCapabilityError):
                    raise result
                if isinstance(result, InputError):
                    raise result
                if isinstance(result, BaseException):
                    if not isinstance(result, BackendError):
                        raise result
                    self._take_out(replica, str(result))
            up = [r for r in self.replicas if r.healthy]
            if not up:
                reasons = "; ".join(f"{r.url}: {r.reason}" for r in self.replicas)
                raise BackendError(f"no server of the fleet can be used ({reasons})")
            models = {r.backend.model_id for r in up}
            if len(models) > 1:
                raise BackendError(
                    "the servers of the fleet serve different models: "
                    + ", ".join(f"{r.url} {r.backend.model_id}" for r in up),
                    hint="serve one model on every replica, or name it with --model",
                )
            self._started = True

    # -- health --------------------------------------------------------------------------

    def _take_out(self, replica: Replica, reason: str) -> None:
        if replica.healthy:
            log.warning("taking %s out of the fleet: %s", replica.url, reason)
            replica.taken_out += 1
        replica.healthy, replica.reason = False, reason
        replica.next_probe = time.monotonic() + self.health_interval
        self.router.forget(self.replicas.index(replica))

    async def _health_ok(self, replica: Replica) -> bool:
        """`/health` answers 200 (and, after an outage, the same model is served)."""
        import httpx

        try:
            async with httpx.AsyncClient(timeout=self.health_timeout, trust_env=False) as client:
                response = await client.get(replica.url + "/health")
                if response.status_code != 200:
                    return False
                if replica.healthy:
                    return True
                models = await client.get(replica.url + "/v1/models", headers=_auth(replica))
                served = {str(m.get("id")) for m in models.json().get("data", [])}
        except (httpx.HTTPError, ValueError, AttributeError):
            return False
        return self.model_id in served or not self.model_id

    def _schedule_probes(self) -> None:
        now = time.monotonic()
        for replica in self.replicas:
            if not replica.healthy and not replica.probing and now >= replica.next_probe:
                replica.probing = True
                task = asyncio.ensure_future(self._probe(replica))
                self._probes.add(task)
                task.add_done_callback(self._probes.discard)

    async def _probe(self, replica: Replica) -> None:
        try:
            if await self._health_ok(replica):
                log.warning("%s is healthy again: back in the fleet", replica.url)
                replica.backend.breaker.success()  # its own breaker may still be open
                replica.healthy, replica.reason = True, ""
            else:
                replica.next_probe = time.monotonic() + self.health_interval
        finally:
            replica.probing = False

    async def check_health(self) -> list[bool]:
        """Probe every replica now; bring back those that are healthy (for callers that
        want to wait for a replica, such as `judge serve` and tests)."""
        for replica in self.replicas:
            if not replica.healthy:
                replica.next_probe = 0.0
        self._schedule_probes()
        if self._probes:
            await asyncio.gather(*list(self._probes), return_exceptions=True)
        return [r.healthy for r in self.replicas]

    # -- dispatch ------------------------------------------------------------------------

    async def _dispatch(
        self,
        items: Sequence[Q],
        keys: Sequence[str],
        send: Callable[[Any, list[Q]], Awaitable[list[R]]],
        failed: Callable[[str], R],
    ) -> list[R]:
        """Route each item, send each replica its share, and move failures on."""
        await self._ensure_started()
        self._schedule_probes()
        results: list[R | None] = [None] * len(items)
        tried: list[set[int]] = [set() for _ in items]
        todo = list(range(len(items)))
        last_error: dict[int, str] = {}
        while todo:
            shares: dict[int, list[int]] = {}
            loads = [r.in_flight for r in self.replicas]
            healthy = set(self.healthy())
            for i in todo:
                choice = self.router.choose(keys[i], loads, healthy, tried[i])
                if choice is None:
                    reason = last_error.get(i) or "; ".join(
                        f"{r.url}: {r.reason}" for r in self.replicas if not r.healthy
                    )
                    results[i] = failed(f"no server of the fleet could answer ({reason})")
                    continue
                loads[choice] += 1
                shares.setdefault(choice, []).append(i)
            outcomes = await asyncio.gather(
                *(self._send_share(index, share, items, send) for index, share in shares.items())
            )
            todo = []
            for (index, share), (answers, moved_on) in zip(
                shares.items(), outcomes, strict=True
            ):
                for i, answer in zip(share, answers, strict=True):
                    if moved_on and _error(answer) is not None:
                        tried[i].add(index)
                        last_error[i] = f"{self.replicas[index].url}: {_error(answer)}"
                        todo.append(i)
                    else:
                        results[i] = answer
        self._sync_stats()
        return [r if r is not None else failed("not sent") for r in results]

    async def _send_share(
        self,
        index: int,
        share: list[int],
        items: Sequence[Q],
        send: Callable[[Any, list[Q]], Awaitable[list[R]]],
    ) -> tuple[list[Any], bool]:
        """The replica's answers, and whether its failures should move to another one."""
        replica = self.replicas[index]
        replica.in_flight += len(share)
        replica.routed += len(share)
        try:
            answers = await send(replica.backend, [items[i] for i in share])
        except ModelCapabilityError:
            raise
        except BackendError as error:  # the replica could not be used at all
            self._take_out(replica, str(error))
            return [_Failure(str(error))] * len(share), True
        finally:
            replica.in_flight -= len(share)
        if all(_error(a) is None for a in answers):
            return answers, False
        if await self._health_ok(replica):
            return answers, False  # it is up: the request itself failed; do not re-send
        reason = next(str(_error(a)) for a in answers if _error(a) is not None)
        self._take_out(replica, reason)
        return answers, True

    # -- the Backend interface -------------------------------------------------------------

    async def yes_no(self, queries: Sequence[YesNoQuery]) -> list[YesNoResult]:
        if not queries:
            return []
        keys = [query_key(q) for q in queries]

        async def send(backend: Any, share: list[YesNoQuery]) -> list[YesNoResult]:
            return list(await backend.yes_no(share))

        results = await self._dispatch(queries, keys, send, YesNoResult.failed)
        self.stats.count_yes_no(results)
        return results

    async def generate(
        self,
        chats: Sequence[Chat],
        max_tokens: int,
        json_schema: dict[str, Any] | None = None,
    ) -> list[Generation]:
        if not chats:
            return []
        keys = [chat_key(c) for c in chats]

        async def send(backend: Any, share: list[Chat]) -> list[Generation]:
            return list(await backend.generate(share, max_tokens, json_schema))

        results = await self._dispatch(
            chats, keys, send, lambda reason: Generation(text="", error=reason)
        )
        self.stats.count_generations(results)
        return results

    async def check(self) -> list[tuple[str, bool, str]]:
        """`judge doctor`: every replica's own checks; each row keeps its check's name (the
        name picks the exit code) and says which replica it is about."""
        rows: list[tuple[str, bool, str]] = []
        for replica in self.replicas:
            for name, ok, detail in await replica.backend.check():
                rows.append((name, ok, f"{replica.url}: {detail}"))
        return rows

    async def aclose(self) -> None:
        for task in list(self._probes):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        for replica in self.replicas:
            await replica.backend.aclose()


@dataclass(frozen=True)
class _Failure:
    """A share that could not be sent at all (its replica raised)."""

    error: str


def _error(answer: Any) -> str | None:
    return getattr(answer, "error", None)


def _auth(replica: Replica) -> dict[str, str]:
    headers: dict[str, str] = replica.backend._headers()
    return headers
