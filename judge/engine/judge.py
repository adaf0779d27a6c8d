"""The `Judge`: a constitution, a model and the procedure, over one image or many.

    >>> from judge import Judge
    >>> with Judge("policy.yaml", model="toy") as judge:
    ...     verdict = judge.judge("scene.png")
    ...     for verdict in judge.stream(["a.png", "b.png"], concurrency=8): ...

Many images are in flight at once (bounded by `concurrency`), so the back end sees full
batches; each image is decoded and resized once, to the back end's pixel budget, and the
same pixels go to the relevance scan, the locator and the model. The synchronous methods
run the async ones on one private event loop in a worker thread, so a back end's
connections live on one loop for the Judge's whole life; do not mix the synchronous and
asynchronous methods on one Judge.
"""

from __future__ import annotations

import asyncio
import dataclasses
import threading
import time
from collections import Counter
from collections.abc import (
    AsyncGenerator,
    AsyncIterator,
    Awaitable,
    Iterable,
    Iterator,
    Sequence,
)
from pathlib import Path
from typing import Any, TypeVar

import pydantic
from PIL import Image

from judge.constitution.schema import Lock
from judge.engine.clip import judge_clip
from judge.engine.priors import PriorCache
from judge.engine.procedure import (
    JudgeOptions,
    Locator,
    Relevance,
    Setup,
    judge_image,
    rule_thresholds,
    threshold_sources,
)
from judge.engine.verdict import Verdict, make_verdict, model_failure, unreadable
from judge.errors import BackendError, ImageError, InputError, ReviewError
from judge.models.base import Backend
from judge.models.resolve import ModelChoice, check_available, named_models, resolve_model
from judge.store import Store
from judge.thresholds import ThresholdOverrides, Thresholds
from judge.video.decode import media_kind

ImageSource = str | Path | bytes | Image.Image
ImageInput = ImageSource | tuple[str, ImageSource]
ThresholdsInput = Thresholds | ThresholdOverrides | dict[str, Any] | str | Path | None

T = TypeVar("T")


def load_thresholds(value: ThresholdsInput, base: Thresholds | None = None) -> Thresholds:
    """Run thresholds from a Thresholds, overrides, a dict, or a YAML/JSON file.

    A file holds the fields of `ThresholdOverrides`, at the top or under `thresholds:`.
    """
    base = base or Thresholds.model_validate({})
    if value is None:
        return base
    if isinstance(value, Thresholds):
        return value
    if isinstance(value, (str, Path)):
        from judge.constitution.yamlsafe import read_file

        path = Path(value)
        data = read_file(path, what="thresholds file")
        if isinstance(data, dict) and isinstance(data.get("thresholds"), dict):
            data = data["thresholds"]
        if not isinstance(data, dict):
            raise InputError(f"{path}: expected a mapping of threshold names to numbers")
        value = data
    if isinstance(value, dict):
        try:
            value = ThresholdOverrides.model_validate(value)
        except pydantic.ValidationError as error:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc']) or 'thresholds'}: {e['msg']}"
                for e in error.errors()
            )
            raise InputError(f"bad thresholds: {problems}") from None
    return base.merged(value)


def _check_review(lock: Lock, allow: bool) -> list[str]:
    """The ids of the rules that need review; ReviewError unless judging them is allowed."""
    from judge.constitution.review import describe, needs_review

    found = needs_review(lock.enabled_rules())
    if found and not allow:
        raise ReviewError(
            f"the lock of {lock.source} has {len(found)} rule(s) that need review:\n"
            f"{describe(found)}\nFix the rules and re-compile, or judge anyway with "
            "--allow-unreviewed (Judge(..., allow_unreviewed=True)): the verdicts then "
            "name these rules",
            rules=found,
        )
    return list(found)


def _load_lock(constitution: Any) -> Lock:
    if isinstance(constitution, Lock):
        return constitution
    from judge.constitution import Constitution

    if isinstance(constitution, (str, Path)):
        constitution = Constitution.load(constitution)
    if isinstance(constitution, Constitution):
        return constitution.lock
    raise InputError(
        f"a constitution is a path, a Constitution or a Lock, not {type(constitution).__name__}"
    )


class Judge:
    """Judge images against a compiled constitution.

    Args:
        constitution: a policy file (its lock must be fresh), a `Constitution`, or a `Lock`.
        model: a registered model name ("toy": the toy models, built if absent), a folder
            or a hub id, resolved as by every command (`judge.models.resolve`).
        backend: a `Backend`, or its kind ("hf", "vllm", "vllm-server"); None picks
            "vllm-server" when a server is given (or `JUDGE_SERVER` is set), else "hf".
        server: base URL of an OpenAI-compatible (vLLM) server (default: `JUDGE_SERVER`).
        servers: several such servers, replicas of one model: one fleet with prefix-aware
            routing and failover (`judge.models.fleet`); `server` is then ignored.
        api_key: the server's key, "@path" for a file, or None for the environment.
        relevance: "clip:<id|path>", "siglip:<id|path>", "vlm", "off", or None for the
            default (the named model's own, e.g. the toy CLIP, else CLIP ViT-B/16).
        locator: an OWLv2 id or path, "off", or None for the default.
        thresholds: run thresholds (a Thresholds, overrides, a dict or a YAML/JSON file),
            on top of the paper's defaults, the relevance model's own default threshold
            and the constitution's `defaults.thresholds`.
        options: stage switches (`JudgeOptions`).
        fill: how the central-region step removes a box: "mean" colour (the default),
            "blur" or "black"; None keeps `options.fill`.
        store: the SQLite store (prior cache, decision log): a path, a Store, or None
            for `<cache>/judge.sqlite3`.
        allow_unreviewed: judge with a lock whose rules need review (see
            `judge.constitution.review`); each verdict then names those rules. Otherwise
            such a lock raises ReviewError.
    """

    def __init__(
        self,
        constitution: Any,
        *,
        model: str | None = None,
        backend: str | Backend | None = None,
        server: str | None = None,
        servers: Sequence[str] | None = None,
        api_key: str | None = None,
        relevance: str | None = None,
        locator: str | None = None,
        thresholds: ThresholdsInput = None,
        options: JudgeOptions | None = None,
        fill: str | None = None,
        store: str | Path | Store | None = None,
        allow_unreviewed: bool = False,
    ) -> None:
        self._lock_obj = _load_lock(constitution)
        from judge.constitution.loader import require_enabled_rules

        # A policy without an enabled rule would call every image safe: refused here, so
        # the CLI exits 2 and the service refuses to start or to reload it.
        named = constitution if isinstance(constitution, (str, Path)) else None
        named = named or getattr(constitution, "path", None) or self._lock_obj.source
        require_enabled_rules(self._lock_obj.rules, str(named))
        self.needs_review = _check_review(self._lock_obj, allow_unreviewed)
        self.options = options or JudgeOptions()
        if fill is not None:  # JudgeOptions checks the name
            self.options = dataclasses.replace(self.options, fill=fill)  # type: ignore[arg-type]
        defaults = self._lock_obj.defaults
        model = model or defaults.model
        self._owns_backend = not isinstance(backend, Backend)
        if isinstance(backend, Backend):
            # Only a named model's other parts (relevance, locator) can matter here.
            choice = ModelChoice(backend.kind, None, None, named_models(model), model)
            self._backend = backend
        else:
            where = list(servers) if servers else server
            choice = resolve_model(model, backend=backend or defaults.backend, server=where)
            self._backend = choice.open(api_key)
        self._relevance = self._make_relevance(relevance or defaults.relevance_model, choice)
        self._locator = self._make_locator(locator or defaults.locator_model, choice)
        self.thresholds, self.relevance_source = self._thresholds(thresholds)
        self._owns_store = not isinstance(store, Store)
        self.store = store if isinstance(store, Store) else Store(store)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._setup: Setup | None = None

    # ---- construction helpers ------------------------------------------------------

    def _make_relevance(self, spec: str | None, choice: ModelChoice) -> Relevance:
        if spec == "off" or not self.options.relevance:
            return None
        if spec == "vlm":
            return "vlm"
        from judge.vision.relevance import DEFAULT_CLIP, DEFAULT_SIGLIP, make_relevance

        spec = spec or choice.default_relevance() or "clip"
        # Check the model is here (or reachable) first: a hub id that cannot be reached
        # would otherwise be retried for minutes.
        defaults = {"clip": DEFAULT_CLIP, "siglip": DEFAULT_SIGLIP}
        kind, sep, rest = spec.partition(":")
        where = rest if sep and kind in defaults else defaults.get(spec, spec)
        option = f"--relevance {kind if kind in defaults else 'clip'}:/path/to/model"
        check_available(where, what="relevance model", option=option)
        return make_relevance(spec)

    def _make_locator(self, spec: str | None, choice: ModelChoice) -> Locator | None:
        if spec == "off" or not self.options.center:
            return None
        from judge.vision.locator import DEFAULT_OWLV2, Owlv2Locator

        spec = spec or choice.default_locator() or DEFAULT_OWLV2
        check_available(spec, what="locator model", option="--locator /path/to/owlv2")

        return Owlv2Locator(spec)

    @property
    def _relevance_field(self) -> str:
        """The threshold the relevance scan compares with: `relevance_vlm` for the served
        model's scorer, `relevance` for CLIP/SigLIP."""
        return "relevance_vlm" if self._relevance == "vlm" else "relevance"

    def _thresholds(self, run: ThresholdsInput) -> tuple[Thresholds, str]:
        """The run's thresholds, and where its relevance threshold came from.

        Lowest first: the paper's defaults, the relevance model's own default threshold,
        the policy's `defaults.thresholds`, this run's thresholds (then, per rule, the
        rule's overrides and calibration, in `rule_thresholds`).
        """
        base = Thresholds.model_validate({})
        source = "judge's default"
        from judge.vision.relevance import ClipRelevance, model_threshold

        if isinstance(self._relevance, ClipRelevance):
            value, source = model_threshold(self._relevance)
            base = base.model_copy(update={"relevance": value})
        name = self._relevance_field
        policy = self._lock_obj.defaults.thresholds
        if policy is not None and getattr(policy, name) is not None:
            source = "the policy's defaults.thresholds"
        base = base.merged(policy)
        merged = load_thresholds(run, base)
        if getattr(merged, name) != getattr(base, name):
            source = "this run's thresholds"
        return merged, source

    @property
    def setup(self) -> Setup:
        """The parts every image is judged with, resolved once: the rules, their merged
        thresholds, the options, the prior cache, the relevance scorer, the locator, the
        fill and the crop (also what `judge.bench.naive` copies to judge alike)."""
        if self._setup is None:
            lock = self._lock_obj
            self._setup = Setup(
                backend=self._backend,
                rules=lock.enabled_rules(),
                thresholds=rule_thresholds(lock, self.thresholds),
                relevance_sources=threshold_sources(
                    lock, self._relevance_field, self.relevance_source
                ),
                options=self.options,
                priors=PriorCache(self._backend, self.store),
                relevance=self._relevance,
                locator=self._locator,
            )
        return self._setup

    # ---- properties ----------------------------------------------------------------

    @property
    def backend(self) -> Backend:
        return self._backend

    @property
    def lock(self) -> Lock:
        return self._lock_obj

    # ---- judging ---------------------------------------------------------------------

    async def ajudge(self, image: ImageInput) -> Verdict:
        """The verdict for one image or clip (an unreadable one gives outcome "error").

        A video (MP4/MOV, WebM/MKV, AVI) or an animated GIF, WebP or PNG, given as a path
        or bytes, is judged as a clip (judge.engine.clip): its verdict names the frame
        that decided it and that frame's time (`frame`, `time`, and `clip`)."""
        image_id, source = image if isinstance(image, tuple) else (None, image)
        if isinstance(source, (str, Path, bytes)) and await asyncio.to_thread(
            media_kind, source
        ) != "image":
            verdict = await judge_clip(
                self.setup,
                source,
                image_id,
                lock=self._lock_obj,
                backend=self._backend,
                budget=self._backend.max_image_pixels,
            )
        else:
            verdict = await self._judge_image(image_id, source)
        if self.needs_review and verdict.outcome != "error":
            verdict = verdict.model_copy(update={"needs_review": list(self.needs_review)})
        if verdict.outcome == "error":
            return verdict
        try:
            await asyncio.to_thread(self.store.log_decision, verdict)
        except Exception as error:  # the audit log must not turn a verdict into a crash
            import logging

            logging.getLogger("judge").warning("could not log a decision: %s", error)
        return verdict

    async def _judge_image(self, image_id: str | None, source: ImageSource) -> Verdict:
        started = time.perf_counter()
        try:
            loaded = await asyncio.to_thread(self._load, source, image_id)
        except ImageError as error:
            return unreadable(image_id, source, error)
        load_s = time.perf_counter() - started
        verdicts = [await self._judge_frame(frame, load_s) for frame in loaded]
        return _combine(verdicts)

    def _load(self, source: ImageSource, image_id: str | None) -> list[Any]:
        from judge.images import fit_pixels, load_image

        if isinstance(source, Path):
            source = str(source)
        frames = (
            load_image(source, image_id=image_id, all_frames=True)
            if self.options.all_frames
            else [load_image(source, image_id=image_id)]
        )
        budget = self._backend.max_image_pixels
        out = []
        for frame in frames:
            # Resized once: the relevance scan, the locator and the model see these pixels.
            pixels = fit_pixels(frame.image, budget)
            out.append((frame, pixels))
        return out

    async def _judge_frame(self, item: tuple[Any, Image.Image], load_s: float) -> Verdict:
        loaded, pixels = item
        key = loaded.sha256[:16] + (f"@{loaded.frame}" if loaded.frame is not None else "")
        setup = self.setup
        try:
            result = await judge_image(setup, pixels, key)
        except BackendError as error:
            rules, calls, timings = model_failure(setup.rules, error), Counter[str](), {}
        else:
            rules, calls, timings = result.rules, result.calls, result.timings
        return make_verdict(
            loaded,
            rules,
            backend=self._backend,
            lock=self._lock_obj,
            calls=calls,
            timings={"load": load_s, **timings},
            frame=loaded.frame if self.options.all_frames else None,
            fill=self.options.fill_used(setup.locator),
            size=pixels.size,
        )

    async def astream(
        self, images: Iterable[ImageInput], concurrency: int = 8
    ) -> AsyncIterator[Verdict]:
        """Verdicts as each image finishes (not in input order)."""
        async for _, verdict in self._indexed(images, concurrency):
            yield verdict

    async def _indexed(
        self, images: Iterable[ImageInput], concurrency: int
    ) -> AsyncGenerator[tuple[int, Verdict], None]:
        if concurrency < 1:
            raise InputError("concurrency must be at least 1")
        source = iter(enumerate(images))
        pending: set[asyncio.Task[tuple[int, Verdict]]] = set()

        async def one(index: int, image: ImageInput) -> tuple[int, Verdict]:
            return index, await self.ajudge(image)

        def start() -> None:
            # Pull inputs lazily: memory stays flat however many images there are.
            for index, image in source:
                pending.add(asyncio.ensure_future(one(index, image)))
                return

        for _ in range(concurrency):
            start()
        try:
            while pending:
                done, _ = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    pending.discard(task)
                    start()
                for task in done:
                    yield task.result()
        finally:
            for task in pending:
                task.cancel()

    async def ajudge_many(
        self, images: Iterable[ImageInput], concurrency: int = 8
    ) -> list[Verdict]:
        results: dict[int, Verdict] = {}
        async for index, verdict in self._indexed(images, concurrency):
            results[index] = verdict
        return [results[i] for i in sorted(results)]

    # ---- synchronous wrappers --------------------------------------------------------

    def _run(self, coro: Awaitable[T]) -> T:
        if self._loop is None:
            loop = asyncio.new_event_loop()
            thread = threading.Thread(target=loop.run_forever, name="judge-loop", daemon=True)
            thread.start()
            self._loop, self._thread = loop, thread
        return asyncio.run_coroutine_threadsafe(_await(coro), self._loop).result()

    def judge(self, image: ImageInput) -> Verdict:
        """Synchronous `ajudge`."""
        return self._run(self.ajudge(image))

    def judge_many(self, images: Iterable[ImageInput], concurrency: int = 8) -> list[Verdict]:
        """Verdicts for many images, in input order, `concurrency` of them in flight."""
        return self._run(self.ajudge_many(images, concurrency))

    def stream(self, images: Iterable[ImageInput], concurrency: int = 8) -> Iterator[Verdict]:
        """Synchronous `astream`: verdicts as each image finishes."""
        agen = self._indexed(images, concurrency)
        try:
            while True:
                try:
                    yield self._run(agen.__anext__())[1]
                except StopAsyncIteration:
                    return
        finally:
            self._run(agen.aclose())

    # ---- closing -----------------------------------------------------------------------

    async def aclose(self) -> None:
        if self._owns_backend:
            await self._backend.aclose()
        if self._owns_store:
            self.store.close()

    def close(self) -> None:
        if self._loop is not None:
            self._run(self.aclose())
            self._loop.call_soon_threadsafe(self._loop.stop)
            if self._thread is not None:
                self._thread.join(timeout=10)
            self._loop.close()
            self._loop = None
        else:
            asyncio.run(self.aclose())

    def __enter__(self) -> Judge:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    async def __aenter__(self) -> Judge:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


async def _await(awaitable: Awaitable[T]) -> T:
    return await awaitable


def _combine(frames: list[Verdict]) -> Verdict:
    """One verdict for an animation: its first unsafe frame, else its first undecided
    frame, else its first frame (all safe)."""
    if len(frames) == 1:
        return frames[0]
    for wanted in ("unsafe", "undecided", "error"):
        for verdict in frames:
            if verdict.outcome == wanted:
                return verdict
    return frames[0]
