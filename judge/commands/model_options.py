"""The model options every command that judges shares: one text, one default each.

`--server URL` is repeatable: one URL is one server; several (`--server A --server B`, or
`--server A,B`, or the same in `JUDGE_SERVER`) are replicas of one model, judged as one
fleet with prefix-aware routing and failover (judge.models.fleet). Commands take
`ServersOption` and pass `server_arg(value)` on as the `server` they already had: several
URLs travel as one comma-separated string, which `judge.models.load_backend` turns into
the fleet.
"""

from __future__ import annotations

from pathlib import Path
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


ModelOption = Annotated[
    str | None,
    typer.Option(
        help="Judge model: a folder, a hub id, or a registered name ('toy') (default: the "
        "policy's defaults.model, else what the server serves)."
    ),
]
BackendOption = Annotated[
    str | None, typer.Option(help="Back end: vllm-server, vllm, hf (default: by --server).")
]
ApiKeyOption = Annotated[
    str | None,
    typer.Option(
        "--api-key", help="Server key, or @FILE to read it (default: JUDGE_API_KEY). Never stored."
    ),
]
RelevanceOption = Annotated[
    str | None,
    typer.Option(
        help="Relevance scorer: clip:<id|path>, siglip:<id|path>, vlm or off (default: the "
        "model's own, e.g. the toy CLIP, else CLIP ViT-B/16)."
    ),
]
LocatorOption = Annotated[
    str | None,
    typer.Option(
        help="OWLv2 id or folder, or off (default: the model's own, e.g. the toy OWLv2, "
        "else google/owlv2-base-patch16-ensemble)."
    ),
]
# The two judging options `judge test` and `judge diff` take as `judge` does.
ThresholdsOption = Annotated[
    Path | None, typer.Option(help="YAML/JSON file of threshold overrides, as for judge.")
]
AllowUnreviewedOption = Annotated[
    bool,
    typer.Option("--allow-unreviewed", help="Judge even when compiled rules need review."),
]
