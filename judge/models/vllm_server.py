"""The `vllm-server` back end: a vLLM (or other OpenAI-compatible) server over HTTP.

One `httpx.AsyncClient` per event loop keeps connections alive; a semaphore bounds the
requests in flight. Each request has a deadline; connection errors, timeouts, 5xx answers
and malformed answers are retried with exponential backoff, 4xx answers never (the same
request would fail the same way). A circuit breaker stops the retries from hammering a
server that is down. A query that still fails comes back as a failed result carrying the
reason; only a server that cannot be used at all (down at start, wrong model, no
logprobs, no vision) raises.

Yes/No probabilities: one generated token at temperature 0 with `logprobs`. vLLM 0.32's
`logprob_token_ids` returns the logprob of exactly the label tokens (looked up once
through `/tokenize`), so they are never cut off by a top-k; servers without that field
get `top_logprobs` (20) instead, and a label outside it is reported missing.

JSON answers: a vLLM server (its /version says 0.11 or later) gets, per request, a grammar
derived from the schema with no free whitespace (judge/models/json_grammar.py), whatever
flags it was started with; other servers get `response_format`; a refusal steps down to the
next (grammar, then response_format, then unconstrained).

A dead engine: after a 5xx answer, /health is asked; a 503 (or no answer) means vLLM's
engine died, and every request after would fail too. The run then ends with a
BackendError that says so, with the served family's known limit and workaround when the
model folder is on this machine (judge.models.family), instead of undecided verdicts.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import re
import urllib.parse
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from PIL import Image

from judge.errors import BackendError, InputError, LogprobsError, NoVisionError, TokenizerError
from judge.models._batch import describe
from judge.models._breaker import CircuitBreaker, CircuitOpen, TrialPending
from judge.models._chat import png_data_url, to_openai, unique_images, yes_no_chat
from judge.models._labels import LabelTokens, find_label_tokens, result_from_logprobs
from judge.models._secret import Secret
from judge.models.base import Backend, Chat, Generation, Message, YesNoQuery, YesNoResult
from judge.models.family import Family, family_of_folder
from judge.models.json_grammar import compact_json_grammar
from judge.models.registry import require

log = logging.getLogger(__name__)
# How many recently seen images `yes_no` remembers as already cached on the server.
_WARM_IMAGES = 4096

T = TypeVar("T")

DOWN_HINT = (
    "Check that the vLLM server is running and listening there "
    "(python -m vllm.entrypoints.openai.api_server --model ... --port ...), "
    "and that --server / JUDGE_SERVER has the right host and port"
)
LOGPROBS_FIX = "restart the server with `--max-logprobs 20` (vllm serve ... --max-logprobs 20)"
VISION_FIX = (
    "serve a vision-language model (e.g. Qwen/Qwen2.5-VL-7B-Instruct); if it is one, "
    "allow an image per prompt with `--limit-mm-per-prompt '{\"image\":1}'`"
)


class _Failed(Exception):
    """An attempt failed; `retryable` says whether another attempt might succeed."""

    def __init__(self, reason: str, *, retryable: bool) -> None:
        super().__init__(reason)
        self.reason, self.retryable = reason, retryable


class _Open(_Failed):
    """The circuit breaker is open: the request was not sent."""


class _ClientError(Exception):
    """The server answered 4xx: the request itself is wrong; never retried."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"HTTP {status}: {message}")
        self.status, self.message = status, message


@dataclass
class _LoopState:
    loop: asyncio.AbstractEventLoop
    client: Any  # httpx.AsyncClient
    semaphore: asyncio.Semaphore
    start_lock: asyncio.Lock


def normalize_url(url: str) -> str:
    """The server's root URL: no trailing slash, no trailing /v1."""
    parsed = urllib.parse.urlparse(url.strip())
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise InputError(f"the server URL {url!r} is not an http(s) URL like http://host:8000")
    root = url.strip().rstrip("/")
    if root.endswith("/v1"):
        root = root[: -len("/v1")]
    return root


def _error_message(response: Any) -> str:
    """The server's own error text, shortened, from a JSON or plain-text error body."""
    try:
        body = response.json()
    except ValueError:
        return str(response.text).strip()[:300] or response.reason_phrase
    if isinstance(body, dict):
        err = body.get("error", body)
        if isinstance(err, dict):
            return str(err.get("message") or err)[:300]
        return str(body.get("message") or err)[:300]
    return str(body)[:300]


def _capability_error(message: str, url: str) -> BackendError | None:
    """The whole-server error behind a 4xx message, when it is one."""
    text = message.lower()
    if "logprob" in text and ("max" in text or "greater" in text or "disabled" in text):
        return LogprobsError(f"the server refused logprobs: {message}", fix=LOGPROBS_FIX, url=url)
    if ("image" in text or "multimodal" in text or "multi-modal" in text) and (
        "at most" in text or "not support" in text or "not a multimodal" in text or "limit" in text
    ):
        return NoVisionError(f"the server refused an image: {message}", fix=VISION_FIX, url=url)
    return None


class VLLMServerBackend(Backend):
    """A model behind an OpenAI-compatible server (vLLM).

    Args:
        model: the model the server must serve; None takes the one it serves.
        server: base URL (default: `JUDGE_SERVER`), with or without `/v1`.
        api_key: sent as a Bearer token; never logged.
        concurrency: most requests in flight at once.
        timeout: seconds one attempt may take.
        retries: further attempts after a retryable failure.
        backoff: first wait between attempts, doubled each time up to `backoff_max`.
        breaker_threshold: consecutive failed attempts that open the circuit breaker.
        breaker_cooldown: seconds the open breaker fails requests at once.
        top_logprobs: top-k for servers without `logprob_token_ids`.
        max_image_pixels: the model's pixel budget, if known.
    """

    kind = "vllm-server"

    def __init__(
        self,
        model: str | None = None,
        *,
        server: str | None = None,
        api_key: Secret | str | None = None,
        concurrency: int = 8,
        timeout: float = 60.0,
        connect_timeout: float = 5.0,
        retries: int = 3,
        backoff: float = 0.5,
        backoff_max: float = 8.0,
        breaker_threshold: int = 5,
        breaker_cooldown: float = 30.0,
        top_logprobs: int = 20,
        max_image_pixels: int | None = None,
    ) -> None:
        super().__init__()
        self._httpx = require("httpx", backend=self.kind, install="pip install httpx")
        url = server or os.environ.get("JUDGE_SERVER")
        if not url:
            raise InputError(
                "the vllm-server back end needs a server URL: pass --server or set JUDGE_SERVER"
            )
        if concurrency < 1 or retries < 0 or timeout <= 0:
            raise InputError("concurrency must be >= 1, retries >= 0 and timeout > 0")
        self.url = normalize_url(url)
        self._requested_model = model
        self._served_model: str | None = None
        self._api_key = (
            api_key if isinstance(api_key, Secret) or api_key is None else Secret(api_key)
        )
        self.concurrency, self.timeout, self.retries = concurrency, timeout, retries
        self._connect_timeout = min(connect_timeout, timeout)
        self._backoff, self._backoff_max = backoff, backoff_max
        self._top_logprobs = top_logprobs
        self._max_image_pixels = max_image_pixels
        self.breaker = CircuitBreaker(breaker_threshold, breaker_cooldown, target=self.url)
        self._state_: _LoopState | None = None
        self._labels: LabelTokens | None = None
        self._use_token_ids = False
        self._json_schema_ok = True
        # Per-request JSON grammar (vLLM's `structured_outputs`): None until /version is read.
        self._grammar_ok: bool | None = None
        self._served_root: str | None = None
        # Why the server's engine is dead, once a 5xx answer and /health have shown it.
        self._dead: str | None = None
        self._last_5xx: str | None = None  # the last 5xx answer, for a server gone after it
        self._started = False
        # Images whose prefix the server has recently computed (see `yes_no`).
        self._warm: OrderedDict[str, None] = OrderedDict()

    def __repr__(self) -> str:
        key = ", api_key=***" if self._api_key is not None else ""
        return f"VLLMServerBackend(url={self.url!r}, model={self.model_id!r}{key})"

    # -- public properties -------------------------------------------------------------

    @property
    def model_id(self) -> str:
        return self._served_model or self._requested_model or ""

    @property
    def labels(self) -> LabelTokens | None:
        """The label tokens found through the server's /tokenize (None before the first
        query, or on a server without /tokenize)."""
        return self._labels

    @property
    def supports_json_schema(self) -> bool:
        return self._json_schema_ok

    @property
    def max_image_pixels(self) -> int | None:
        return self._max_image_pixels

    @property
    def uses_token_ids(self) -> bool:
        """True when label logprobs come from `logprob_token_ids` (exact, never cut off)."""
        return self._use_token_ids

    # -- transport ---------------------------------------------------------------------

    def _state(self) -> _LoopState:
        # httpx clients and asyncio primitives belong to one event loop; a caller that
        # runs each batch under its own asyncio.run() gets fresh ones.
        loop = asyncio.get_running_loop()
        if self._state_ is None or self._state_.loop is not loop:
            httpx = self._httpx
            client = httpx.AsyncClient(
                timeout=httpx.Timeout(self.timeout, connect=self._connect_timeout),
                limits=httpx.Limits(
                    max_connections=self.concurrency, max_keepalive_connections=self.concurrency
                ),
                follow_redirects=False,
                trust_env=False,  # talk to the configured server only, never through a proxy
            )
            self._state_ = _LoopState(
                loop, client, asyncio.Semaphore(self.concurrency), asyncio.Lock()
            )
        return self._state_

    def _headers(self) -> dict[str, str]:
        if self._api_key is None:
            return {}
        return {"Authorization": f"Bearer {self._api_key.reveal()}"}

    async def _breaker_gate(self) -> None:
        """Pass if a request may go out; wait while a trial request tests the server."""
        while True:
            try:
                self.breaker.before_request()
                return
            except TrialPending:
                await asyncio.sleep(0.05)
            except CircuitOpen as exc:
                raise _Open(str(exc), retryable=False) from None

    async def _attempt(
        self, method: str, path: str, payload: dict[str, Any] | None, timeout: float
    ) -> dict[str, Any]:
        httpx = self._httpx
        state = self._state()
        try:
            async with state.semaphore:
                # Checked once a slot is free: requests queued behind a failing one must
                # see the breaker that failure opened.
                await self._breaker_gate()
                self.stats.requests += 1
                async with asyncio.timeout(timeout):
                    response = await state.client.request(
                        method, self.url + path, json=payload, headers=self._headers()
                    )
        except (TimeoutError, httpx.TimeoutException):
            raise _Failed(f"no answer within {timeout:g} s", retryable=True) from None
        except httpx.ConnectError:
            raise _Failed("connection refused or host unreachable", retryable=True) from None
        except httpx.TransportError as exc:
            raise _Failed(f"connection failed ({describe(exc)})", retryable=True) from None
        status = response.status_code
        if status >= 500:
            self._last_5xx = f"HTTP {status}: {_error_message(response)}"
            raise _Failed(self._last_5xx, retryable=True)
        if status >= 400:
            raise _ClientError(status, _error_message(response))
        try:
            data = response.json()
        except ValueError:
            raise _Failed(f"malformed JSON in the answer to {path}", retryable=True) from None
        if not isinstance(data, dict):
            raise _Failed(f"the answer to {path} is not a JSON object", retryable=True)
        return data

    async def _call(
        self,
        method: str,
        path: str,
        payload: dict[str, Any] | None,
        parse: Callable[[dict[str, Any]], T],
        *,
        timeout: float | None = None,
        retries: int | None = None,
    ) -> T:
        """One logical request: breaker, attempts with backoff, then `parse` the answer.

        Raises:
            _Failed: every attempt failed, or the breaker is open.
            _ClientError: the server answered 4xx.
        """
        limit = self.retries if retries is None else retries
        delay = self._backoff
        for attempt in range(limit + 1):
            try:
                result = parse(await self._attempt(method, path, payload, timeout or self.timeout))
            except _Open:
                raise
            except _ClientError:
                self.breaker.success()  # it answered: the server is alive
                raise
            except _Failed as exc:
                if self.breaker.failure(exc.reason):
                    log.warning(
                        "circuit breaker opened for %s after %d failures: %s",
                        self.url,
                        self.breaker.failures,
                        exc.reason,
                    )
                if not exc.retryable or attempt == limit:
                    tries = f" (after {attempt + 1} attempts)" if attempt else ""
                    raise _Failed(exc.reason + tries, retryable=False) from None
                self.stats.retries += 1
                wait = min(delay, self._backoff_max)
                log.warning(
                    "%s %s%s failed (%s); retry in %.2f s", method, self.url, path, exc.reason, wait
                )
                await asyncio.sleep(wait)
                delay *= 2
            except BaseException:
                self.breaker.abandon_trial()  # cancelled: let the next request test the server
                raise
            else:
                self.breaker.success()
                return result
        raise AssertionError("unreachable")

    # -- start: reachability, model, label tokens ----------------------------------------

    async def start(self) -> None:
        """Connect now: check the server, its model and the label tokens (else on first use).

        Raises:
            BackendError: the server cannot be used (down, wrong model, refused the key).
            TokenizerError: the model has no single-token Yes or No.
        """
        await self._ensure_started()

    async def _ensure_started(self) -> None:
        if self._started:
            return
        async with self._state().start_lock:
            if not self._started:
                await self._start()
                self._started = True

    async def _start(self) -> None:
        served = await self.served_models()
        self._served_model = self._pick_model(served)
        self._served_root = dict(served).get(self._served_model)
        self._labels = await self.label_tokens()
        self._use_token_ids = self._labels is not None

    async def served_models(self) -> list[tuple[str, str]]:
        """(id, root) of each model the server serves.

        Raises:
            BackendError: unreachable, refused the key, or not an OpenAI-compatible API.
        """

        def parse(data: dict[str, Any]) -> list[tuple[str, str]]:
            try:
                return [(str(m["id"]), str(m.get("root") or m["id"])) for m in data["data"]]
            except (KeyError, TypeError) as exc:
                raise _Failed(f"malformed model list ({describe(exc)})", retryable=True) from None

        start_timeout = min(self.timeout, 15.0)
        try:
            models = await self._call("GET", "/v1/models", None, parse, timeout=start_timeout)
        except _Failed as exc:
            raise BackendError(
                f"cannot use the model server: {exc.reason}", url=self.url, hint=DOWN_HINT
            ) from None
        except _ClientError as exc:
            if exc.status in (401, 403):
                raise BackendError(
                    f"the server refused the API key (HTTP {exc.status})",
                    url=self.url,
                    hint="Check --api-key, JUDGE_API_KEY, OPENAI_API_KEY or JUDGE_API_KEY_FILE",
                ) from None
            raise BackendError(
                f"GET /v1/models answered {exc}: this is not an OpenAI-compatible server root",
                url=self.url,
                hint="Give the server's base URL, e.g. http://127.0.0.1:8000",
            ) from None
        if not models:
            raise BackendError("the server serves no model", url=self.url, hint=DOWN_HINT)
        return models

    def _pick_model(self, served: list[tuple[str, str]]) -> str:
        wanted = self._requested_model
        if wanted is None:
            if len(served) > 1:
                raise InputError(
                    f"the server at {self.url} serves several models "
                    f"({', '.join(i for i, _ in served)}): choose one with --model"
                )
            return served[0][0]
        for model_id, root in served:
            if wanted in (model_id, root):
                return model_id
        raise BackendError(
            f"the server serves {', '.join(i for i, _ in served)}, "
            f"not the requested model {wanted!r}",
            url=self.url,
            hint=f"Start the server with --model {wanted} (or --served-model-name), "
            f"or pass --model {served[0][0]}",
        )

    async def label_tokens(self) -> LabelTokens | None:
        """The label token ids through `/tokenize`; None when the server has no such endpoint.

        Raises:
            TokenizerError: the model has no single token for Yes or for No.
        """
        from judge.models.base import NO_VARIANTS, YES_VARIANTS

        spellings = YES_VARIANTS + NO_VARIANTS

        def parse(data: dict[str, Any]) -> list[int]:
            tokens = data.get("tokens")
            if not isinstance(tokens, list) or not all(isinstance(t, int) for t in tokens):
                raise _Failed("malformed /tokenize answer", retryable=True)
            return tokens

        async def encode(text: str) -> list[int] | None:
            payload = {"model": self._served_model, "prompt": text, "add_special_tokens": False}
            try:
                return await self._call("POST", "/tokenize", payload, parse)
            except _ClientError as exc:
                if exc.status in (404, 405):
                    return None
                raise BackendError(f"/tokenize failed: {exc}", url=self.url) from None
            except _Failed as exc:
                raise BackendError(
                    f"/tokenize failed: {exc.reason}", url=self.url, hint=DOWN_HINT
                ) from None

        encoded = await asyncio.gather(*(encode(s) for s in spellings))
        if any(e is None for e in encoded):
            log.info("%s has no /tokenize endpoint: reading labels from top_logprobs", self.url)
            return None
        table = dict(zip(spellings, encoded, strict=True))
        return find_label_tokens(lambda s: table[s] or [], where=self.model_id, url=self.url)

    # -- Yes/No ------------------------------------------------------------------------

    async def _image_urls(self, chats: Sequence[Chat]) -> dict[int, str]:
        images = unique_images(chats)
        # PNG encoding of big images takes a while: keep it off the event loop.
        urls = await asyncio.gather(*(asyncio.to_thread(png_data_url, im) for im in images))
        return {id(im): url for im, url in zip(images, urls, strict=True)}

    def _check_model(self, data: dict[str, Any]) -> None:
        answered = data.get("model")
        if (
            answered is not None
            and self._served_model is not None
            and answered != self._served_model
        ):
            # A load balancer in front of mixed servers gives this now and then: retryable.
            raise _Failed(
                f"the server answered as model {answered!r}, not {self._served_model!r}",
                retryable=True,
            )

    def _spelling(self, token: str) -> str:
        if token.startswith("token_id:") and self._labels is not None:
            with contextlib.suppress(ValueError):
                return self._labels.spelling(int(token.split(":", 1)[1])) or ""
        return token

    def _yes_no_payload(self, messages: list[dict[str, Any]], by_ids: bool) -> dict[str, Any]:
        payload: dict[str, Any] = {
            "model": self._served_model,
            "messages": messages,
            "max_tokens": 1,
            "temperature": 0.0,
            "logprobs": True,
        }
        if by_ids and self._labels is not None:
            payload["logprob_token_ids"] = self._labels.ids
            payload["return_tokens_as_token_ids"] = True
        else:
            payload["top_logprobs"] = self._top_logprobs
        return payload

    def _parse_yes_no(self, data: dict[str, Any]) -> tuple[YesNoResult, int]:
        """The result, and how many top-logprob entries the answer carried."""
        self._check_model(data)
        try:
            choice = data["choices"][0]
            logprobs = choice.get("logprobs")
            if not logprobs or not logprobs.get("content"):
                raise _Failed(
                    "the answer carries no logprobs (the server ignores logprobs=true)",
                    retryable=False,
                )
            first = logprobs["content"][0]
            entries = [first, *(first.get("top_logprobs") or [])]
            pairs = [(self._spelling(str(e["token"])), float(e["logprob"])) for e in entries]
            usage = data.get("usage") or {}
            details = usage.get("prompt_tokens_details") or {}
            prompt_tokens = int(usage.get("prompt_tokens") or 0)
            cached = int(details.get("cached_tokens") or 0)
        except (KeyError, IndexError, TypeError, ValueError, AttributeError) as exc:
            raise _Failed(f"malformed answer ({describe(exc)})", retryable=True) from None
        result = result_from_logprobs(pairs, prompt_tokens=prompt_tokens, cached_tokens=cached)
        return result, len(entries) - 1

    async def _yes_no_one(self, messages: list[dict[str, Any]]) -> YesNoResult:
        path = "/v1/chat/completions"
        await self._ensure_alive()
        try:
            by_ids = self._use_token_ids and self._labels is not None
            payload = self._yes_no_payload(messages, by_ids)
            result, n_top = await self._call("POST", path, payload, self._parse_yes_no)
            if by_ids and self._labels is not None and n_top < len(self._labels.ids):
                # An older server ignored logprob_token_ids: ask for the top-k instead.
                if self._use_token_ids:
                    log.info("%s ignores logprob_token_ids; using top_logprobs", self.url)
                self._use_token_ids = False
                payload = self._yes_no_payload(messages, False)
                result, _ = await self._call("POST", path, payload, self._parse_yes_no)
        except _Failed as exc:
            await self._check_engine(exc, messages)
            return YesNoResult.failed(exc.reason)
        except _ClientError as exc:
            capability = _capability_error(exc.message, self.url)
            if capability is not None:
                raise capability from None
            return YesNoResult.failed(str(exc))
        return result

    async def yes_no(self, queries: Sequence[YesNoQuery]) -> list[YesNoResult]:
        if not queries:
            return []
        await self._ensure_started()
        chats = [yes_no_chat(q) for q in queries]
        urls = await self._image_urls(chats)
        results: list[YesNoResult] = [YesNoResult.failed("not sent")] * len(chats)
        groups: dict[str | None, list[int]] = {}
        for i, q in enumerate(queries):
            image = urls[id(q.image)] if q.image is not None else None
            groups.setdefault(image and hashlib.sha1(image.encode()).hexdigest(), []).append(i)

        async def send(indices: list[int]) -> None:
            answers = await asyncio.gather(
                *(self._yes_no_one(to_openai(chats[i], urls)) for i in indices)
            )
            for i, answer in zip(indices, answers, strict=True):
                results[i] = answer

        async def image_group(key: str | None, indices: list[int]) -> None:
            # The server reuses a cached prefix only once a request has computed it:
            # queries about one image sent together would each compute the image's
            # blocks. So the first query about a new image goes alone, the rest after it.
            if key is not None and len(indices) > 1 and key not in self._warm:
                await send(indices[:1])
                indices = indices[1:]
            if key is not None:
                self._warm[key] = None
                self._warm.move_to_end(key)
                while len(self._warm) > _WARM_IMAGES:
                    self._warm.popitem(last=False)
            await send(indices)

        await asyncio.gather(*(image_group(k, idx) for k, idx in groups.items()))
        self.stats.count_yes_no(results)
        return list(results)

    # -- generation ----------------------------------------------------------------------

    def _parse_generation(self, data: dict[str, Any]) -> Generation:
        self._check_model(data)
        try:
            text = data["choices"][0]["message"]["content"]
            usage = data.get("usage") or {}
            return Generation(
                text=str(text or ""),
                prompt_tokens=int(usage.get("prompt_tokens") or 0),
                completion_tokens=int(usage.get("completion_tokens") or 0),
            )
        except (KeyError, IndexError, TypeError, ValueError) as exc:
            raise _Failed(f"malformed answer ({describe(exc)})", retryable=True) from None

    async def _generate_one(
        self, messages: list[dict[str, Any]], max_tokens: int, json_schema: dict[str, Any] | None
    ) -> Generation:
        await self._ensure_alive()
        payload: dict[str, Any] = {
            "model": self._served_model,
            "messages": messages,
            "max_tokens": max_tokens,
            "temperature": 0.0,
        }
        grammar = None
        if json_schema is not None and await self._takes_grammar():
            grammar = compact_json_grammar(json_schema)
        constrained = json_schema is not None and self._json_schema_ok
        if grammar is not None:
            # No free whitespace: see judge/models/json_grammar.py.
            payload["structured_outputs"] = {"grammar": grammar}
        elif constrained:
            payload["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": "judge_answer", "schema": json_schema, "strict": True},
            }
        try:
            return await self._call("POST", "/v1/chat/completions", payload, self._parse_generation)
        except _Failed as exc:
            await self._check_engine(exc, messages)
            return Generation(text="", error=exc.reason)
        except _ClientError as exc:
            capability = _capability_error(exc.message, self.url)
            if capability is not None:
                raise capability from None
            if grammar is not None and exc.status == 400:
                log.warning("%s refused a JSON grammar (%s); using response_format", self.url, exc)
                self._grammar_ok = False
                return await self._generate_one(messages, max_tokens, json_schema)
            if constrained and exc.status == 400:
                # No structured output on this server: the caller's tolerant parser copes.
                log.warning(
                    "%s refused response_format (%s); generating unconstrained", self.url, exc
                )
                self._json_schema_ok = False
                return await self._generate_one(messages, max_tokens, None)
            return Generation(text="", error=str(exc))

    async def _takes_grammar(self) -> bool:
        """Whether the server is a vLLM that takes `structured_outputs: {"grammar": ...}`
        (0.11 and later; /version says). Other servers get `response_format`."""
        if self._grammar_ok is None:
            version = await self._vllm_version()
            self._grammar_ok = version is not None and version >= (0, 11)
            log.info("%s: vLLM version %s; JSON grammar %s", self.url, version, self._grammar_ok)
        return self._grammar_ok

    async def _vllm_version(self) -> tuple[int, int] | None:
        def parse(data: dict[str, Any]) -> tuple[int, int] | None:
            found = re.match(r"(\d+)\.(\d+)", str(data.get("version", "")))
            return (int(found.group(1)), int(found.group(2))) if found else None

        try:
            return await self._call("GET", "/version", None, parse, retries=0)
        except (_Failed, _ClientError):
            return None

    # -- a dead engine -------------------------------------------------------------------

    def family(self) -> Family:
        """The served model's family, when the server's model folder is on this machine."""
        return family_of_folder(self._served_root)

    async def _ensure_alive(self) -> None:
        """Fail at once while the engine is dead; a restarted server (healthy /health)
        is used again."""
        if self._dead is not None:
            status = await self._health()
            if status is not None and status < 500:
                log.warning("%s is healthy again", self.url)
                self._dead = None
        self._raise_if_dead()

    def _raise_if_dead(self) -> None:
        if self._dead is not None:
            raise BackendError(self._dead, url=self.url, hint=self._dead_hint())

    def _dead_hint(self) -> str:
        limits = self.family().limits_for(self.kind)
        known = "".join(f" Known limit of {self.family().name}: {x.describe()}." for x in limits)
        return f"Restart the server; its log has the root cause.{known}"

    async def _check_engine(self, failure: _Failed, messages: list[dict[str, Any]]) -> None:
        """After a 5xx answer, ask /health: a 503 (or no server any more) means the engine
        died, and every later request would fail too; raise instead of judging on.

        Raises:
            BackendError: the engine is dead.
        """
        # vLLM answers 500 when its engine dies, then (unless told to stay up) exits: the
        # retry of that request finds no server. A server gone without a 5xx before is
        # left to the retries and the breaker (it may be restarting).
        if self._dead is None and ("HTTP 5" in failure.reason or self._last_5xx is not None):
            status = await self._health()
            if status is not None and status < 500:
                return
            first = self._last_5xx or failure.reason
            seen = first if first in failure.reason else f"{first}; then {failure.reason}"
            with_image = any(
                isinstance(m.get("content"), list)
                and any(p.get("type") == "image_url" for p in m["content"])
                for m in messages
            )
            self._dead = (
                f"the server's engine died{' on an image request' if with_image else ''} "
                f"({seen}); /health answers "
                + (f"HTTP {status}" if status is not None else "nothing")
            )
        self._raise_if_dead()

    async def _health(self) -> int | None:
        """/health's status code, or None when the server no longer answers."""
        try:
            response = await self._state().client.get(
                self.url + "/health", headers=self._headers(), timeout=5.0
            )
        except self._httpx.HTTPError:
            return None
        return int(response.status_code)

    async def generate(
        self,
        chats: Sequence[Chat],
        max_tokens: int,
        json_schema: dict[str, Any] | None = None,
    ) -> list[Generation]:
        if not chats:
            return []
        await self._ensure_started()
        urls = await self._image_urls(chats)
        results = await asyncio.gather(
            *(self._generate_one(to_openai(c, urls), max_tokens, json_schema) for c in chats)
        )
        self.stats.count_generations(results)
        return list(results)

    # -- doctor --------------------------------------------------------------------------

    async def check(self) -> list[tuple[str, bool, str]]:
        """Probe the server: reachable, model, label tokens, logprobs, images.

        Stops at the first check that makes the rest meaningless (unreachable, wrong model).
        """
        rows: list[tuple[str, bool, str]] = []
        try:
            served = await self.served_models()
        except BackendError as exc:
            return [("server", False, str(exc))]
        rows.append(("server", True, f"{self.url} serves {', '.join(i for i, _ in served)}"))
        try:
            self._served_model = self._pick_model(served)
        except (BackendError, InputError) as exc:
            return [*rows, ("model", False, str(exc))]
        rows.append(("model", True, self._served_model))
        self._served_root = dict(served).get(self._served_model)
        try:
            self._labels = await self.label_tokens()
        except (TokenizerError, BackendError) as exc:
            rows.append(("labels", False, str(exc)))
        else:
            self._use_token_ids = self._labels is not None
            if self._labels is None:
                rows.append(("labels", True, "no /tokenize endpoint: labels read by spelling"))
            else:
                found = ", ".join(
                    f"{s!r}={i}" for i, s in {**self._labels.yes, **self._labels.no}.items()
                )
                rows.append(("labels", True, f"single tokens: {found}"))
        self._started = True
        rows.append(await self._check_logprobs())
        rows.extend(await self._check_vision())
        return rows

    async def _probe(self, payload: dict[str, Any]) -> dict[str, Any]:
        return await self._call("POST", "/v1/chat/completions", payload, lambda d: d, retries=1)

    async def _check_logprobs(self) -> tuple[str, bool, str]:
        text = [Message.user("Answer Yes or No.", "Is the sky blue?")]
        messages = to_openai(text, {})
        base = {
            "model": self._served_model,
            "messages": messages,
            "max_tokens": 1,
            "temperature": 0.0,
        }
        topk = {**base, "logprobs": True, "top_logprobs": self._top_logprobs}
        try:
            top_ok, n = (
                True,
                len(
                    (await self._probe(topk))["choices"][0]["logprobs"]["content"][0][
                        "top_logprobs"
                    ]
                ),
            )
            top_note = f"top_logprobs={self._top_logprobs} works ({n} returned)"
        except _ClientError as exc:
            top_ok, top_note = False, f"top_logprobs={self._top_logprobs} refused: {exc.message}"
        except (_Failed, KeyError, IndexError, TypeError) as exc:
            top_ok, top_note = (
                False,
                f"top_logprobs={self._top_logprobs} gave no logprobs ({describe(exc)})",
            )
        ids_ok, ids_note = False, "logprob_token_ids not tried (no /tokenize)"
        if self._labels is not None:
            ids = {**base, "logprobs": True, "logprob_token_ids": self._labels.ids}
            try:
                got = (await self._probe(ids))["choices"][0]["logprobs"]["content"][0][
                    "top_logprobs"
                ]
                ids_ok = len(got) >= len(self._labels.ids)
                ids_note = (
                    "logprob_token_ids works: exact label probabilities"
                    if ids_ok
                    else "the server ignores logprob_token_ids (older vLLM)"
                )
            except (_ClientError, _Failed, KeyError, IndexError, TypeError) as exc:
                ids_note = f"logprob_token_ids failed ({describe(exc)})"
        self._use_token_ids = ids_ok
        if ids_ok or top_ok:
            return ("logprobs", True, f"{ids_note}; {top_note}")
        return ("logprobs", False, f"{top_note}; {ids_note}. Fix: {LOGPROBS_FIX}")

    async def _check_vision(self) -> list[tuple[str, bool, str]]:
        # An ordinary 224-pixel image: a smaller one than a family's tile can fail where
        # real images pass (Llama 4 on vLLM's CPU build kills its engine on one).
        image = Image.new("RGB", (224, 224), (200, 30, 30))
        chats = [
            [Message.user("Describe.", image, "Yes or No?")],
            [Message.user("Describe.", "Yes or No?")],
        ]
        urls = await self._image_urls(chats)
        counts: list[int] = []
        for chat in chats:
            messages = to_openai(chat, urls)
            payload = {
                "model": self._served_model,
                "messages": messages,
                "max_tokens": 1,
                "temperature": 0.0,
            }
            try:
                data = await self._probe(payload)
                counts.append(int(data["usage"]["prompt_tokens"]))
                details = data["usage"].get("prompt_tokens_details")
            except _ClientError as exc:
                return [
                    (
                        "vision",
                        False,
                        f"the server refused an image: {exc.message}. Fix: {VISION_FIX}",
                    )
                ]
            except _Failed as exc:
                try:
                    await self._check_engine(exc, messages)
                except BackendError:
                    return [self._dead_row()]
                return [("vision", False, f"image request failed ({exc.reason})")]
            except (KeyError, TypeError, ValueError) as exc:
                return [("vision", False, f"image request failed ({describe(exc)})")]
        if counts[0] <= counts[1]:
            return [
                (
                    "vision",
                    False,
                    f"the image added no prompt tokens ({counts[0]} vs {counts[1]}): "
                    f"the server drops images. Fix: {VISION_FIX}",
                )
            ]
        rows = [("vision", True, f"an image adds {counts[0] - counts[1]} prompt tokens")]
        if details is None:
            rows.append(
                (
                    "cache stats",
                    True,
                    "note: no cached-token counts; add --enable-prompt-tokens-details",
                )
            )
        else:
            rows.append(("cache stats", True, "cached-token counts reported"))
        return rows

    def _dead_row(self) -> tuple[str, bool, str]:
        """The doctor's row for a dead engine: what happened, and the known limit's fix."""
        family = self.family()
        limits = family.limits_for(self.kind)
        why = "".join(f"; known limit of {family.name}: {x.reason}" for x in limits)
        fix = limits[0].workaround if limits else "restart the server; its log has the cause"
        return ("engine", False, f"{self._dead}{why}. Fix: {fix}")

    async def aclose(self) -> None:
        state, self._state_ = self._state_, None
        if state is not None:
            with contextlib.suppress(RuntimeError):
                await state.client.aclose()
