"""`judge IMAGE... --constitution POLICY`: the default command (registered as `run`).

Exit codes come from the verdicts, the first that applies in this order:

    2  some file could not be read (it was not judged at all)
    3  some image is undecided (a model failure, or an answer that stayed uncertain)
    1  some image is unsafe
    0  every image was judged, and every one is safe

A run with a file left unjudged never exits 0 or 1, so a CI gate that reads 0 as "all
safe" and 1 as "violations found" never takes an incomplete run for a complete one; the
output (table, `--json` summary) says what was found in the files that were judged.
Files are checked (present, readable, an image format) before any model loads: a run of
only unreadable files loads nothing and exits 2.

`--jsonl FILE` appends one line per image as each finishes, flushed and fsynced. On a
re-run the file is read first: a torn last line (a run killed mid-write) is cut off, and
images already recorded are skipped, so a killed run resumes with nothing lost or
duplicated.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape

from judge.commands.app import app
from judge.commands.display import LEGEND, display_names, explain_trees, summary_table
from judge.commands.model_options import (
    BackendOption,
    LocatorOption,
    ModelOption,
    RelevanceOption,
    ServersOption,
    server_arg,
)
from judge.engine.judge import Judge
from judge.engine.procedure import JudgeOptions
from judge.engine.verdict import Verdict, partly_undecided, unreadable
from judge.errors import InputError

# Named again explicitly: `judge diff` takes them from here too.
from judge.inputs import expand_inputs as expand_inputs
from judge.inputs import precheck as precheck
from judge.video.options import DEFAULT_FPS, DEFAULT_MAX_FRAMES, VideoOptions

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


EXIT_PRECEDENCE = (("error", 2), ("undecided", 3), ("unsafe", 1))


def exit_code(verdicts: Iterable[Verdict]) -> int:
    """The run's exit code: the first of `EXIT_PRECEDENCE` that some verdict has, else 0.

    Unjudged files (unreadable, undecided) come before unsafe images, so no run with a
    file left unjudged exits 0 or 1."""
    outcomes = {v.outcome for v in verdicts}
    for outcome, code in EXIT_PRECEDENCE:
        if outcome in outcomes:
            return code
    return 0


# ---- the command ---------------------------------------------------------------------------


@app.command("run")
def run(
    images: Annotated[
        list[str],
        typer.Argument(help="Image or video files, folders (searched recursively) or globs."),
    ],
    constitution: Annotated[
        Path, typer.Option("--constitution", "-c", help="The policy (YAML) or its lock.")
    ],
    model: ModelOption = None,
    backend: BackendOption = None,
    server: ServersOption = None,
    relevance: RelevanceOption = None,
    locator: LocatorOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON document.")] = False,
    jsonl: Annotated[
        Path | None,
        typer.Option(
            help="Append one JSON line per image as each finishes; resumes a run (default: "
            "no file)."
        ),
    ] = None,
    explain: Annotated[
        bool, typer.Option("--explain", help="Show each precondition's evidence.")
    ] = False,
    allow_unreviewed: Annotated[
        bool,
        typer.Option(
            "--allow-unreviewed",
            help="Judge even when compiled rules need review; verdicts then name them.",
        ),
    ] = False,
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
        Path | None,
        typer.Option(
            help="YAML/JSON file of threshold overrides (default: the paper's thresholds, "
            "then the policy's)."
        ),
    ] = None,
    compile_lock: Annotated[
        bool, typer.Option("--compile", help="Compile a missing or stale lock first.")
    ] = False,
    all_frames: Annotated[
        bool,
        typer.Option("--all-frames", help="Judge every frame of clips and animated images."),
    ] = False,
    fps: Annotated[
        float,
        typer.Option(
            min=0.001, max=1000,
            help="Clips: frames sampled per second, plus a frame at each scene change.",
        ),
    ] = DEFAULT_FPS,
    max_frames: Annotated[
        int,
        typer.Option(
            min=1, help="Clips: most frames judged; a longer clip is sampled more sparsely."
        ),
    ] = DEFAULT_MAX_FRAMES,
    scan_all: Annotated[
        bool,
        typer.Option(
            "--scan-all",
            help="Clips: judge every sampled frame (default: stop once the verdict is decided).",
        ),
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
        video=VideoOptions(fps=fps, max_frames=max_frames, scan_all=scan_all),
    )
    done = resume_jsonl(jsonl) if jsonl else set()
    todo = [p for p in paths if p not in done]
    # Before any model loads: a missing or non-image file is an error verdict at once.
    problems = {p: precheck(p) for p in todo}
    verdicts: dict[str, Verdict] = {
        p: unreadable(p, p, error) for p, error in problems.items() if error is not None
    }
    readable = [p for p in todo if problems[p] is None]
    # Compiling may start a model too: only when there is something to judge.
    servers = server_arg(server)  # several: one fleet (judge.models.fleet)
    policy = _policy(constitution, compile_lock and bool(readable), model, backend, servers)
    writer = JsonlWriter(jsonl) if jsonl else None
    err = Console(stderr=True)
    source: str | None = None
    try:
        for verdict in verdicts.values():
            if writer:
                writer.write(verdict)
        if readable:
            with (
                Judge(
                    policy,
                    model=model,
                    backend=backend,
                    server=servers,
                    relevance=relevance,
                    locator=locator,
                    thresholds=thresholds,
                    options=options,
                    store=store,
                    allow_unreviewed=allow_unreviewed,
                ) as judge,
                _progress(err, len(readable)) as advance,
            ):
                source = judge.relevance_source
                for verdict in judge.stream(readable, concurrency=concurrency):
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
    _print(
        ordered,
        as_json=as_json,
        explain=explain,
        skipped=len(paths) - len(todo),
        relevance_source=source,
    )
    code = exit_code(ordered)
    if code:
        raise typer.Exit(code)


def _policy(
    path: Path, compile_lock: bool, model: str | None, kind: str | None, server: str | None
) -> Any:
    from judge.commands.constitution import compile_policy, print_report
    from judge.constitution import Constitution
    from judge.constitution.loader import require_enabled_rules

    policy = Constitution.load(path)
    # Before any compile or model load: a policy with no enabled rule judges nothing.
    require_enabled_rules(policy.spec.rules, str(path))
    if not compile_lock or policy.lock_status()[0] == "fresh":
        return policy
    report = asyncio.run(
        compile_policy(policy, model=model, server=server, backend=kind, require_model=False)
    )
    # The same report as `judge compile`, on stderr so that --json output stays one document.
    print_report(report, policy.save_lock(), err=True)
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

        # The models load lazily, with the first image: say so, or the bar looks stuck.
        self.bar = Progress(
            "[progress.description]{task.description}",
            BarColumn(),
            MofNCompleteColumn(),
            TimeRemainingColumn(),
            console=self.console,
            transient=True,
        )
        self.bar.start()
        task = self.bar.add_task("loading the models, then judging", total=self.total)

        def advance() -> None:
            self.bar.update(task, advance=1, description="judging")

        return advance

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.stop()


def summarise(verdicts: Sequence[Verdict], relevance_source: str | None = None) -> dict[str, Any]:
    """The run's counts: unreadable files apart from the images judged, the safe images
    with a rule decided despite an undecided precondition, and how many rule checks the
    relevance scan skipped, at which thresholds, from where (the verdicts say; verdicts
    from before they did fall back to `relevance_source`)."""
    judged = [v for v in verdicts if v.outcome != "error"]
    scanned = [r for v in judged for r in v.rules if r.relevance_threshold is not None]
    thresholds = sorted({r.relevance_threshold for r in scanned if r.relevance_threshold})
    sources = sorted({r.relevance_threshold_source or "" for r in scanned} - {""})
    return {
        "files": len(verdicts),
        "images": len(judged),
        **{k: sum(v.outcome == k for v in judged) for k in ("safe", "unsafe", "undecided")},
        "safe_with_undecided_precondition": sum(
            v.outcome == "safe" and bool(partly_undecided(v.rules)) for v in judged
        ),
        "unreadable": len(verdicts) - len(judged),
        "rule_checks": sum(len(v.rules) for v in judged),
        "irrelevant": sum(r.outcome == "irrelevant" for r in scanned),
        "relevance_thresholds": thresholds,
        "relevance_threshold_source": (" / ".join(sources) or relevance_source)
        if scanned
        else None,
        "needs_review": sorted({rule for v in judged for rule in v.needs_review}),
        "exit_code": exit_code(verdicts),
    }


def summary_line(summary: dict[str, Any], skipped: int = 0) -> str:
    """One line: what was judged, what could not be, and what the relevance scan skipped."""
    note = f" ({skipped} already in the JSONL file)" if skipped else ""
    images = "1 image" if summary["images"] == 1 else f"{summary['images']} images"
    partly = summary.get("safe_with_undecided_precondition", 0)
    partly_note = f" ({partly} with an undecided precondition)" if partly else ""
    line = (
        f"{images} judged{note}: {summary['safe']} safe{partly_note}, "
        f"{summary['unsafe']} unsafe, {summary['undecided']} undecided"
    )
    if summary["unreadable"]:
        line += f"; {summary['unreadable']} unreadable file(s) NOT judged"
    values = summary["relevance_thresholds"]
    if values:
        shown = "/".join(f"{t:.3f}" for t in values)
        source = summary["relevance_threshold_source"]
        line += (
            f"; {summary['irrelevant']} of {summary['rule_checks']} rule checks skipped as "
            f"irrelevant (relevance at or below {shown}{f', {source}' if source else ''})"
        )
    if summary["needs_review"]:
        line += (
            f"; judged with {len(summary['needs_review'])} rule(s) that NEED REVIEW: "
            + ", ".join(summary["needs_review"])
        )
    return line


def _print(
    verdicts: Sequence[Verdict],
    *,
    as_json: bool,
    explain: bool,
    skipped: int,
    relevance_source: str | None = None,
) -> None:
    summary = summarise(verdicts, relevance_source)
    if as_json:
        document = {
            "summary": summary,
            "verdicts": [v.model_dump(mode="json") for v in verdicts],
        }
        typer.echo(json.dumps(document, indent=2))
        return
    out = Console(highlight=False, soft_wrap=False)
    # A terminal says its width; a pipe or file takes COLUMNS (rich reads it), else 80.
    names = display_names([v.image_id for v in verdicts], max(20, out.width // 2))
    if verdicts:
        out.print(summary_table(verdicts, out.width))
    if explain:
        for tree in explain_trees(verdicts, names):
            out.print(tree)
        out.print(f"[dim]{escape(LEGEND)}[/]")
    out.print(escape(summary_line(summary, skipped)))
