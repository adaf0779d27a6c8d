"""`judge doctor`: check that a model or server can serve the judge, with a fix for each failure."""

from __future__ import annotations

import typer
from rich.console import Console
from rich.table import Table

from judge.commands.app import app
from judge.commands.model_options import ApiKeyOption, BackendOption, ServersOption, server_arg
from judge.errors import InputError
from judge.models.doctor import Check, diagnose, raise_for


def render(checks: list[Check], console: Console) -> None:
    table = Table(title="judge doctor", show_lines=False)
    table.add_column("check")
    table.add_column("result")
    table.add_column("found / fix", overflow="fold")
    for check in checks:
        table.add_row(
            check.name, "[green]ok[/green]" if check.ok else "[red]FAIL[/red]", check.found
        )
    console.print(table)


@app.command("doctor")
def doctor(
    server: ServersOption = None,
    model: str | None = typer.Option(
        None,
        "--model",
        help="Model folder, hub id or registered name ('toy'): the one the server must "
        "serve, or to load (default: whatever the server serves).",
    ),
    backend: BackendOption = None,
    api_key: ApiKeyOption = None,
) -> None:
    """Check that the model takes images, gives Yes/No logprobs, and has single-token labels."""
    from judge.models.resolve import resolve_model

    # The same resolution as judging: 'toy', a folder, a hub id (checked in seconds), a
    # server from --server or JUDGE_SERVER.
    choice = resolve_model(model, backend=backend, server=server_arg(server), need_model=False)
    if choice.kind != "vllm-server" and choice.model is None and choice.named is None:
        raise InputError(
            "judge doctor needs --server URL (or JUDGE_SERVER) or --model (a folder, a hub "
            "id, or 'toy')"
        )
    checks = diagnose(
        choice.kind, model=choice.backend_model(), server=choice.server, api_key=api_key
    )
    render(checks, Console())
    raise_for(checks)
