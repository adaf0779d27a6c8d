"""Back-end registry: names to classes, loaded only when chosen.

A back end registers as `register_backend(kind, "module:Class")` (or a callable). The
built-in ones register exactly like outside plugins, which declare an entry point in the
`judge.backends` group with the same "module:Class" value. Nothing heavy is imported until
`load_backend` picks a kind, so `import judge` never pulls in torch or vLLM.
"""

from __future__ import annotations

import importlib
import inspect
import os
from collections.abc import Callable, Sequence
from typing import Any

from judge.errors import BackendError, InputError
from judge.models._plugins import PluginRegistry
from judge.models._secret import Secret, resolve_api_key
from judge.models.base import Backend

Factory = Callable[..., Backend]

ENTRY_POINT_GROUP = "judge.backends"

_BACKENDS: PluginRegistry[Factory] = PluginRegistry(ENTRY_POINT_GROUP, "back end")
_registry = _BACKENDS.targets  # the registered kinds (tests save and restore it)
_aliases = {"server": "vllm-server", "openai": "vllm-server", "transformers": "hf"}


def register_backend(kind: str, target: str | Factory, *, replace: bool = False) -> None:
    """Make back end `kind` loadable.

    Args:
        kind: the name users pass as `--backend`.
        target: "package.module:Class" (imported on first use) or a callable that takes
            `model=`, `server=`, `api_key=` and options and returns a `Backend`.
        replace: allow replacing an existing registration.
    """
    _BACKENDS.register(kind, target, replace=replace)


def backend_kinds() -> list[str]:
    """The names of every registered back end."""
    return _BACKENDS.names()


def canonical_kind(kind: str) -> str:
    """The registered name of back end `kind` ("server" -> "vllm-server", ...)."""
    return _aliases.get(kind, kind)


def default_kind(server: str | None = None) -> str:
    """ "vllm-server" when a server is given (flag or `JUDGE_SERVER`), else "hf"."""
    return "vllm-server" if server or os.environ.get("JUDGE_SERVER") else "hf"


def _factory(kind: str) -> Factory:
    try:
        return _BACKENDS.load(kind)
    except (ImportError, AttributeError) as exc:
        raise BackendError(
            f"back end {kind!r} cannot be loaded from {_registry[kind]!r}: {exc}",
            hint="reinstall the package that provides it",
        ) from exc


def load_backend(
    kind: str | None = None,
    *,
    model: str | None = None,
    server: str | Sequence[str] | None = None,
    api_key: str | Secret | None = None,
    **options: Any,
) -> Backend:
    """Create a back end.

    Args:
        kind: "vllm-server", "vllm", "hf" or a plugin's name; None picks "vllm-server"
            when a server is given (here or in `JUDGE_SERVER`), else "hf".
        model: model id or local folder (for a server: the model it must be serving).
        server: base URL of an OpenAI-compatible server (default: `JUDGE_SERVER`); several
            (a list, or comma-separated) make one fleet with prefix-aware routing.
        api_key: the key, "@path" to read it from a file, or None for the environment
            (`JUDGE_API_KEY`, `OPENAI_API_KEY`, `JUDGE_API_KEY_FILE`).
        **options: back-end options (concurrency, timeout, device, dtype, ...).

    Raises:
        InputError: unknown kind, or an option that back end does not take.
        BackendError: the back end's library is missing or the model cannot be loaded.
    """
    if server is not None and not isinstance(server, str):
        server = ",".join(server)
    name = _aliases.get(kind, kind) if kind else default_kind(server)
    if name not in _BACKENDS:
        raise InputError(f"unknown back end {kind!r}; choose one of: {', '.join(backend_kinds())}")
    kwargs: dict[str, Any] = dict(options)
    if name == "vllm-server" and server is not None:
        # Several servers ("a,b", or a list): one fleet of replicas (judge.models.fleet).
        from judge.models.fleet import split_servers

        urls = split_servers(server)
        if len(urls) > 1:
            name, server, kwargs["servers"] = "vllm-fleet", None, urls
        else:
            server = urls[0] if urls else None
    factory = _factory(name)
    if model is not None:
        kwargs["model"] = model
    if server is not None:
        kwargs["server"] = server
    key = resolve_api_key(api_key) if name in ("vllm-server", "vllm-fleet") else api_key
    if key is not None:
        kwargs["api_key"] = key
    _check_options(factory, name, kwargs)
    return factory(**kwargs)


def _check_options(factory: Factory, kind: str, kwargs: dict[str, Any]) -> None:
    """Turn an option the back end does not take into a usage error, not a TypeError."""
    try:
        params = inspect.signature(factory).parameters
    except (TypeError, ValueError):
        return
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    unknown = sorted(set(kwargs) - set(params))
    if unknown:
        raise InputError(
            f"the {kind} back end does not take {', '.join(unknown)}; "
            f"it takes: {', '.join(p for p in params if p != 'self')}"
        )


def require(module: str, *, backend: str, install: str) -> Any:
    """Import a back end's heavy library, or say which `pip install` provides it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise BackendError(
            f"the {backend} back end needs the Python package '{module}', which is not "
            f"installed or fails to import ({exc})",
            hint=f"Install it with: {install}",
        ) from exc


# The built-in back ends, registered the way a plugin's entry points would be.
register_backend("vllm-server", "judge.models.vllm_server:VLLMServerBackend")
register_backend("vllm-fleet", "judge.models.fleet:FleetBackend")
register_backend("vllm", "judge.models.vllm_engine:VLLMEngineBackend")
register_backend("hf", "judge.models.hf:HFBackend")
