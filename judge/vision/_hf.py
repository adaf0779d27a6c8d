"""Loading transformers vision models for the judge process, with errors a user can act on.

torch and transformers are imported only here and only when a vision stage is used, so
`import judge` stays light.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from judge.errors import InputError


def require_hf(what: str) -> None:
    """Raise a clear InputError when torch/transformers are not installed."""
    try:
        import torch  # noqa: F401
        import transformers  # noqa: F401
    except ImportError as exc:
        raise InputError(
            f"the {what} needs torch and transformers ({exc.name} is missing): "
            "pip install 'judge[hf]'"
        ) from None


def pick_device(device: str | None) -> str:
    import torch

    if device:
        return device
    return "cuda" if torch.cuda.is_available() else "cpu"


def load_pretrained(load: Callable[..., Any], model: str | Path, *, what: str, option: str) -> Any:
    """`load(model)` (a `from_pretrained`), turning "not found" into an InputError.

    Args:
        load: e.g. `CLIPModel.from_pretrained`.
        model: a local folder or a Hugging Face hub id.
        what: what the model is for, for the message ("relevance model").
        option: how to point judge at a local copy, e.g. "--relevance clip:/path/to/model".
    """
    text = str(model)
    try:
        return load(text)
    except (OSError, ValueError, KeyError) as exc:
        raise InputError(_not_found(text, what, option, exc)) from None
    except Exception as exc:  # hub client errors subclass neither
        if type(exc).__module__.startswith(("huggingface_hub", "requests", "httpx")):
            raise InputError(_not_found(text, what, option, exc)) from None
        raise


def _not_found(model: str, what: str, option: str, exc: BaseException) -> str:
    local = Path(model).expanduser()
    if local.exists():
        return f"{what} {model!r} could not be loaded from that folder: {_short(exc)}"
    offline = os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0", "false", "False")
    where = (
        "downloads are off (HF_HUB_OFFLINE is set)"
        if offline
        else "it could not be downloaded from the Hugging Face hub"
    )
    return (
        f"{what} {model!r} is not a local folder and is not in the Hugging Face cache, and "
        f"{where}. Download it where there is network (`hf download {model}`), then point "
        f"judge at the folder: {option}. ({_short(exc)})"
    )


def _short(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text[:300] + ("..." if len(text) > 300 else "")


def first_tensor(output: Any) -> Any:
    """The embedding tensor from `get_*_features`: a tensor in transformers 4, an output
    object with `pooler_output` in transformers 5."""
    import torch

    if isinstance(output, torch.Tensor):
        return output
    pooled = getattr(output, "pooler_output", None)
    if pooled is None:
        raise TypeError(f"unexpected model output {type(output).__name__}")
    return pooled
