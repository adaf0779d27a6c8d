"""What `judge` prints for people: the verdict table and the `--explain` tree.

Everything here fits the console's width, down to 80 columns and below: paths are
shortened from the middle (the file name stays whole), rule ids are never broken inside a
word (a column too narrow for one ends it with "…"), and a column that would be empty for
every image is left out. The console is rich's: on a terminal it has colours, in a pipe
or a file it is plain text as wide as `COLUMNS` says (80 when unset).
"""

from __future__ import annotations

import os
import shutil
import textwrap
from collections.abc import Iterable, Sequence

from rich import box as boxes
from rich.markup import escape
from rich.table import Table
from rich.tree import Tree

from judge.engine.verdict import (
    AlternativeEvidence,
    PreconditionEvidence,
    RuleVerdict,
    Verdict,
    partly_undecided,
)

OUTCOME_STYLE = {
    "safe": "green",
    "unsafe": "bold red",
    "undecided": "yellow",
    "error": "magenta",
    "violated": "bold red",
    "not_violated": "green",
    "irrelevant": "dim",
    "skipped": "dim",
    "met": "red",
    "not_met": "green",
}
ELLIPSIS = "…"
# One line, under 80 columns: what the numbers of `--explain` mean.
LEGEND = "M = P(Yes), prior = M without image; met: d > a2 or drop > β; not met: d < a1"
# How each stage that settles an alternative is named after its outcome.
_STAGE = {
    "prior": "by d",
    "center": "by masking",
    "cascade": "by reasoning",
    "no_cascade": "(reasoning off)",
}
_REASON_CHARS = 240
# Sampled frames listed on a clip's --explain line, at most.
_FRAMES_SHOWN = 24


def _word(outcome: str) -> str:
    return outcome.replace("_", " ")


def styled(outcome: str) -> str:
    """`outcome` as markup in its colour, with spaces for underscores."""
    style = OUTCOME_STYLE.get(outcome)
    return f"[{style}]{_word(outcome)}[/]" if style else _word(outcome)


# ---- fitting text ------------------------------------------------------------------------


def clip(text: str, width: int) -> str:
    """`text` cut to `width` characters, ending with "…" when cut."""
    if len(text) <= width:
        return text
    return text[: max(0, width - 1)] + ELLIPSIS


def clip_middle(text: str, width: int) -> str:
    """`text` in at most `width` characters, cut in the middle: the end of a file name
    (its number, its extension) tells images apart as often as the start does."""
    if len(text) <= width:
        return text
    if width < 8:
        return clip(text, width)
    tail = (width - 1) // 2
    return text[: width - 1 - tail] + ELLIPSIS + text[len(text) - tail :]


def shorten_path(path: str, width: int) -> str:
    """`path` in at most `width` characters: the file name whole if it fits, with as
    many of the folders nearest to it as fit after "…/"; else the file name cut in the
    middle."""
    if len(path) <= width:
        return path
    head, sep, name = path.replace(os.sep, "/").rpartition("/")
    if not sep or len(name) + 2 > width:
        return clip_middle(name if sep else path, width)
    kept = name
    for part in reversed(head.split("/")):
        candidate = f"{part}/{kept}"
        if len(candidate) + 2 > width:
            break
        kept = candidate
    return f"{ELLIPSIS}/{kept}"


def display_names(ids: Sequence[str], width: int) -> list[str]:
    """The image ids as shown: relative to the working folder when under it, then each
    shortened to `width` (the file name kept whole where it fits)."""
    here = os.getcwd().replace(os.sep, "/").rstrip("/") + "/"
    out = []
    for image_id in ids:
        shown = image_id.replace(os.sep, "/")
        if shown.startswith(here):
            shown = shown[len(here) :]
        out.append(shorten_path(shown, width))
    return out


def fit(text: str, indent: str = "", more: str = "    ") -> str:
    """`text`, each of its lines wrapped at spaces to the terminal (or COLUMNS, else 80):
    the first line after `indent`, the rest after `more` on top of it. Words are never
    split, at hyphens or anywhere else."""
    width = shutil.get_terminal_size((80, 24)).columns
    out = []
    for line in text.splitlines() or [""]:
        lead = line[: len(line) - len(line.lstrip(" "))]
        out += textwrap.wrap(
            line.strip(),
            width=max(20, width),
            initial_indent=indent + lead,
            subsequent_indent=indent + lead + more,
            break_on_hyphens=False,
            break_long_words=False,
        ) or [""]
    return "\n".join(out)


# ---- the verdict table -------------------------------------------------------------------


def undecided_reason(verdict: Verdict) -> str:
    """Why the image has no complete verdict, in a sentence: the read error, or the
    undecided rules with their reasons (one reason said once when they all share it),
    then the rules decided "not violated" although a precondition stayed undecided."""
    if verdict.outcome == "error":
        # The image column already names the file.
        return (verdict.error or "could not be read").removeprefix(f"{verdict.image_id}: ")
    open_rules = [r for r in verdict.rules if r.outcome in ("undecided", "skipped")]
    partly = set(partly_undecided(verdict.rules))
    parts = []
    stopped_at = verdict.clip.stopped_at if verdict.clip is not None else None
    if stopped_at is not None:
        # A clip decided early: its skipped rules share one short reason.
        skipped = [r for r in open_rules if r.outcome == "skipped"]
        open_rules = [r for r in open_rules if r.outcome != "skipped"]
        if skipped:
            parts.append(f"{len(skipped)} rule(s) not judged after {stopped_at:.2f} s, where "
                         "the clip was decided (--scan-all judges the rest)")
    reasons = [(r.rule_id, (r.reason or "undecided").splitlines()[0]) for r in open_rules]
    distinct = list(dict.fromkeys(reason for _, reason in reasons))
    if len(distinct) == 1:
        who = (
            "every rule"
            if len(open_rules) == len(verdict.rules)
            else (", ".join(rule for rule, _ in reasons))
        )
        parts.append(f"{who}: {distinct[0]}")
    elif distinct:
        parts += [f"{rule}: {reason}" for rule, reason in reasons]
    parts += [
        f"{r.rule_id}: {(r.reason or 'not violated; a precondition undecided').splitlines()[0]}"
        for r in verdict.rules
        if r.rule_id in partly
    ]
    return clip("; ".join(parts), _REASON_CHARS)


def _irrelevant(verdict: Verdict) -> str:
    scanned = [r for r in verdict.rules if r.relevance_threshold is not None]
    if not scanned:
        return ""
    return f"{sum(r.outcome == 'irrelevant' for r in scanned)}/{len(scanned)}"


def summary_table(verdicts: Sequence[Verdict], width: int) -> Table:
    """One row per image: its verdict, the rules it violates (one id a line), why it is
    undecided or unreadable, and how many rules the relevance scan skipped; columns
    empty for every image are left out."""
    why = [undecided_reason(v) for v in verdicts]
    irrelevant = [_irrelevant(v) for v in verdicts]
    violated = ["\n".join(v.violated) for v in verdicts]
    has_violated, has_why, has_irrelevant = any(violated), any(why), any(irrelevant)
    longest_id = max((len(i) for v in verdicts for i in v.violated), default=0)
    # Ids whole where they can be: up to a third of the width, before the image name.
    id_width = max(8, min(longest_id, max(12, width // 3))) if has_violated else 0
    # What the image and reason columns share: the width less the fixed columns and
    # 3 characters of padding and rule per column. The reason gets what it needs up to
    # half of that (at least 24), the image name the rest.
    columns = 2 + has_violated + has_why + has_irrelevant
    room = width - 9 - id_width - (10 if has_irrelevant else 0) - 3 * (columns - 1)
    longest_why = max((len(w) for w in why), default=0)
    reason_room = min(longest_why, max(24, room // 2)) if has_why else 0
    longest_name = max((len(v.image_id) for v in verdicts), default=5)
    name_room = min(longest_name, max(12, room - reason_room))
    names = display_names([v.image_id for v in verdicts], name_room)
    table = Table(box=boxes.SIMPLE_HEAD, pad_edge=False, expand=False, show_edge=False)
    table.add_column("image", no_wrap=True, overflow="ellipsis", max_width=name_room)
    table.add_column("verdict", no_wrap=True, min_width=7)
    if has_violated:
        table.add_column("violated", no_wrap=True, overflow="ellipsis", max_width=id_width)
    if has_why:
        table.add_column("reason", overflow="fold", ratio=1)
    if has_irrelevant:
        table.add_column("irrelevant", no_wrap=True, justify="right")
    for i, verdict in enumerate(verdicts):
        row = [escape(names[i]), styled(verdict.outcome) + _when(verdict.time)]
        if has_violated:
            row.append(escape(violated[i]))
        if has_why:
            row.append(escape(why[i]))
        if has_irrelevant:
            row.append(irrelevant[i])
        table.add_row(*row)
    return table


# ---- --explain ---------------------------------------------------------------------------


def _num(value: float | None, signed: bool = False) -> str:
    if value is None:
        return "?"
    return f"{value:+.3f}" if signed else f"{value:.3f}"


def band_line(alt: AlternativeEvidence) -> str:
    """M, the prior and d, with d placed against the band [a1, a2] it was judged by."""
    if alt.m is None:
        return ""
    head = f"M {_num(alt.m)}"
    if alt.prior is None or alt.d is None:
        return head
    head += f" - prior {_num(alt.prior)} = d {_num(alt.d, True)}"
    if alt.a1 is None or alt.a2 is None:
        return head
    if alt.d < alt.a1:
        return f"{head} < a1 {_num(alt.a1, True)}"
    if alt.d > alt.a2:
        return f"{head} > a2 {_num(alt.a2, True)}"
    return f"{head}, within [{_num(alt.a1, True)}, {_num(alt.a2, True)}]"


def _region_line(alt: AlternativeEvidence) -> str:
    """The box, when it was used (its crop asked, or its region masked), and the masked
    answer against beta."""
    parts = []
    if alt.box is not None and (alt.cropped or alt.masked_m is not None):
        used = "crop asked" if alt.cropped else "region"
        parts.append(f"box {alt.box.label!r} {alt.box.confidence:.2f} ({used})")
    if alt.masked_m is not None and alt.m is not None:
        drop = alt.m - alt.masked_m
        sign = ">" if alt.beta is not None and drop > alt.beta else "<="
        parts.append(f"masked M {_num(alt.masked_m)}: drop {_num(drop)} {sign} β {_num(alt.beta)}")
    return "; ".join(parts)


def _alt_lines(alt: AlternativeEvidence) -> list[str]:
    """The evidence lines under one alternative, as markup: numbers, region, rationale
    or error (model output and errors escaped, never read as markup)."""
    lines = [escape(line) for line in (band_line(alt), _region_line(alt)) if line]
    if alt.rationale:
        lines.append(escape(f"why: {clip(alt.rationale, _REASON_CHARS)}"))
    if alt.error:
        lines.append(f"[yellow]{escape(clip(alt.error, _REASON_CHARS))}[/]")
    return lines


def _settled(alt: AlternativeEvidence) -> str:
    """The alternative's outcome and the stage that settled it, then its statement."""
    stage = _STAGE.get(alt.stage, "")
    stage = f" [dim]{stage}[/]" if stage else ""
    return f"{styled(alt.outcome)}{stage}: {escape(repr(alt.statement))}"


def _head(pre: PreconditionEvidence, rule: RuleVerdict, alt: AlternativeEvidence | None) -> str:
    # Which link of a longer chain decided the rule; a one-link chain needs no mark.
    decided = len(rule.preconditions) > 1 and rule.decisive_precondition == pre.index
    mark = " [bold](decisive)[/]" if decided else ""
    if alt is None:
        return f"{pre.index + 1} {styled(pre.outcome)}{mark}, any of:"
    return f"{pre.index + 1}{mark} {_settled(alt)}"


def _add_precondition(node: Tree, pre: PreconditionEvidence, rule: RuleVerdict) -> None:
    if pre.outcome == "skipped":
        # Asked, perhaps, but not needed: its answers decide nothing, so none is shown.
        said = " or ".join(repr(a.statement) for a in pre.alternatives)
        node.add(f"[dim]{pre.index + 1} not needed: {escape(said)}[/]")
        return
    if len(pre.alternatives) == 1:
        alt = pre.alternatives[0]
        branch = node.add(_head(pre, rule, alt))
        for line in _alt_lines(alt):
            branch.add(line)
        return
    branch = node.add(_head(pre, rule, None))
    for alt in pre.alternatives:
        if alt.outcome == "skipped":
            branch.add(f"[dim]not needed: {escape(repr(alt.statement))}[/]")
            continue
        leaf = branch.add(_settled(alt))
        for line in _alt_lines(alt):
            leaf.add(line)


def _relevance(rule: RuleVerdict) -> str:
    if rule.relevance is None:
        return ""
    if rule.relevance_threshold is None:
        return f" [dim]relevance {rule.relevance:.3f}[/]"
    return f" [dim]relevance {rule.relevance:.3f} > {rule.relevance_threshold:.3f}[/]"


def _when(time: float | None, frame: int | None = None) -> str:
    """" at 3.00 s" (with " (frame 30)" when given) for a clip's frame; "" otherwise."""
    if time is None:
        return ""
    return f" [dim]at {time:.2f} s{f' (frame {frame})' if frame is not None else ''}[/]"


def _clip_when(rule: RuleVerdict) -> str:
    """Where a clip's rule evidence comes from: the frame that violated it or left it
    undecided; for a rule not violated, the frame shown of all that were judged."""
    if rule.outcome in ("violated", "undecided"):
        return _when(rule.time, rule.frame)
    if rule.time is None:
        return ""
    return f" [dim](in every frame judged; shown: {rule.time:.2f} s)[/]"


def clip_lines(verdict: Verdict) -> list[str]:
    """For a clip: what it was, how it was sampled, and each sampled frame's outcome (a
    near-duplicate as "=T", the time of the frame whose answers it took), as plain text."""
    clip = verdict.clip
    if clip is None:
        return []
    duration = f"{clip.duration:.2f} s, " if clip.duration is not None else ""
    rate = f" at {clip.frame_rate:g} fps" if clip.frame_rate else ""
    codec = f" {clip.codec}" if clip.codec else ""
    grid = f"every {clip.interval:.2f} s" if clip.interval is not None else "every frame"
    changes = sum(f.why == "change" for f in clip.sampled)
    head = (
        f"clip: {clip.format.upper()}{codec} {clip.width}x{clip.height}, {duration}"
        f"{clip.frames} frames{rate}; {len(clip.sampled)} sampled ({grid}, {changes} at scene "
        f"changes), {clip.judged} judged, {clip.reused} near-duplicates reused, "
        f"{clip.scenes} scene(s)"
    )
    if clip.stopped_at is not None:
        head += f"; stopped at {clip.stopped_at:.2f} s, decided (--scan-all judges the rest)"
    if clip.capped_at is not None:
        head += f"; --max-frames reached at {clip.capped_at:.2f} s"
    times = {f.index: f.time for f in clip.sampled}
    frames = []
    for frame in clip.sampled:
        said: str = frame.outcome or "not judged"
        if frame.reused_from is not None:
            said = f"={times.get(frame.reused_from, 0.0):.2f}"
        frames.append(f"{frame.time:.2f} {said}")
    shown = frames[:_FRAMES_SHOWN] + ([f"… {len(frames) - _FRAMES_SHOWN} more"]
                                      if len(frames) > _FRAMES_SHOWN else [])
    return [head, "frames: " + ", ".join(shown)]


def explain_tree(verdict: Verdict, name: str) -> Tree:
    """The evidence of one image as a tree: rule, precondition (the statement, its stage,
    M, prior and d against the band), and the rules the relevance scan skipped, on one
    line at the end. A clip's tree says first how it was sampled, and each rule the time
    and frame its evidence comes from (the deciding frame's, in the title)."""
    title = (
        f"[bold]{escape(name)}[/] {styled(verdict.outcome)}{_when(verdict.time, verdict.frame)}"
    )
    tree = Tree(title, guide_style="dim")
    if verdict.outcome == "error":
        tree.add(escape(verdict.error or "could not be read"))
        return tree
    for line in clip_lines(verdict):
        tree.add(f"[dim]{escape(line)}[/]")
    judged = [r for r in verdict.rules if r.outcome != "irrelevant"]
    skipped = [r for r in verdict.rules if r.outcome == "irrelevant"]
    for rule in judged:
        node = tree.add(
            f"[bold]{escape(rule.rule_id)}[/] {styled(rule.outcome)}"
            f"{_clip_when(rule) if verdict.clip is not None else ''}{_relevance(rule)}"
        )
        # An undecided alternative says why itself; a rule without evidence cannot, and a
        # rule not violated despite an undecided precondition says so at its head.
        partly = rule.outcome == "not_violated" and bool(rule.undecided_preconditions)
        if rule.reason and (rule.outcome == "skipped" or not rule.preconditions or partly):
            node.add(f"[yellow]{escape(clip(rule.reason, _REASON_CHARS))}[/]")
        for pre in rule.preconditions:
            _add_precondition(node, pre, rule)
    if skipped:
        thresholds = sorted(
            {r.relevance_threshold for r in skipped if r.relevance_threshold is not None}
        )
        limit = "/".join(f"{t:.3f}" for t in thresholds)
        listed = ", ".join(
            f"{r.rule_id} {r.relevance:.2f}" if r.relevance is not None else r.rule_id
            for r in skipped
        )
        tree.add(f"[dim]irrelevant (relevance <= {limit}): {escape(listed)}[/]")
    return tree


def explain_trees(verdicts: Iterable[Verdict], names: Sequence[str]) -> list[Tree]:
    return [explain_tree(v, n) for v, n in zip(verdicts, names, strict=True)]
