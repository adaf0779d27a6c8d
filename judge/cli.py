"""The `judge` command line. The only place that turns errors into exit codes.

`judge IMAGE... --constitution POLICY` judges images; everything else is a subcommand
(`judge check`, `judge compile`, `judge show`, `judge eval`, ...). Exit codes: 0 all safe,
1 some image unsafe, 2 bad input or usage (or a file that could not be read), 3 a model
failure left a verdict undecided, 4-7 the model or server cannot do what judge needs, 8
compiled rules need review (see judge/errors.py). When a run has several outcomes, an
unjudged file wins: 2 (unreadable), then 3 (undecided), then 1 (unsafe), then 0; so exit
0 or 1 always means every file was judged (judge/commands/judge_cmd.py).
"""

from __future__ import annotations

import importlib
import pkgutil
import sys
from collections.abc import Sequence

import typer
from rich.console import Console
from rich.markup import escape

from judge import __version__
from judge.commands.app import app
from judge.errors import JudgeError

_err = Console(stderr=True, highlight=False, soft_wrap=True)


def _load_commands() -> None:
    """Import every judge/commands module so its commands register on `app`."""
    import judge.commands as package

    for info in pkgutil.iter_modules(package.__path__):
        if info.name != "app":
            importlib.import_module(f"judge.commands.{info.name}")
    from judge.commands.helptext import tidy_help

    tidy_help(app)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"judge {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """Zero-shot image-safety judge: which rules of a constitution does an image violate?"""


def _route(argv: list[str]) -> list[str]:
    """`judge IMAGE... --constitution P` (options in any order) runs the `run` command;
    a first word that names a subcommand, or --help / --version, is left alone."""
    if not argv:
        return argv
    first = argv[0]
    group = typer.main.get_command(app)
    names = set(getattr(group, "commands", {}))
    if first in names or first in ("--help", "-h", "--version"):
        return argv
    return ["run", *argv]


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of the `judge` console script."""
    _load_commands()
    args = _route(list(sys.argv[1:] if argv is None else argv))
    try:
        # With standalone_mode off, click returns a command's typer.Exit code.
        result = app(args=args, prog_name="judge", standalone_mode=False)
    except JudgeError as error:
        _err.print(f"[bold red]error:[/] {escape(str(error))}", markup=True, emoji=False)
        sys.exit(error.exit_code)
    except typer.Exit as done:
        sys.exit(done.exit_code)
    except typer.Abort:
        _err.print("aborted")
        sys.exit(130)
    except KeyboardInterrupt:
        _err.print("interrupted")
        sys.exit(130)
    except typer.TyperException as error:  # usage errors: unknown option, missing value
        show = getattr(error, "show", None)
        if callable(show):
            show()
        else:
            _err.print(f"error: {error}")
        sys.exit(2)
    sys.exit(result if isinstance(result, int) else 0)


if __name__ == "__main__":
    main()
