"""The repository stands alone: no tracked file points a reader at a path outside it.

A clone is all a contributor has, so every tracked text file (`git ls-files`) keeps three
rules. They are written to catch a pointer, not to parse every language; each has a reason
for what it allows.

1. **No relative path climbs out of the repository.** A Markdown link's target is read
   from the linking file's folder, as a Markdown viewer reads it, and so is the `image:`
   of a `judge test` cases file (judge.policy.cases reads it so). Any other parent step
   (two dots and a slash) is read from the repository root, which is how code, comments
   and docs here cite paths (`judge/engine/procedure.py`, `docs/method.md`), so it leaves
   the repository. Allowed: string literals in test code (not its comments or
   docstrings), which are inputs a test sends, such as a path-traversal attempt.
2. **No absolute path under a folder that holds one machine's or one person's files:**
   home, root, Users, work, workspace, mnt, media, opt, srv, scratch, tmp and var/tmp at
   the top of the file system. Such a path names a place on the machine it was written
   on. Use a path in the repository, judge's cache folder (`judge.resources.cache_dir`),
   or the system's temporary folder (`tempfile.gettempdir()`). Allowed: system paths that
   every Unix machine has in the same place (usr/bin, etc, proc/self, dev/null), example
   paths inside a container that the example itself mounts (data/...), and http(s) URLs,
   whose paths (/v1/judge, /metrics) name a route on a server, not a folder.
3. **Every Markdown document cited is in the repository.** A cited path with a folder
   (`docs/method.md`) must be found from the citing file's folder or from the root; a
   bare name (`method.md`) must be the name of some tracked file, since code builds paths
   from parts. This catches pointers to documents kept beside the repository (a team's
   design notes) that a clone does not have. Allowed: `report.md`, which `judge eval`
   writes.
"""

from __future__ import annotations

import io
import os
import re
import subprocess
import tokenize
from pathlib import Path, PurePosixPath

import pytest

ROOT = Path(__file__).resolve().parents[1]

# Rule 2's folders, at the top of the file system.
MACHINE_FOLDERS = (
    "home", "root", "Users", "work", "workspace", "mnt", "media", "opt", "srv", "scratch",
    "tmp", "var/tmp",
)
_MACHINE = re.compile(r"(?<![\w.~$-])/(?:" + "|".join(MACHINE_FOLDERS) + r")/")
_URL = re.compile(r"\b(?:https?|wss?)://[^\s)\]>\"'`]+")
_LINK = re.compile(r"\]\(([^)\s]+)\)")
_PARENT = re.compile(r"(?<![\w.])\.\./")
# A `judge test` cases file names each image relative to its own folder (judge.policy.cases).
_CASE_IMAGE = re.compile(r"^[ \t]*(?:-[ \t]+)?image:[ \t]*(\S+)", re.MULTILINE)
_MARKDOWN = re.compile(r"(?<![\w./-])((?:[\w-]+/)*[\w-]+\.md)\b")
GENERATED_MARKDOWN = {"report.md"}  # written by `judge eval`


def _line(text: str, pos: int) -> int:
    return text.count("\n", 0, pos) + 1


def _test_literals(text: str) -> list[tuple[int, int]]:
    """(start, end) offsets of the string literals of test code that are not docstrings
    (a string that is a statement of its own)."""
    starts = [0]
    for line in text.splitlines(keepends=True):
        starts.append(starts[-1] + len(line))
    spans = []
    try:
        tokens = list(tokenize.generate_tokens(io.StringIO(text).readline))
    except (tokenize.TokenError, SyntaxError):
        return []
    skip = {tokenize.NL, tokenize.COMMENT}
    significant = [t for t in tokens if t.type not in skip]
    for i, tok in enumerate(significant):
        if tok.type != tokenize.STRING:
            continue
        before = significant[i - 1].type if i else tokenize.NEWLINE
        after = significant[i + 1].type if i + 1 < len(significant) else tokenize.NEWLINE
        statement = before in (tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT) and after in (
            tokenize.NEWLINE, tokenize.ENDMARKER)
        if not statement:
            (r0, c0), (r1, c1) = tok.start, tok.end
            spans.append((starts[r0 - 1] + c0, starts[r1 - 1] + c1))
    return spans


def problems_in(path: str, text: str, exists: set[str]) -> list[str]:
    """What in `text` (the file `path`, relative to the root) points outside the
    repository, as "path:line: why"; `exists` holds every tracked path."""
    out: list[str] = []
    folder = PurePosixPath(path).parent
    text = _URL.sub(lambda m: " " * len(m.group(0)), text)  # keeps offsets and lines
    literals = _test_literals(text) if path.startswith("tests/") and path.endswith(".py") else []

    def literal(pos: int) -> bool:
        return any(a <= pos < b for a, b in literals)

    # 1. relative paths: Markdown link targets from the file's folder, the rest from the root
    links = []
    for m in _LINK.finditer(text):
        target = m.group(1).split("#")[0]
        links.append((m.start(1), m.end(1)))
        if target and os.path.normpath(folder / target).startswith(".."):
            out.append(f"{path}:{_line(text, m.start())}: link {target!r} leaves the repository")
    if path.endswith((".tests.yaml", ".tests.yml")):  # its images are read as links are
        for m in _CASE_IMAGE.finditer(text):
            links.append((m.start(1), m.end(1)))
            if os.path.normpath(folder / m.group(1)).startswith(".."):
                out.append(f"{path}:{_line(text, m.start())}: image {m.group(1)!r} leaves "
                           "the repository")
    for m in _PARENT.finditer(text):
        if any(a <= m.start() < b for a, b in links) or literal(m.start()):
            continue
        end = text.find("\n", m.start())
        shown = text[m.start() : end if end >= 0 else None].split()[0]
        out.append(f"{path}:{_line(text, m.start())}: {shown!r} climbs out of the repository")
    # 2. absolute paths of one machine
    for m in _MACHINE.finditer(text):
        end = re.search(r"[\s`'\")\]]|$", text[m.start() :])
        shown = text[m.start() : m.start() + (end.start() if end else 0)]
        out.append(f"{path}:{_line(text, m.start())}: {shown!r} is a path on one machine")
    # 3. Markdown documents that are not here
    for m in _MARKDOWN.finditer(text):
        name = m.group(1)
        base = PurePosixPath(name).name
        if base in GENERATED_MARKDOWN:
            continue
        if "/" in name:
            if {os.path.normpath(folder / name), os.path.normpath(name)} & exists:
                continue
        elif any(PurePosixPath(p).name == base for p in exists):
            continue
        out.append(f"{path}:{_line(text, m.start())}: {name!r} is not in the repository")
    return out


def tracked_files() -> list[str]:
    try:
        listed = subprocess.run(
            ["git", "-C", str(ROOT), "ls-files", "-z"], check=True, capture_output=True
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout")
    return [p for p in listed.decode().split("\0") if p]


def _text(path: Path) -> str | None:
    try:
        data = path.read_bytes()
    except OSError:  # deleted in the work tree but still tracked
        return None
    if b"\0" in data:
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return None


def test_no_tracked_file_points_outside_the_repository() -> None:
    files = tracked_files()
    exists = set(files)
    problems = []
    for path in files:
        text = _text(ROOT / path)
        if text is not None:
            problems += problems_in(path, text, exists)
    assert not problems, "\n".join(problems)


# Built from parts, so that this file itself keeps the rules it checks.
UP = ".." + "/"
SHARED = UP + "shared/"
MD = ".md"
DESIGN = "DESIGN" + MD
NOTE = "notes/vllm-cpu" + MD


def test_the_checker_sees_what_it_must() -> None:
    """A planted pointer of each kind is found; what the rules allow is not."""
    exists = {"README.md", "docs/method.md", "judge/engine/procedure.py"}
    bad = "\n".join(
        [
            f'"""The procedure ({SHARED}{DESIGN})."""',
            f"# see {SHARED}{NOTE}",
            f"# see {DESIGN}, section 2, and {NOTE}",
            f"PATH = '{'/' + 'work/main/models'}'",
            f"DEFAULT = '{'/' + 'tmp/figures.txt'}'",
            f"# a notebook at {'/' + 'home/ann/x.ipynb'} and {'file://' + '/' + 'root/y'}",
        ]
    )
    found = "\n".join(problems_in("judge/engine/x.py", bad, exists))
    assert f"judge/engine/x.py:1: '{SHARED}{DESIGN}).\"\"\"' climbs out" in found
    assert f"judge/engine/x.py:2: '{SHARED}{NOTE}' climbs out" in found
    assert f"judge/engine/x.py:3: '{DESIGN}' is not in the repository" in found
    assert f"judge/engine/x.py:3: '{NOTE}' is not in the repository" in found
    for line, where in ((4, "work/main/models"), (5, "tmp/figures.txt"), (6, "home/ann/x.ipynb"),
                        (6, "root/y")):
        assert f"judge/engine/x.py:{line}: '/{where}' is a path on one machine" in found, where
    link = f"[the notes]({UP}{UP}notes{MD})"
    assert "leaves the repository" in "\n".join(problems_in(f"docs/x{MD}", link, exists))
    # A cases file's images are read from its folder: one level up from constitutions/ is
    # the root, two levels up is outside.
    cases = f"cases:\n  - image: {UP}eval/a.png\n    expect: safe\n  - image: {UP}{UP}b.png\n"
    assert problems_in("constitutions/p.tests.yaml", cases, exists) == [
        f"constitutions/p.tests.yaml:4: image '{UP}{UP}b.png' leaves the repository"
    ]

    fine = "\n".join(
        [
            f"See [the method](method{MD}), [the README]({UP}README{MD}) and docs/method{MD}.",
            "GET http://127.0.0.1:8000/v1/models and https://example.org/tmp/x/README2.md",
            "Chromium is /usr/bin/chromium; read /proc/self/status; write to /dev/null.",
            "judge batch /data/shots --out /data/verdicts.parquet",
            f"judge eval writes OUT/report{MD}; cache in ~/.cache/judge",
        ]
    )
    assert problems_in(f"docs/x{MD}", fine, exists) == []
    # A test's own string literal may be a hostile path; its comments and docstrings not.
    test_code = f'"""Docs."""\nBAD = "{UP}{UP}etc/passwd"\n# {SHARED}notes\n'
    found = problems_in("tests/test_x.py", test_code, exists)
    assert found == [f"tests/test_x.py:3: '{SHARED}notes' climbs out of the repository"]


def test_the_checker_fails_on_the_tree_before_issue_24() -> None:
    """The commit before the fix pointed at the team's folder beside the repository."""
    before = "99aa4f2"
    try:
        text = subprocess.run(
            ["git", "-C", str(ROOT), "show", f"{before}:judge/engine/procedure.py"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("no git history here")
    found = "\n".join(problems_in("judge/engine/procedure.py", text, set()))
    assert f"{SHARED}{DESIGN}" in found and f"'{DESIGN}' is not in the repository" in found
