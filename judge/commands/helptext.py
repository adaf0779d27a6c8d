"""Help texts that are read whole at any width.

Click wraps help to the terminal (or `COLUMNS`), and in two places it loses text: a
command list cuts each command's line with "..." to fit beside its name, and the wrapper
breaks words at hyphens, so `prior-cot` or `--target-fpr` can be split over two lines.
`tidy_help` gives every command its first paragraph as its short help (wrapped, not
cut) and wraps help text at spaces only.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable
from typing import Any

import typer

# A non-breaking hyphen stands in for "-" while a text is wrapped: the wrapper then
# breaks only at spaces. Each is one character wide, so the line widths do not change.
_NB_HYPHEN = "\u2011"
# Recent typer releases format help with a copy of click of their own.
_FORMATTERS = ("click.formatting", "typer._click.formatting")


def _at_spaces(wrap: Callable[..., str]) -> Callable[..., str]:
    if getattr(wrap, "judge_at_spaces", False):
        return wrap

    def wrapped(text: str, *args: Any, **kwargs: Any) -> str:
        return wrap(text.replace("-", _NB_HYPHEN), *args, **kwargs).replace(_NB_HYPHEN, "-")

    wrapped.judge_at_spaces = True  # type: ignore[attr-defined]
    return wrapped


def _first_paragraph(doc: str) -> str:
    return " ".join(inspect.cleandoc(doc).split("\n\n")[0].split())


def whole_short_help(group: typer.Typer) -> None:
    """Every command of `group` (and of its sub-groups) lists with its first paragraph."""
    for info in group.registered_commands:
        doc = info.help or (info.callback.__doc__ if info.callback else None)
        if info.short_help is None and doc:
            info.short_help = _first_paragraph(doc)
    for sub in group.registered_groups:
        if sub.typer_instance is None:
            continue
        doc = sub.help if isinstance(sub.help, str) else sub.typer_instance.info.help
        if not isinstance(sub.short_help, str) and isinstance(doc, str):
            sub.short_help = _first_paragraph(doc)
        whole_short_help(sub.typer_instance)


def tidy_help(app: typer.Typer) -> None:
    """Short help in full for every command of `app`, and wrapping at spaces only."""
    for name in _FORMATTERS:
        try:
            module = importlib.import_module(name)
        except ImportError:
            continue
        wrap = getattr(module, "wrap_text", None)
        if callable(wrap):
            setattr(module, "wrap_text", _at_spaces(wrap))  # noqa: B010  (a module global)
    whole_short_help(app)
