"""`judge batch`: judge many images on Ray Data, into resumable Parquet output.

    sources (driver: paths, Parquet row groups)
      -> flat_map(load_source)       workers read bytes, sha256, mark what OUT holds
      -> map_batches(JudgeActor)     N actors, each with one Judge (GPU or server fleet)
      -> iter_batches in the driver  atomic Parquet parts, progress bar

The driver writes the output itself (results are small: one verdict each), so each part
is renamed into place only when whole; see judge.batch.output for why that makes a rerun
after SIGKILL lose and repeat nothing. Skipped images travel as tiny marker rows so the
progress bar's total is exact.

A run holds a lock on OUT from before it reads it until its last part is written, so a
second run on the same OUT is refused. A rerun skips the (id, sha256) keys OUT holds,
except those whose outcome is retried (`RETRY_DEFAULT`: undecided and error, so one fleet
outage is not final); the new rows replace the old ones (`compact`). SIGINT and SIGTERM
write the rows already judged before the run stops (`Interrupted`).
"""

from __future__ import annotations

import functools
import logging
import os
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from judge.batch.actor import ActorSpec, JudgeActor
from judge.batch.inputs import discover, load_source
from judge.batch.output import Key, PartWriter, compact, lock_output, parts, read_done
from judge.errors import BackendError, InputError, JudgeError

log = logging.getLogger(__name__)


RETRY_CHOICES = ("undecided", "error")
# Fail closed: a row that was not decided is judged again by a rerun unless told otherwise.
RETRY_DEFAULT = frozenset(RETRY_CHOICES)


def parse_retry(value: str) -> frozenset[str]:
    """`--retry`: "undecided", "error", both comma-separated, or "none".

    Raises:
        InputError: another word.
    """
    words = {w.strip().lower() for w in value.split(",") if w.strip()}
    if words == {"none"}:
        return frozenset()
    if not words or not words <= set(RETRY_CHOICES):
        raise InputError(
            f"--retry {value!r}: give undecided, error, both (undecided,error) or none"
        )
    return frozenset(words)


class Interrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM stopped the run after the rows already judged were written."""

    def __init__(self, signum: int) -> None:
        self.signum = signum
        super().__init__(signal.Signals(signum).name)


@dataclass
class BatchOptions:
    """One `judge batch` run.

    Attributes:
        ray: "local" (start Ray here), a cluster address ("ray://host:10001", "auto",
            "host:6379"), or None: `RAY_ADDRESS` if set, else local. A Ray already
            initialised in this process is used as it is.
        actors: judge actors (each one Judge).
        batch_size: images per actor call.
        num_cpus, num_gpus: resources of each actor (num_gpus 1: one GPU per actor for the
            in-process vLLM or transformers engines).
        part_rows, part_seconds: a part is written after this many rows or seconds.
        retry: the outcomes in OUT that a rerun judges again (of RETRY_CHOICES); the
            other rows it skips.
    """

    inputs: list[str]
    out: Path
    spec: ActorSpec
    ray: str | None = None
    actors: int = 1
    batch_size: int = 16
    num_cpus: float = 1.0
    num_gpus: float = 0.0
    part_rows: int = 256
    part_seconds: float = 10.0
    allow_outside: bool = False
    progress: bool = True
    retry: frozenset[str] = RETRY_DEFAULT


@dataclass
class BatchReport:
    """What a run did, and what the whole output folder holds now."""

    out: Path
    images: int = 0  # images named by the inputs
    judged: int = 0  # judged in this run
    skipped: int = 0  # already in the output
    retried: int = 0  # judged again: their outcome was retried
    retry: frozenset[str] = RETRY_DEFAULT
    seconds: float = 0.0
    parts: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)  # this run
    totals: Counter[str] = field(default_factory=Counter)  # the whole output

    @property
    def images_per_s(self) -> float:
        return self.judged / self.seconds if self.seconds > 0 else 0.0

    def exit_code(self) -> int:
        """As `judge`'s: 2 an unreadable file, 3 undecided, 1 unsafe, else 0."""
        for outcome, code in (("error", 2), ("undecided", 3), ("unsafe", 1)):
            if self.totals.get(outcome):
                return code
        return 0

    def summary(self) -> str:
        shown = ", ".join(f"{self.outcomes[k]} {k}" for k in sorted(self.outcomes)) or "none"
        again = f", {self.retried} of them again" if self.retried else ""
        text = (
            f"{self.judged} images judged in {self.seconds:.1f} s "
            f"({self.images_per_s:.2f} images/s: {shown}{again}); {self.skipped} already in "
            f"{self.out}; the output holds {sum(self.totals.values())} rows in "
            f"{len(parts(self.out)) if self.out.exists() else 0} parts"
        )
        # Rows that were not decided are never left unmentioned.
        left = [f"{self.totals[k]} {k}" for k in RETRY_CHOICES if self.totals.get(k)]
        if left:
            skipped = [k for k in RETRY_CHOICES if self.totals.get(k) and k not in self.retry]
            how = (
                f"rerun with --retry {','.join(RETRY_CHOICES)} to judge them again"
                if skipped
                else "a rerun judges them again"
            )
            text += f"; {' and '.join(left)} rows not decided: {how}"
        return text


def _load(source: dict[str, Any], skip: frozenset[Key]) -> Any:
    for row in load_source(source):
        done = (row["id"], row["sha256"]) in skip
        if done:
            row = {**row, "data": None}
        yield {**row, "skip": done}


def connect(address: str | None) -> Any:
    """Ray, initialised here ("local") or connected to a cluster."""
    import ray

    if ray.is_initialized():
        return ray
    address = address or os.environ.get("RAY_ADDRESS") or "local"
    kwargs: dict[str, Any] = {
        "include_dashboard": False,
        "logging_level": logging.WARNING,
        "configure_logging": True,
    }
    try:
        if address == "local":
            ray.init(**kwargs)
        else:
            ray.init(address=address, **kwargs)
    except (ConnectionError, ValueError, RuntimeError) as error:
        raise BackendError(
            f"cannot start or reach Ray at {address!r}: {error}",
            hint="give --ray local, or the address of a running cluster (ray status shows it)",
        ) from None
    return ray


def _total(sources: list[dict[str, Any]]) -> int:
    import pyarrow.parquet as pq

    total = 0
    for source in sources:
        if source["row_group"] < 0:
            total += 1
        else:
            meta = pq.ParquetFile(source["path"]).metadata
            total += meta.row_group(int(source["row_group"])).num_rows
    return total


def _pipeline(
    ray: Any, opts: BatchOptions, sources: list[dict[str, Any]], skip: frozenset[Key]
) -> Iterator[list[dict[str, Any]]]:
    """The actors' result rows, batch by batch (skipped images as "skipped" markers)."""
    for batch in _dataset(ray, opts, sources, skip).iter_batches(
        batch_size=None, batch_format="pyarrow"
    ):
        yield batch.to_pylist()


def _dataset(
    ray: Any, opts: BatchOptions, sources: list[dict[str, Any]], skip: frozenset[Key]
) -> Any:
    from ray.data import ActorPoolStrategy, DataContext

    context = DataContext.get_current()
    context.enable_progress_bars = False  # ours counts images, not blocks
    context.print_on_execution_start = False
    # Ray Data's own lines (execution plans, "progress bars disabled") are not ours to show.
    logging.getLogger("ray.data").setLevel(logging.ERROR)
    load = functools.partial(_load, skip=skip)
    ds = ray.data.from_items(sources, override_num_blocks=max(1, min(len(sources), 64)))
    ds = ds.flat_map(load)
    return ds.map_batches(
        JudgeActor,
        fn_constructor_kwargs={"spec": opts.spec},
        batch_size=opts.batch_size,
        batch_format="pyarrow",
        compute=ActorPoolStrategy(size=opts.actors),
        num_cpus=opts.num_cpus,
        num_gpus=opts.num_gpus or None,
    )


def _unwrap(error: Exception) -> JudgeError:
    """The judge error behind a Ray failure (an actor that could not load its model)."""
    seen: Exception | None = error
    for _ in range(8):
        if seen is None:
            break
        if isinstance(seen, JudgeError):
            return seen
        seen = getattr(seen, "cause", None) or seen.__cause__  # type: ignore[assignment]
    text = str(error).strip().splitlines()
    return BackendError(f"the Ray job failed: {text[-1] if text else type(error).__name__}")


def run_batch(opts: BatchOptions, console: Any | None = None) -> BatchReport:
    """Judge every image of `opts.inputs` that `opts.out` does not hold decided.

    Raises:
        InputError: bad inputs, an output folder of another constitution, or one another
            run is using.
        JudgeError: the judges could not start (model, server), with judge's own message.
        Interrupted: SIGINT or SIGTERM, after the rows already judged were written.
    """
    if opts.actors < 1 or opts.batch_size < 1:
        raise InputError("--actors and --batch-size must be at least 1")
    if not opts.retry <= set(RETRY_CHOICES):
        raise InputError(f"retry: only {', '.join(RETRY_CHOICES)} can be retried")
    lock = opts.spec.lock
    lock_hash = lock.lock_hash()
    sources = discover(opts.inputs, allow_outside=opts.allow_outside)
    # Locked before anything in OUT is read or removed: a second run is refused whole.
    with lock_output(opts.out):
        done = read_done(opts.out, lock_hash)
        report = BatchReport(out=opts.out, images=_total(sources), retry=opts.retry)
        writer = PartWriter(opts.out, [r.id for r in lock.enabled_rules()], lock_hash)
        ray = connect(opts.ray)
        try:
            with _InterruptOnSignals():
                _drive(ray, opts, sources, done.skip(opts.retry), done.outcomes, writer, report,
                       console)
        finally:
            report.totals = compact(opts.out)  # also after a failure: no key twice
        report.parts = writer.parts
    return report


def _drive(
    ray: Any,
    opts: BatchOptions,
    sources: list[dict[str, Any]],
    skip: frozenset[Key],
    before: dict[Key, str],
    writer: PartWriter,
    report: BatchReport,
    console: Any | None,
) -> None:
    """Run the pipeline, writing its rows as parts; whatever stops it, the rows already
    judged are written first."""
    started = time.perf_counter()
    pending: list[dict[str, Any]] = []
    last_flush = time.monotonic()

    def flush() -> None:
        nonlocal pending, last_flush
        writer.write(pending)
        pending, last_flush = [], time.monotonic()

    with _Progress(console, report.images, opts.progress) as progress:
        try:
            for rows in _pipeline(ray, opts, sources, skip):
                for row in rows:
                    if row["outcome"] == "skipped":
                        report.skipped += 1
                        continue
                    pending.append(row)
                    report.judged += 1
                    report.retried += (row["id"], row["sha256"]) in before
                    report.outcomes[row["outcome"]] += 1
                if len(pending) >= opts.part_rows or (
                    pending and time.monotonic() - last_flush >= opts.part_seconds
                ):
                    flush()
                progress.update(len(rows), report.judged, time.perf_counter() - started)
        except Exception as error:
            flush()  # what was judged is kept
            if not isinstance(error, JudgeError) and type(error).__module__.startswith("ray"):
                raise _unwrap(error) from None
            raise
        except BaseException:  # Interrupted (SIGINT, SIGTERM), SystemExit: the same
            flush()
            raise
        else:
            flush()
        finally:
            report.seconds = time.perf_counter() - started


class _InterruptOnSignals:
    """SIGINT and SIGTERM raise `Interrupted` in the main thread (the driver's loop) while
    inside; a second signal gets the handler from before (stop at once: parts stay whole)."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.saved: dict[int, Any] = {}

    def _raise(self, signum: int, frame: Any) -> None:
        self._restore()
        raise Interrupted(signum)

    def _restore(self) -> None:
        for signum, handler in self.saved.items():
            signal.signal(signum, handler)
        self.saved.clear()

    def __enter__(self) -> None:
        if threading.current_thread() is threading.main_thread():
            handler: Callable[[int, Any], None] = self._raise
            for signum in self.SIGNALS:
                self.saved[signum] = signal.signal(signum, handler)

    def __exit__(self, *exc: object) -> None:
        self._restore()


class _Progress:
    """A progress bar on stderr: images done (judged or skipped) and judged images/s."""

    def __init__(self, console: Any | None, total: int, enabled: bool) -> None:
        self.console, self.total, self.enabled = console, total, enabled and console is not None
        self.bar: Any = None
        self.task: Any = None

    def __enter__(self) -> _Progress:
        if self.enabled:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

            self.bar = Progress(
                "judging",
                BarColumn(),
                MofNCompleteColumn(),
                "[cyan]{task.fields[rate]} images/s",
                TimeElapsedColumn(),
                console=self.console,
                transient=True,
            )
            self.bar.start()
            self.task = self.bar.add_task("judging", total=self.total, rate="-")
        return self

    def update(self, advance: int, judged: int, seconds: float) -> None:
        if self.bar is not None:
            rate = f"{judged / seconds:.2f}" if seconds > 0 else "-"
            self.bar.update(self.task, advance=advance, rate=rate)

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.stop()
