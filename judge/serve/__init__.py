"""`judge serve`: a moderation HTTP service over a constitution.

    from judge.serve import ServeConfig, build_service, create_app

The pieces, each in its own module: `config` (limits, tokens, remote URLs, fail-closed),
`auth` (bearer tokens and their roles), `guard` (authentication, roles and the body
limit, before any body is read), `inputs` (images out of requests), `remote` (fetching
remote images safely), `admission` (concurrency and the bounded queue), `work` (the
threads a request started, held against its slot), `policy` (the active policy and
reloads), `service` (the judging path), `moderation`
(OpenAI's shape), `native` (judge's shape), `metrics` (Prometheus), `decisions` (the
audit log), `app` (the routes), `run` (uvicorn and signals), `load` (the load run).
"""

from __future__ import annotations

from judge.serve.app import create_app, guarded
from judge.serve.auth import Tokens, load_tokens
from judge.serve.config import Limits, RemoteImages, ServeConfig
from judge.serve.policy import ModelOptions
from judge.serve.service import Service

__all__ = [
    "Limits",
    "ModelOptions",
    "RemoteImages",
    "ServeConfig",
    "Service",
    "Tokens",
    "create_app",
    "guarded",
    "load_tokens",
]
