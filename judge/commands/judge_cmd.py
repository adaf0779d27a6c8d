"""`judge IMAGE... --constitution POLICY`: the default command (registered as `run`).

Exit codes come from the verdicts: 0 every image safe, 1 some image unsafe, 3 some image
undecided (a model failure or an answer that stayed uncertain), 2 an image could not be
read (and nothing worse happened). Under `--fail-on undecided` an undecided image takes
precedence over an unsafe one (exit 3); either way an undecided image never exits 0.

`--jsonl FILE` appends one line per image as each finishes, flushed and fsynced. On a
re-run the file is read first: a torn last line (a run killed mid-write) is cut off, and
images already recorded are skipped, so a killed run resumes with nothing lost or
duplicated.
"""

from __future__ import annotations

import asyncio
import glob
import json
import os
from collections.abc import Iterable, Sequence
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from judge.commands.app import app
from judge.engine.judge import Judge, make_backend
from judge.engine.procedure import JudgeOptions
from judge.engine.verdict import Verdict
from judge.errors import InputError

IMAGE_SUFFIXES = frozenset(
    {".png", ".jpg", ".jpeg", ".gif", ".webp", ".bmp", ".tif", ".tiff", ".jfif"}
)
_GLOB_CHARS = set("*?[")


class FailOn(StrEnum):
    unsafe = "unsafe"
    undecided = "undecided"


# ---- inputs ------------------------------------------------------------------------------


def expand_inputs(args: Sequence[str]) -> list[str]:
    """Files as given, directories walked (image files, sorted), globs expanded; each
    path once, in order. A glob or directory with no image is an InputError."""
    out: list[str] = []
    for arg in args:
        path = Path(arg)
        if path.is_dir():
            found = sorted(
                str(p)
                for p in path.rglob("*")
                if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
            )
            if not found:
                raise InputError(f"{arg}: the folder holds no image files")
            out += found
        elif not path.exists() and _GLOB_CHARS & set(arg):
            found = sorted(p for p in glob.glob(arg, recursive=True) if Path(p).is_file())
            if not found:
                raise InputError(f"{arg}: no file matches this pattern")
            out += found
        else:
            # A missing file is judged as an "error" verdict, not a crash of the batch.
            out.append(arg)
    return list(dict.fromkeys(out))


# ---- the JSONL log -------------------------------------------------------------------------


def resume_jsonl(path: Path) -> set[str]:
    """Image ids already in `path`; a torn last line is cut off first."""
    if not path.exists():
        return set()
    with open(path, "rb+") as handle:
        data = handle.read()
        end = data.rfind(b"\n") + 1
        if end < len(data):  # the last line never got its newline: a killed write
            handle.truncate(end)
            handle.flush()
            os.fsync(handle.fileno())
    done: set[str] = set()
    for number, line in enumerate(data[:end].splitlines(), 1):
        if not line.strip():
            continue
        try:
            done.add(str(json.loads(line)["image_id"]))
        except (ValueError, KeyError, TypeError) as error:
            raise InputError(
                f"{path}:{number}: not a verdict line ({error}); move the file away"
            ) from None
    return done


class JsonlWriter:
    """Appends whole lines: one write call each, flushed and fsynced."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def write(self, verdict: Verdict) -> None:
        line = (verdict.model_dump_json() + "\n").encode("utf-8")
        written = 0
        while written < len(line):
            written += os.write(self._fd, line[written:])
        os.fsync(self._fd)

    def close(self) -> None:
        os.close(self._fd)


# ---- output --------------------------------------------------------------------------------


def exit_code(verdicts: Iterable[Verdict], fail_on: FailOn = FailOn.unsafe) -> int:
    outcomes = {v.outcome for v in verdicts}
    order = [("unsafe", 1), ("undecided", 3)]
    if fail_on is FailOn.undecided:
        order.reverse()
    for outcome, code in order:
        if outcome in outcomes:
            return code
    return 2 if "error" in outcomes else 0


_STYLE = {"safe": "green", "unsafe": "bold red", "undecided": "yellow", "error": "magenta"}


def _summary_table(verdicts: Sequence[Verdict]) -> Table:
    table = Table(title=None, show_lines=False)
    for column in ("image", "verdict", "violated", "undecided / error"):
        table.add_column(column, overflow="fold")
    for v in verdicts:
        style = _STYLE.get(v.outcome, "")
        other = v.error or ", ".join(v.undecided)
        table.add_row(v.image_id, f"[{style}]{v.outcome}[/]", ", ".join(v.violated), other)
    return table


def _fmt(value: float | None, signed: bool = False) -> str:
    if value is None:
        return "-"
    return f"{value:+.3f}" if signed else f"{value:.3f}"


def _evidence_table(verdict: Verdict) -> Table:
    """One row per alternative: M(x,c) - M(None,c) = d against the band [a1, a2], the
    masked score against beta, the box, and the rationale or the reason it is undecided."""
    table = Table(title=f"{verdict.image_id}: {verdict.outcome}", title_justify="left")
    for column in ("rule", "pre", "statement", "result"):
        table.add_column(column, overflow="fold")
    table.add_column("M - prior = d", no_wrap=True)
    table.add_column("[a1, a2]", no_wrap=True)
    table.add_column("masked", no_wrap=True)
    table.add_column("box", overflow="fold")
    table.add_column("rationale / reason", overflow="fold", ratio=2)
    for rule in verdict.rules:
        relevance = "" if rule.relevance is None else f"\nrelevance {rule.relevance:.2f}"
        head = f"{rule.rule_id}\n{rule.outcome}{relevance}"
        if not rule.preconditions:
            table.add_row(head, "", "", "", "", "", "", "", rule.reason or "")
            continue
        for pre in rule.preconditions:
            for alt in pre.alternatives:
                box = ""
                if alt.box is not None:
                    box = f"{alt.box.label} {alt.box.confidence:.2f}"
                    box += " (crop)" if alt.cropped else ""
                score = f"{_fmt(alt.m)} - {_fmt(alt.prior)} = {_fmt(alt.d, True)}"
                band = f"[{_fmt(alt.a1, True)}, {_fmt(alt.a2, True)}]"
                masked = "" if alt.masked_m is None else f"{alt.masked_m:.3f} (β {alt.beta})"
                mark = "*" if rule.decisive_precondition == pre.index else ""
                result = f"[{_alt_style(alt.outcome)}]{alt.outcome}[/]\n{alt.stage}"
                table.add_row(
                    head,
                    f"{pre.index + 1}{mark} {pre.outcome}",
                    alt.statement,
                    result,
                    score,
                    band,
                    masked,
                    box,
                    alt.rationale or alt.error or "",
                )
                head = ""
        table.add_section()
    return table


def _alt_style(outcome: str) -> str:
    return {"met": "red", "not_met": "green", "undecided": "yellow"}.get(outcome, "dim")


# ---- the command ---------------------------------------------------------------------------


@app.command("run")
def run(
    images: Annotated[
        list[str], typer.Argument(help="Image files, folders (searched recursively) or globs.")
    ],
    constitution: Annotated[
        Path, typer.Option("--constitution", "-c", help="The policy (YAML) or its lock.")
    ],
    model: Annotated[
        str | None, typer.Option(help="Judge model id or folder; 'toy' for the toy models.")
    ] = None,
    backend: Annotated[
        str | None, typer.Option(help="Back end: vllm-server, vllm, hf (default: by --server).")
    ] = None,
    server: Annotated[
        str | None, typer.Option(help="OpenAI-compatible (vLLM) server URL.", envvar="JUDGE_SERVER")
    ] = None,
    relevance: Annotated[
        str | None,
        typer.Option(help="Relevance scorer: clip:<id|path>, siglip:<id|path>, vlm or off."),
    ] = None,
    locator: Annotated[str | None, typer.Option(help="OWLv2 id or folder, or off.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON document.")] = False,
    jsonl: Annotated[
        Path | None,
        typer.Option(help="Append one JSON line per image as each finishes; resumes a run."),
    ] = None,
    explain: Annotated[
        bool, typer.Option("--explain", help="Show each precondition's evidence.")
    ] = False,
    fail_on: Annotated[
        FailOn, typer.Option(help="Which outcome decides the exit code first.")
    ] = FailOn.unsafe,
    first_violation: Annotated[
        bool, typer.Option("--first-violation", help="Stop an image at its first violated rule.")
    ] = False,
    no_relevance: Annotated[
        bool, typer.Option("--no-relevance", help="Judge every rule (no relevance scan).")
    ] = False,
    no_center: Annotated[
        bool, typer.Option("--no-center", help="Skip the central-region check.")
    ] = False,
    no_cascade: Annotated[
        bool, typer.Option("--no-cascade", help="Skip the reasoning stage.")
    ] = False,
    fill: Annotated[
        str,
        typer.Option(help="How the central-region check removes a box: mean, blur or black."),
    ] = "mean",
    thresholds: Annotated[
        Path | None, typer.Option(help="YAML/JSON file of threshold overrides.")
    ] = None,
    compile_lock: Annotated[
        bool, typer.Option("--compile", help="Compile a missing or stale lock first.")
    ] = False,
    all_frames: Annotated[
        bool, typer.Option("--all-frames", help="Judge every frame of animated images.")
    ] = False,
    concurrency: Annotated[int, typer.Option(min=1, max=1024, help="Images in flight.")] = 8,
    store: Annotated[
        Path | None, typer.Option(help="SQLite store (default: <cache>/judge.sqlite3).")
    ] = None,
) -> None:
    """Judge images against a constitution: which rules does each image violate?"""
    paths = expand_inputs(images)
    options = JudgeOptions(
        relevance=not no_relevance,
        center=not no_center,
        cascade=not no_cascade,
        first_violation=first_violation,
        all_frames=all_frames,
        fill=fill,  # type: ignore[arg-type]  # JudgeOptions checks the name
    )
    policy = _policy(constitution, compile_lock, model, backend, server)
    done = resume_jsonl(jsonl) if jsonl else set()
    todo = [p for p in paths if p not in done]
    writer = JsonlWriter(jsonl) if jsonl else None
    verdicts: dict[str, Verdict] = {}
    err = Console(stderr=True)
    try:
        with (
            Judge(
                policy,
                model=model,
                backend=backend,
                server=server,
                relevance=relevance,
                locator=locator,
                thresholds=thresholds,
                options=options,
                store=store,
            ) as judge,
            _progress(err, len(todo)) as advance,
        ):
            for verdict in judge.stream(todo, concurrency=concurrency):
                if writer:
                    writer.write(verdict)
                verdicts[verdict.image_id] = verdict
                advance()
    finally:
        if writer:
            writer.close()
    if jsonl:
        # The output and exit code cover the whole run, images judged before a resume too.
        ordered = _read_all(jsonl, paths)
    else:
        ordered = [verdicts[p] for p in todo if p in verdicts]
    _print(ordered, as_json=as_json, explain=explain, skipped=len(paths) - len(todo))
    code = exit_code(ordered, fail_on)
    if code:
        raise typer.Exit(code)


def _policy(
    path: Path, compile_lock: bool, model: str | None, kind: str | None, server: str | None
) -> Any:
    from judge.constitution import Constitution

    policy = Constitution.load(path)
    if not compile_lock or policy.lock_status()[0] == "fresh":
        return policy

    async def build() -> None:
        engine = None
        pending = policy.pending()
        chosen = model or policy.spec.defaults.model
        if pending and (chosen is not None or server is not None):
            engine = make_backend(chosen, kind or policy.spec.defaults.backend, server)
        elif any(rule.preconditions is None for rule in pending):
            # Hand-written chains compile without a model; the others need one.
            raise InputError("--compile needs a compiler model: pass --model or --server")
        try:
            await policy.acompile(engine)
        finally:
            if engine is not None:
                await engine.aclose()

    asyncio.run(build())
    policy.save_lock()
    return policy


def _read_all(path: Path, order: Sequence[str]) -> list[Verdict]:
    found: dict[str, Verdict] = {}
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            if line.strip():
                verdict = Verdict.model_validate_json(line)
                found[verdict.image_id] = verdict
    return [found[p] for p in order if p in found] + [
        v for k, v in found.items() if k not in set(order)
    ]


class _progress:
    """A transient progress bar on stderr for more than one image; a no-op otherwise."""

    def __init__(self, console: Console, total: int) -> None:
        self.total = total
        self.console = console
        self.bar: Any = None

    def __enter__(self) -> Any:
        if self.total <= 1:
            return lambda: None
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

        self.bar = Progress(
            "judging",
            BarColumn(),
            MofNCompleteColumn(),
            TimeRemainingColumn(),
            console=self.console,
            transient=True,
        )
        self.bar.start()
        task = self.bar.add_task("judging", total=self.total)
        return lambda: self.bar.advance(task)

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.stop()


def _print(verdicts: Sequence[Verdict], *, as_json: bool, explain: bool, skipped: int) -> None:
    counts = {
        k: sum(v.outcome == k for v in verdicts) for k in ("safe", "unsafe", "undecided", "error")
    }
    if as_json:
        document = {
            "summary": {"images": len(verdicts), **counts},
            "verdicts": [v.model_dump(mode="json") for v in verdicts],
        }
        typer.echo(json.dumps(document, indent=2))
        return
    out = Console(highlight=False, soft_wrap=False)
    if not out.is_terminal:
        out.width = max(out.width, 160)  # files and pipes: room for the evidence columns
    out.print(_summary_table(verdicts))
    if explain:
        for verdict in verdicts:
            out.print(_evidence_table(verdict))
    note = f" ({skipped} already in the JSONL file)" if skipped else ""
    out.print(
        f"{len(verdicts)} images{note}: {counts['safe']} safe, {counts['unsafe']} unsafe, "
        f"{counts['undecided']} undecided, {counts['error']} unreadable"
    )
