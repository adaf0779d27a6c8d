"""The one model interface every stage of judge uses, and the back ends behind it.

`load_backend(kind, model=..., server=...)` returns a `Backend`; heavy libraries (torch,
transformers, vLLM) are imported only by the back end that needs them.
"""

from judge.models._secret import Secret, resolve_api_key
from judge.models.base import (
    NO_VARIANTS,
    YES_VARIANTS,
    Backend,
    CallStats,
    Chat,
    Generation,
    Message,
    YesNoQuery,
    YesNoResult,
)
from judge.models.registry import backend_kinds, default_kind, load_backend, register_backend

__all__ = [
    "NO_VARIANTS",
    "YES_VARIANTS",
    "Backend",
    "CallStats",
    "Chat",
    "Generation",
    "Message",
    "Secret",
    "YesNoQuery",
    "YesNoResult",
    "backend_kinds",
    "default_kind",
    "load_backend",
    "register_backend",
    "resolve_api_key",
]
