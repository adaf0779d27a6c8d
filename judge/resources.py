"""Find the data that ships with judge: prompt templates and constitutions.

From a checkout (or an editable install) they are the top-level `prompts/` and
`constitutions/` folders; an installed wheel carries them as `judge/_data/...`.
"""

from __future__ import annotations

from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent


def data_dir(name: str) -> Path:
    """Return the folder `name` ("prompts" or "constitutions") of this installation."""
    for candidate in (_PACKAGE / "_data" / name, _PACKAGE.parent / name):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(f"judge's {name}/ folder is missing from this installation")


def cache_dir() -> Path:
    """The folder where judge keeps built toy models and other derived files."""
    import os

    root = os.environ.get("JUDGE_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "judge"
    )
    path = Path(root)
    path.mkdir(parents=True, exist_ok=True)
    return path
