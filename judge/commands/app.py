"""The typer application every command module registers on."""

from __future__ import annotations

import typer

app = typer.Typer(
    name="judge",
    help="Zero-shot image-safety judge (CLUE): which rules of a policy does an image violate?",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    # Plain click help: it wraps every text to the terminal (or COLUMNS) and cuts nothing.
    rich_markup_mode=None,
)
