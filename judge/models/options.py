"""The model options, as one value: what `--model`, `--backend`, `--server`, `--api-key`,
`--relevance` and `--locator` asked for, carried from a command to every `Judge` it builds.

    options = ModelOptions(model="toy", relevance="off")
    judge = Judge(lock, **options.judge_kwargs(), store=store)          # opens its back end
    other = Judge(lock, **options.judge_kwargs(backend=judge.backend))  # shares it
    choice = options.resolve(default_model=lock.defaults.model)        # checked in seconds

`judge`, `judge serve`, `judge batch`, `judge eval`, `judge calibrate` and `judge bench`
all hold one of these instead of six fields of their own, so each option means the same
everywhere (the meaning itself is `judge.models.resolve`'s). The Python API takes the same
six as keyword arguments of `Judge(...)`; this class is the commands' plumbing, not part
of the public API.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from judge.models.base import Backend
from judge.models.resolve import ModelChoice, named_models, resolve_model


@dataclass(frozen=True)
class ModelOptions:
    """Which model judges, where it runs, and which relevance scorer and locator go with it.

    Attributes:
        model: a registered name ("toy"), a folder or a hub id; None: the policy's
            `defaults.model`, else whatever the server serves.
        backend: a back-end kind ("vllm-server", "vllm", "hf", a plugin's), or a `Backend`
            already open; None: chosen by the server.
        server: one server URL, or several comma-separated (a fleet); None: `JUDGE_SERVER`.
        api_key: the server's key, or "@FILE"; None: the environment. Never shown in a
            repr, so logging the options never logs the key.
        relevance: the relevance scorer (clip:<id|path>, siglip:<id|path>, vlm, off); None:
            the named model's own, else CLIP.
        locator: an OWLv2 id or folder, or off; None: the named model's own, else OWLv2.
    """

    model: str | None = None
    backend: str | Backend | None = None
    server: str | None = None
    api_key: str | None = field(default=None, repr=False)
    relevance: str | None = None
    locator: str | None = None

    def judge_kwargs(self, backend: Backend | None = None) -> dict[str, Any]:
        """The keyword arguments of `Judge(...)` these options stand for.

        Args:
            backend: a back end already open, to share: it replaces `backend`, `server`
                and `api_key` (the Judge then neither opens nor closes a back end; `model`
                still selects a registered name's relevance scorer and locator).
        """
        where: dict[str, Any] = (
            {"backend": backend}
            if backend is not None
            else {"backend": self.backend, "server": self.server, "api_key": self.api_key}
        )
        return {"model": self.model, **where, "relevance": self.relevance,
                "locator": self.locator}

    def resolve(
        self, *, default_model: str | None = None, default_backend: str | None = None
    ) -> ModelChoice:
        """The model and back end these options name (`judge.models.resolve_model`), with a
        policy's defaults where an option is not given; nothing is loaded.

        Raises:
            InputError: no model where one is needed, a missing folder, a hub id that is
                neither cached nor reachable.
        """
        model = self.model or default_model
        if isinstance(self.backend, Backend):
            # Open already (as `Judge` reads it): only a registered name's other parts,
            # its relevance scorer and locator, can still matter.
            return ModelChoice(self.backend.kind, None, None, named_models(model), model)
        return resolve_model(model, backend=self.backend or default_backend, server=self.server)

    def open(self, **options: Any) -> Backend:
        """Open the back end these options name (a `Backend` given as `backend`: itself).

        Args:
            **options: back-end options (concurrency, timeout, ...).
        """
        if isinstance(self.backend, Backend):
            return self.backend
        return self.resolve().open(self.api_key, **options)
