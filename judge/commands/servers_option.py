"""`--server URL`, repeatable, for every command that talks to vLLM servers.

One URL is one server; several (`--server A --server B`, or `--server A,B`, or the same
in `JUDGE_SERVER`) are replicas of one model, judged as one fleet with prefix-aware routing
and failover (judge.models.fleet). Commands take `ServersOption` and pass
`server_arg(value)` on as the `server` they already had: several URLs travel as one
comma-separated string, which `judge.models.load_backend` turns into the fleet.
"""

from __future__ import annotations

from typing import Annotated

import typer

from judge.models.fleet import split_servers

ServersOption = Annotated[
    list[str] | None,
    typer.Option(
        "--server",
        help="OpenAI-compatible (vLLM) server URL (default: JUDGE_SERVER). Repeat it for "
        "several replicas of one model: queries about an image stay on one replica "
        "(prefix-aware routing), a failing replica's work goes to the others.",
    ),
]


def server_arg(values: list[str] | str | None) -> str | None:
    """The `--server` values as one server argument: a URL, "a,b" for a fleet, or None."""
    return ",".join(split_servers(values)) or None
