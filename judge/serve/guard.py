"""The ASGI layer in front of every route: authentication and the body-size limit, both
settled before a byte of the body is read, and the per-request metrics.

Authentication runs here rather than in a route dependency because FastAPI reads and
parses a body before its dependencies run: an unauthenticated caller could otherwise make
the service read and parse up to the body limit. Open paths (health, readiness, the
OpenAPI document) need no token; everything under /v1/ does, and /metrics too unless the
service was told to open it (it names the policy, its lock hash and per-rule counts).
Reloading the policy needs an admin token (403 for a user token). Without tokens at all
(a loopback service) every caller may do everything.
"""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from judge.serve.auth import Tokens, bearer
from judge.serve.problems import ApiError

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

OPEN_PATHS = frozenset({"/healthz", "/readyz", "/openapi.json", "/docs",
                        "/docs/oauth2-redirect", "/redoc"})
ADMIN_PATHS = frozenset({"/v1/policy/reload"})
KNOWN = frozenset({*OPEN_PATHS, "/metrics", "/v1/moderations", "/v1/judge", "/v1/policy",
                   "/v1/policy/reload"})


async def send_error(send: Send, error: ApiError) -> None:
    body = json.dumps(error.body()).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    headers += [(k.lower().encode(), v.encode()) for k, v in error.headers.items()]
    await send({"type": "http.response.start", "status": error.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class Guard:
    def __init__(
        self, app: ASGIApp, *, tokens: Callable[[], Tokens], max_body: int, metrics: Any,
        public_metrics: bool = False,
    ) -> None:
        # `tokens` is read per request: a reload may replace them.
        self.app, self.tokens, self.max_body, self.metrics = app, tokens, max_body, metrics
        self.open_paths = OPEN_PATHS | ({"/metrics"} if public_metrics else set())

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope.get("path", "")
        endpoint = path if path in KNOWN else "other"
        started = time.perf_counter()
        status = {"code": 500}

        async def sending(message: Message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = int(message["status"])
            await send(message)

        try:
            await self._guarded(scope, receive, sending, path)
        finally:
            self.metrics.requests.labels(endpoint, str(status["code"])).inc()
            self.metrics.latency.labels(endpoint).observe(time.perf_counter() - started)

    async def _guarded(self, scope: Scope, receive: Receive, send: Send, path: str) -> None:
        headers = {k.decode("latin-1").lower(): v.decode("latin-1")
                   for k, v in scope.get("headers", [])}
        tokens = self.tokens()
        if tokens.enabled and path not in self.open_paths:
            name = tokens.check(bearer(headers.get("authorization")))
            if name is None:
                self.metrics.rejected.labels("unauthorized").inc()
                await send_error(send, ApiError(
                    401, "unauthorized",
                    "a valid bearer token is required (Authorization: Bearer TOKEN)",
                    headers={"WWW-Authenticate": "Bearer"},
                ))
                return
            if path in ADMIN_PATHS and tokens.role(name) != "admin":
                self.metrics.rejected.labels("forbidden").inc()
                await send_error(send, ApiError(
                    403, "forbidden", f"{path} needs a token with the admin role; the token "
                    f"{name!r} has the role {tokens.role(name)!r}",
                ))
                return
            scope.setdefault("state", {})["token_name"] = name
        declared = headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self.max_body:
            self.metrics.rejected.labels("body_too_large").inc()
            await send_error(send, _too_large(int(declared), self.max_body))
            return
        seen = [0]

        async def receiving() -> Message:
            # A body sent without Content-Length (chunked) is counted as it arrives; the
            # error reaches the route that reads it, and the app's ApiError handler
            # answers 413 (and counts it).
            message = await receive()
            if message["type"] == "http.request":
                seen[0] += len(message.get("body", b""))
                if seen[0] > self.max_body:
                    raise _too_large(seen[0], self.max_body)
            return message

        await self.app(scope, receiving, send)


def _too_large(size: int, limit: int) -> ApiError:
    return ApiError(413, "body_too_large",
                    f"the request body is {size:,}+ bytes, over the limit of {limit:,}")
