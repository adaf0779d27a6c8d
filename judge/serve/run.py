"""Running the service: the Service built from `judge serve`'s options, then uvicorn.

Everything that can be refused is refused before the port opens: the policy is loaded and
checked (a missing or stale lock, rules needing review), the tokens are read, and the
back end is opened. uvicorn then serves the app behind the guard; SIGTERM and SIGINT stop
it gracefully (requests in flight finish, up to `graceful_s`), SIGHUP reloads the policy.
"""

from __future__ import annotations

import ipaddress
import logging
from typing import Any

from judge.errors import InputError
from judge.serve.config import ServeConfig
from judge.serve.policy import ModelOptions
from judge.serve.service import Service

LOOPBACK = ("localhost",)


def is_loopback(host: str) -> bool:
    if host in LOOPBACK:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_exposure(config: ServeConfig, host: str, allow_no_auth: bool) -> None:
    """Refuse to serve without tokens on an address other machines can reach."""
    if not config.tokens.enabled and not is_loopback(host) and not allow_no_auth:
        raise InputError(
            f"refusing to serve on {host} without tokens: give --tokens-file or "
            "JUDGE_SERVE_TOKENS (or --insecure-no-auth if something in front authenticates)"
        )


def build_service(config: ServeConfig, options: ModelOptions, backend: Any = None) -> Service:
    """Check the policy, open the back end and the store, and build the first policy.

    Raises:
        JudgeError: a bad policy (exit 2), rules needing review (8), a model that cannot
            be found (2) or loaded (3).
    """
    from judge import Constitution, Store

    constitution = Constitution.load(config.constitution)
    lock = constitution.lock  # LockError now, not after the port opened
    if not options.allow_unreviewed:
        from judge.constitution.review import describe, needs_review

        found = needs_review(lock.enabled_rules())
        if found:
            from judge.errors import ReviewError

            raise ReviewError(
                f"the lock of {lock.source} has {len(found)} rule(s) that need review:\n"
                f"{describe(found)}\nFix and re-compile, or serve with --allow-unreviewed",
                rules=found,
            )
    model = options.model or lock.defaults.model
    if backend is None:
        choice = options.resolve(default_model=model, default_backend=lock.defaults.backend)
        backend = choice.open(options.api_key)
    if model != options.model:
        from dataclasses import replace

        options = replace(options, model=model)
    store = Store(config.store)
    service = Service(config, backend=backend, options=options, store=store)
    # The relevance and locator models load here: a missing one is the command's error.
    service.holder.load_first()
    return service


def serve(
    service: Service,
    host: str,
    port: int,
    *,
    log_level: str = "info",
    graceful_s: int = 30,
    allow_no_auth: bool = False,
) -> bool:
    """Serve until stopped; False when the app failed to start (the log says why)."""
    import uvicorn

    from judge.serve.app import create_app, guarded

    check_exposure(service.config, host, allow_no_auth)
    logging.getLogger("judge.serve").setLevel(log_level.upper())
    app = create_app(service)
    server = uvicorn.Server(uvicorn.Config(
        guarded(app, service), host=host, port=port, log_level=log_level, lifespan="on",
        timeout_graceful_shutdown=graceful_s, server_header=False,
        timeout_keep_alive=service.config.keep_alive_s,
    ))
    server.run()
    return bool(server.started)
