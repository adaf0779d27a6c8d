"""`judge doctor`: can this model or server do what judge needs?

It needs a model that takes images, label probabilities (logprobs with enough top-k, or
vLLM's `logprob_token_ids`), and single-token "Yes"/"No". Each check is a row with what
was found and, on failure, the fix; the first failure decides the error (and so the CLI's
exit code): BackendError, NoVisionError, LogprobsError or TokenizerError.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from judge.errors import (
    BackendError,
    LogprobsError,
    ModelCapabilityError,
    NoVisionError,
    TokenizerError,
)
from judge.models.base import Backend
from judge.models.registry import load_backend

# Which error a failed check stands for.
_ERRORS: dict[str, type[BackendError]] = {
    "server": BackendError,
    "model": BackendError,
    "load": BackendError,
    "engine": BackendError,  # the server's engine died (see judge.models.family's limits)
    "labels": TokenizerError,
    "logprobs": LogprobsError,
    "vision": NoVisionError,
}

_FIXES: dict[str, str] = {
    "labels": "use a model whose tokenizer encodes 'Yes' and 'No' as single tokens",
    "logprobs": "restart the server with `--max-logprobs 20`",
    "vision": "serve a vision-language model and allow `--limit-mm-per-prompt '{\"image\":1}'`",
}


@dataclass(frozen=True)
class Check:
    """One row of the doctor's table."""

    name: str
    ok: bool
    found: str

    @property
    def error(self) -> type[BackendError]:
        return _ERRORS.get(self.name, BackendError)


async def diagnose_backend(backend: Backend) -> list[Check]:
    """Run the back end's own checks."""
    try:
        rows = await backend.check()
    finally:
        await backend.aclose()
    return [Check(name, ok, found) for name, ok, found in rows]


def diagnose(
    kind: str | None = None,
    *,
    model: str | None = None,
    server: str | None = None,
    api_key: str | None = None,
    **options: Any,
) -> list[Check]:
    """Load the back end and check it; a failure to load becomes a failed row."""
    try:
        backend = load_backend(kind, model=model, server=server, api_key=api_key, **options)
    except ModelCapabilityError as exc:
        name = {NoVisionError: "vision", TokenizerError: "labels", LogprobsError: "logprobs"}
        return [Check(name.get(type(exc), "load"), False, str(exc))]
    except BackendError as exc:
        return [Check("load", False, str(exc))]
    return asyncio.run(diagnose_backend(backend))


def _split_fix(found: str) -> tuple[str, str | None]:
    if "Fix: " in found:
        text, fix = found.split("Fix: ", 1)
        return text.rstrip(" .;"), fix.strip()
    return found, None


def raise_for(checks: list[Check]) -> None:
    """Raise the error of the first failed check, if any.

    Raises:
        BackendError, NoVisionError, LogprobsError or TokenizerError.
    """
    failed = [c for c in checks if not c.ok]
    if not failed:
        return
    first = failed[0]
    text, fix = _split_fix(first.found)
    others = "".join(f"; also {c.name}: {_split_fix(c.found)[0]}" for c in failed[1:])
    message = f"judge doctor: {first.name} check failed: {text}{others}"
    error = first.error
    if issubclass(error, ModelCapabilityError):
        raise error(message, fix=fix or _FIXES[first.name])
    # A load failure (a missing package) or a dead engine has its fix too: keep it.
    raise BackendError(message, hint=f"Fix: {fix}" if fix else None)
