"""One meaning for `--model`, `--server` and `--backend`, in every command and in `Judge`.

    choice = resolve_model("toy")                      # a registered name
    choice = resolve_model("/models/qwen2.5-vl")       # a folder
    choice = resolve_model("Qwen/Qwen2.5-VL-7B-Instruct")  # a hub id, checked in seconds
    choice = resolve_model(None, server="http://127.0.0.1:8000/v1")  # or JUDGE_SERVER
    backend = choice.open(api_key=...)

The rules, in order:

1. Server: `server`, else `JUDGE_SERVER`, unless an in-process back end (`hf`, `vllm`)
   was asked for by name.
2. Back-end kind: `backend`, else "vllm-server" when there is a server, else "hf".
3. Model: a *registered name* stands for a set of models (the VLM, and the relevance and
   locator models that go with it), each found or built only when a stage needs it; the
   toy package registers "toy" this way, exactly as an outside package would (entry-point
   group `judge.model_names`). With a server, a name asks for its `served_name` (None:
   whatever the server serves). Otherwise the model is a local folder, used as it is, or
   a hub id: for an in-process back end a hub id must be in the local Hugging Face cache
   or answer the hub within seconds; if not, an InputError says how to point judge at a
   folder or a server (transformers would otherwise retry for minutes).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from judge.errors import InputError
from judge.models._plugins import PluginRegistry
from judge.models._secret import Secret
from judge.models.base import Backend
from judge.models.registry import canonical_kind, load_backend

ENTRY_POINT_GROUP = "judge.model_names"
# The back ends that load weights in this process: a model name must be found before.
IN_PROCESS = frozenset({"hf", "vllm"})
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")
_HUB_TIMEOUT_S = 10.0


def _nothing() -> str | None:
    return None


@dataclass(frozen=True)
class NamedModels:
    """What a registered model name stands for. Each part is a callable, so a stage that
    is off (or given another model) never builds or downloads its part.

    Attributes:
        vlm: the judge model's folder or hub id, for in-process back ends.
        relevance: the default relevance scorer ("clip:<folder>", ...), or None for judge's.
        locator: the default OWLv2 folder or id, or None for judge's.
        served_name: the model to ask a server for; None accepts whatever it serves.
        max_new_tokens: the most tokens worth generating with this VLM where a caller may
            cap them (`judge bench`'s compile section); None: no cap. A small model never
            taught to write long answers (the toy VLM) would only fill its budget.
    """

    vlm: Callable[[], str]
    relevance: Callable[[], str | None] = _nothing
    locator: Callable[[], str | None] = _nothing
    served_name: str | None = None
    max_new_tokens: int | None = None


_NAMES: PluginRegistry[Callable[[], NamedModels]] = PluginRegistry(ENTRY_POINT_GROUP, "model name")


def register_model_name(
    name: str, target: str | Callable[[], NamedModels], *, replace: bool = False
) -> None:
    """Make `name` usable as `--model name` / `Judge(model=name)`.

    Args:
        target: "package.module:function" (imported when the name is used) or a callable;
            either returns a `NamedModels`.
        replace: allow replacing an existing registration.
    """
    _NAMES.register(name, target, replace=replace)


def model_names() -> list[str]:
    """Every registered model name."""
    return _NAMES.names()


def named_models(name: str | None) -> NamedModels | None:
    """The models registered as `name`, or None if it is not a registered name."""
    if name is None or name not in _NAMES:
        return None
    return _NAMES.load(name)()


@dataclass(frozen=True)
class ModelChoice:
    """A resolved `--model` / `--server` / `--backend`: what to load or ask for, where."""

    kind: str
    model: str | None  # a folder or hub id; for a server, the model to ask it for
    server: str | None
    named: NamedModels | None = None
    requested: str | None = None  # what the caller named

    def backend_model(self) -> str | None:
        """The model the back end gets; a named model's VLM is found (or built) here."""
        if self.named is None:
            return self.model
        if self.kind == "vllm-server":
            return self.named.served_name
        return self.named.vlm()

    def open(self, api_key: str | Secret | None = None, **options: Any) -> Backend:
        """Create the back end."""
        return load_backend(
            self.kind,
            model=self.backend_model(),
            server=self.server,
            api_key=api_key,
            **options,
        )

    def default_relevance(self) -> str | None:
        """The relevance scorer that comes with a named model (None: judge's default)."""
        return self.named.relevance() if self.named is not None else None

    def default_locator(self) -> str | None:
        """The locator that comes with a named model (None: judge's default)."""
        return self.named.locator() if self.named is not None else None


def resolve_model(
    model: str | None,
    *,
    backend: str | None = None,
    server: str | Sequence[str] | None = None,
    need_model: bool = True,
) -> ModelChoice:
    """Resolve what the caller named (see the module's rules).

    Args:
        model: a registered name, a folder, a hub id, or None.
        backend: a back-end kind (or alias), or None to choose by the server.
        server: a server URL, or several (a fleet); None falls back to `JUDGE_SERVER`.
        need_model: raise an InputError when an in-process back end gets no model.

    Raises:
        InputError: no model where one is needed, a missing folder, or a hub id that is
            neither cached nor reachable.
    """
    kind = canonical_kind(backend) if backend else None
    if server is not None and not isinstance(server, str):
        # Several servers travel as one comma-separated string, like JUDGE_SERVER's.
        server = ",".join(server) or None
    if server is None and kind in (None, "vllm-server"):
        server = os.environ.get("JUDGE_SERVER") or None
    if kind is None:
        kind = "vllm-server" if server else "hf"
    named = named_models(model)
    if named is not None:
        return ModelChoice(kind, None, server, named, model)
    if kind in IN_PROCESS:
        if model is None:
            if need_model:
                raise InputError(
                    "no judge model: pass --model (a folder, a hub id, or one of: "
                    f"{', '.join(model_names())}) or --server URL (or set JUDGE_SERVER), "
                    "or set defaults.model in the constitution"
                )
        else:
            model = check_available(model, what="model", option="--model /path/to/model")
    return ModelChoice(kind, model, server, None, model)


def check_available(name: str, *, what: str, option: str) -> str:
    """`name` itself if it is a local folder, a hub id in the local cache, or a hub id the
    hub knows (asked once, within seconds); otherwise an InputError that says how to point
    judge at a local copy (`option`) or at a server."""
    local = Path(name).expanduser()
    if local.exists():
        return str(local)
    looks_like_path = name.startswith(("/", ".", "~")) or name.count("/") > 1 or "\\" in name
    if looks_like_path or not _HUB_ID.match(name):
        raise InputError(
            f"{what} {name!r}: no such folder. Give the folder that holds it ({option})"
        )
    names = model_names()
    advice = (
        f"Point judge at a folder with the weights ({option}), or at a server that serves "
        f"the model (--server URL or JUDGE_SERVER)"
        + (f"; registered names: {', '.join(names)}" if names else "")
        + f". To get a copy, run `hf download {name}` where there is network."
    )
    try:
        import huggingface_hub
    except ImportError:  # pragma: no cover - installed with transformers
        raise InputError(f"{what} {name!r} is not a local folder. {advice}") from None
    if huggingface_hub.try_to_load_from_cache(name, "config.json") is not None:
        return name
    offline = os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0", "false", "False")
    if offline:
        raise InputError(
            f"{what} {name!r} is not a local folder and not in the Hugging Face cache, and "
            f"downloads are off (HF_HUB_OFFLINE is set). {advice}"
        )
    try:
        huggingface_hub.model_info(name, timeout=_HUB_TIMEOUT_S)
    except Exception as error:  # the hub client's errors share no useful base class
        reason = " ".join(str(error).split())[:200]
        raise InputError(
            f"{what} {name!r} is not a local folder and not in the Hugging Face cache, and "
            f"the hub cannot provide it ({type(error).__name__}: {reason}). {advice}"
        ) from None
    return name


# The built-in names, registered the way a plugin's entry points would be.
register_model_name("toy", "judge.toy.register:toy_models")


def _tiny_family(name: str) -> NamedModels:
    from judge.models.families.register import family_models

    return family_models(name)


def _register_families() -> None:
    """`tiny-<family>`: each VLM family's tiny random-weight build (judge.models.families)."""
    import functools

    from judge.models.families import FAMILY_NAMES

    for family in FAMILY_NAMES:
        register_model_name(f"tiny-{family}", functools.partial(_tiny_family, family))


_register_families()
