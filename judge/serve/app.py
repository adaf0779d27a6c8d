"""The FastAPI application: routes, error handlers, the OpenAPI document.

    POST /v1/moderations      OpenAI's moderation shape, for images
    POST /v1/judge            the native endpoint: Verdict JSON as `judge --json` prints it
    GET  /v1/policy           the active constitution, its lock hash and rules
    POST /v1/policy/reload    re-read the policy (as SIGHUP does)
    GET  /healthz             the process answers
    GET  /readyz              a policy is loaded and the model passes the doctor's checks
    GET  /metrics             Prometheus text
    GET  /openapi.json        this API's schema

Request bodies are read and validated here rather than by FastAPI's body parameters, so
every refusal has the OpenAI error shape and a reason a person can act on; the OpenAPI
document still states each body's schema (`openapi_extra`). The judging routes take their
concurrency slot before they read the body (a full service answers 429 without reading
it), and parse, fetch, check and judge inside it. A body must say what it is: JSON as
`application/json` (415 otherwise), which a cross-site form cannot send without the
browser asking first, so a web page cannot drive a tokenless loopback service.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import signal
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pydantic
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from judge import __version__
from judge.serve.auth import bearer
from judge.serve.guard import Guard
from judge.serve.inputs import (
    ImageBytes,
    check_bytes,
    fetch_remote,
    from_base64,
    from_data_url,
    largest,
)
from judge.serve.moderation import (
    InputPart,
    ModerationRequest,
    ModerationResponse,
    moderation_result,
)
from judge.serve.native import JUDGE_BODY_SCHEMA, JudgeRequest, NativeResponse, native_response
from judge.serve.problems import ApiError
from judge.serve.service import Service
from judge.serve.work import install

_ERROR = {"description": "Refused, with the reason (OpenAI error shape)", "content": {
    "application/json": {"schema": {"type": "object", "properties": {"error": {
        "type": "object", "properties": {
            "message": {"type": "string"}, "type": {"type": "string"},
            "param": {"type": ["string", "null"]}, "code": {"type": "string"}}}}}}}}
_REFUSALS: dict[int | str, dict[str, Any]] = {
    code: _ERROR for code in (400, 401, 403, 413, 415, 422, 429, 503)
}


def _body_schema(model: type[pydantic.BaseModel]) -> dict[str, Any]:
    """A JSON request body of `model`'s schema (added to the components by `_components`)."""
    ref = {"$ref": f"#/components/schemas/{model.__name__}"}
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": ref}}}}


def create_app(service: Service) -> FastAPI:
    """The application over a `Service` (whose policy the app loads at start-up)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # Threads are counted against the request that started them (judge/serve/work.py).
        install(asyncio.get_running_loop())
        if service.holder.active is None:
            changed, message, _ = await service.reload()
            if not changed:
                raise RuntimeError(message)
        _on_sighup(service)
        yield
        await service.aclose()

    app = FastAPI(
        title="judge serve",
        version=__version__,
        description=(
            "Image moderation against your own constitution (CLUE). `/v1/moderations` "
            "speaks OpenAI's moderation shape for images; `/v1/judge` returns judge's "
            "Verdict JSON. Every /v1 route, and /metrics unless opened, needs "
            "`Authorization: Bearer TOKEN` when the service has tokens; reloading the policy "
            "needs an admin token."
        ),
        lifespan=lifespan,
    )
    app.state.service = service
    _handlers(app, service)
    _routes(app, service)
    _components(app)
    return app


def guarded(app: FastAPI, service: Service) -> Guard:
    """The ASGI app to serve: `app` behind authentication and the body limit."""
    return Guard(app, tokens=lambda: service.tokens,
                 max_body=service.config.limits.max_body_bytes, metrics=service.metrics,
                 public_metrics=service.config.public_metrics)


def _on_sighup(service: Service) -> None:
    """Reload on SIGHUP, where this thread may install signal handlers (the main thread)."""
    import logging

    log = logging.getLogger("judge.serve")

    async def reload() -> None:
        _, message, _ = await service.reload()
        log.warning("SIGHUP: %s", message)

    running: set[asyncio.Task[None]] = set()  # the loop keeps only weak references

    def start() -> None:
        task = asyncio.get_running_loop().create_task(reload())
        running.add(task)
        task.add_done_callback(running.discard)

    # Not in the main thread (tests), or no SIGHUP on this system: the endpoint still works.
    with contextlib.suppress(ValueError, RuntimeError, NotImplementedError, AttributeError):
        asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, start)


def _handlers(app: FastAPI, service: Service) -> None:
    @app.exception_handler(ApiError)
    async def api_error(request: Request, error: ApiError) -> JSONResponse:
        service.metrics.rejected.labels(error.code).inc()
        return JSONResponse(error.body(), status_code=error.status, headers=error.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, error: RequestValidationError) -> JSONResponse:
        problem = ApiError(400, "bad_request", _describe(error.errors()))
        return JSONResponse(problem.body(), status_code=400)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, error: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(error.status_code, "http_error")
        problem = ApiError(error.status_code, code, str(error.detail))
        return JSONResponse(problem.body(), status_code=error.status_code,
                            headers=getattr(error, "headers", None))


def _describe(errors: Any) -> str:
    parts = []
    for e in list(errors)[:5]:
        where = ".".join(str(p) for p in e.get("loc", ()) if p != "body") or "body"
        parts.append(f"{where}: {e.get('msg', 'invalid')}")
    return "invalid request: " + "; ".join(parts)


def _media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


def _require_json(request: Request) -> None:
    kind = _media_type(request)
    if kind != "application/json":
        raise ApiError(415, "unsupported_media_type",
                       f"send the body as application/json, not {kind or 'without a type'}")


# A JSON escape of a UTF-16 surrogate: only a body holding one can hold a lone surrogate.
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")
_SURROGATE = re.compile("[\ud800-\udfff]")


async def _json(request: Request) -> Any:
    raw = await request.body()
    try:
        data = json.loads(raw)
    except RecursionError:
        raise ApiError(400, "bad_request", "the JSON body is nested too deeply") from None
    except (ValueError, UnicodeDecodeError):
        raise ApiError(400, "bad_request", "the body is not valid JSON") from None
    if _SURROGATE_ESCAPE.search(raw) and _has_lone_surrogate(data):
        # Valid JSON, but not text: it could be neither stored nor sent back as UTF-8.
        raise ApiError(400, "bad_request", "the JSON body holds an unpaired UTF-16 "
                       "surrogate escape (\\ud800-\\udfff), which is not text")
    return data


def _has_lone_surrogate(data: Any) -> bool:
    """Whether any string in `data` holds a surrogate (json.loads joins the pairs, so any
    left is unpaired). A loop, not recursion: the body may be nested deeply."""
    stack = [data]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if _SURROGATE.search(item):
                return True
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False


def _validate(model: type[pydantic.BaseModel], data: Any, param: str) -> Any:
    try:
        return model.model_validate(data)
    except pydantic.ValidationError as error:
        raise ApiError(400, "bad_request", _describe(error.errors()), param=param) from None
    except RecursionError:
        raise ApiError(400, "bad_request", "the JSON body is nested too deeply",
                       param=param) from None


def _token(request: Request) -> str | None:
    name = request.scope.get("state", {}).get("token_name")
    return str(name) if name else None


def _flag(value: Any) -> bool:
    return str(value).strip().lower() in ("1", "true", "yes", "on")


def _routes(app: FastAPI, service: Service) -> None:
    config = service.config

    @app.post(
        "/v1/moderations",
        summary="Moderate images (OpenAI's moderation shape)",
        response_model=ModerationResponse,
        responses=_REFUSALS,
        openapi_extra=_body_schema(ModerationRequest),
    )
    async def moderations(request: Request, explain: bool = True) -> JSONResponse:
        _require_json(request)
        async with service.slot():
            data = await _json(request)
            body = _validate(ModerationRequest, data, "input")
            if isinstance(data, dict) and "judge_explain" in data:
                explain = _flag(data["judge_explain"])
            images = await _moderation_images(body, service)
            request_id, policy, judged = await service.judge_images(
                images, endpoint="moderations", token_name=_token(request), prefix="modr"
            )
        categories = {rule.id: rule.category for rule in policy.lock.rules}
        results = [
            moderation_result(j.verdict, fail_closed=config.fail_closed, explain=explain,
                              decision_id=j.decision_id, lock_hash=j.lock_hash,
                              rule_categories=categories)
            for j in judged
        ]
        return JSONResponse({"id": request_id, "model": body.model or config.model_name,
                             "results": results})

    @app.post(
        "/v1/judge",
        summary="Judge images: Verdict JSON as `judge --json` prints it",
        response_model=NativeResponse,
        responses=_REFUSALS,
        openapi_extra=JUDGE_BODY_SCHEMA,
    )
    async def judge(request: Request) -> JSONResponse:
        kind = _media_type(request)
        if kind != "multipart/form-data":
            _require_json(request)
        async with service.slot():
            images, ids, explain, rules = await _native_inputs(request, service, kind)
            request_id, policy, judged = await service.judge_images(
                images, endpoint="judge", token_name=_token(request), rules=rules, ids=ids
            )
        return JSONResponse(native_response(request_id, policy, judged, explain=explain,
                                            fail_closed=config.fail_closed))

    @app.get("/v1/policy", summary="The active policy: its lock hash and rules",
             responses=_REFUSALS)
    async def policy() -> dict[str, Any]:
        active = service.policy()
        return {**active.describe(), "fail_closed": config.fail_closed,
                "last_reload_error": service.holder.last_error}

    @app.post("/v1/policy/reload", summary="Re-read the policy; a bad one is refused",
              responses=_REFUSALS)
    async def reload() -> JSONResponse:
        changed, message, active = await service.reload()
        body = {"reloaded": changed, "message": message,
                "lock_hash": active.lock_hash if active else None}
        if not changed:
            problem = ApiError(422, "policy_refused", message)
            return JSONResponse({**problem.body(), **body}, status_code=422)
        return JSONResponse(body)

    @app.get("/healthz", summary="The process answers")
    async def healthz() -> dict[str, Any]:
        return {"status": "ok", "version": __version__}

    @app.get("/readyz", summary="A policy is loaded and the model passes its checks",
             responses={503: {"description": "Not ready, with the failed checks"}})
    async def readyz(request: Request) -> JSONResponse:
        ready, checks = await service.readiness()
        tokens = service.tokens
        if tokens.enabled and tokens.check(bearer(request.headers.get("authorization"))) is None:
            # Open to probes, but what each check found (model paths, server URLs) only
            # to a caller with a token.
            checks = [{"name": c["name"], "ok": c["ok"]} for c in checks]
        return JSONResponse({"ready": ready, "checks": checks}, status_code=200 if ready else 503)

    @app.get("/metrics", summary="Prometheus metrics (a token unless --public-metrics)",
             response_class=PlainTextResponse, responses={401: _ERROR})
    async def metrics() -> Response:
        return Response(service.metrics.render(),
                        media_type="text/plain; version=0.0.4; charset=utf-8")


def _components(app: FastAPI) -> None:
    """Put the request models' schemas where the `openapi_extra` bodies refer to them."""
    original = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = original()
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        for model in (ModerationRequest, JudgeRequest):
            found = model.model_json_schema(ref_template="#/components/schemas/{model}")
            components.update(found.pop("$defs", {}))
            components[model.__name__] = found
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


async def _moderation_images(body: ModerationRequest, service: Service) -> list[ImageBytes]:
    limits = service.config.limits
    parts = body.input
    if isinstance(parts, str) or any(isinstance(p, str) for p in parts):
        raise ApiError(400, "text_input", "this service moderates images; text input is not "
                       "supported. Send image parts: {\"type\": \"image_url\", \"image_url\": "
                       "{\"url\": \"data:image/png;base64,...\"}}", param="input")
    if not parts:
        raise ApiError(400, "bad_request", "input holds no image", param="input")
    if len(parts) > limits.max_images:
        raise ApiError(413, "too_many_images", f"{len(parts)} images in one request, over "
                       f"the limit of {limits.max_images}", param="input")
    images = []
    for index, item in enumerate(parts):
        param = f"input[{index}]"
        assert isinstance(item, InputPart)  # strings were refused above
        part = item
        if part.type == "text":
            raise ApiError(400, "text_input", f"{param}: this service moderates images; text "
                           "parts are not supported", param=param)
        if part.type != "image_url" or part.image_url is None:
            raise ApiError(400, "bad_request", f"{param}: expected a part of type image_url "
                           "with image_url.url", param=param)
        images.append(await _from_url(part.image_url.url, service, param))
    return images


async def _from_url(url: str, service: Service, param: str, video: bool = False) -> ImageBytes:
    """The input a URL names; a video clip only where `video` (/v1/judge), else 415."""
    limits = service.config.limits
    if url[:5].lower() == "data:":
        return await asyncio.to_thread(from_data_url, url, limits, param, video=video)
    return await fetch_remote(url, service.config.remote, limits, param, video=video)


async def _native_inputs(
    request: Request, service: Service, kind: str
) -> tuple[list[ImageBytes], list[str | None], bool, list[str] | None]:
    """(images, ids, explain, rule subset) from a JSON or a multipart body."""
    limits = service.config.limits
    if kind == "multipart/form-data":
        return await _multipart(request, service)
    body = _validate(JudgeRequest, await _json(request), "images")
    if not body.images:
        raise ApiError(400, "bad_request", "images is empty", param="images")
    if len(body.images) > limits.max_images:
        raise ApiError(413, "too_many_images", f"{len(body.images)} images in one request, "
                       f"over the limit of {limits.max_images}", param="images")
    images, ids = [], []
    for index, item in enumerate(body.images):
        param = f"images[{index}]"
        if (item.data is None) == (item.url is None):
            raise ApiError(400, "bad_request", f"{param}: give exactly one of data (base64) "
                           "and url", param=param)
        if item.data is not None:
            images.append(await asyncio.to_thread(
                from_base64, item.data, limits, param, video=True))
        else:
            images.append(await _from_url(str(item.url), service, param, video=True))
        ids.append(item.id)
    return images, ids, body.explain, body.rules


async def _multipart(
    request: Request, service: Service
) -> tuple[list[ImageBytes], list[str | None], bool, list[str] | None]:
    from starlette.datastructures import UploadFile

    limits = service.config.limits
    try:
        form = await request.form(max_files=limits.max_images + 1, max_fields=64)
    except ApiError:
        raise
    except Exception as error:  # python-multipart's complaints: a malformed body
        raise ApiError(400, "bad_request", f"malformed multipart body: {error}") from None
    images: list[ImageBytes] = []
    ids: list[str | None] = []
    rules: list[str] | None = None
    explain = False
    try:
        for key, value in form.multi_items():
            if isinstance(value, UploadFile):
                if len(images) >= limits.max_images:
                    raise ApiError(413, "too_many_images", "more images than the limit of "
                                   f"{limits.max_images}", param=key)
                data = await value.read(largest(limits, True) + 1)
                images.append(await asyncio.to_thread(
                    check_bytes, data, limits, f"{key}[{len(images)}]", "upload", video=True))
                ids.append(value.filename or None)
            elif key == "explain":
                explain = _flag(value)
            elif key == "rules":
                rules = (rules or []) + [r.strip() for r in str(value).split(",") if r.strip()]
    finally:
        await form.close()
    if not images:
        raise ApiError(400, "bad_request", "the multipart body holds no image file")
    return images, ids, explain, rules
