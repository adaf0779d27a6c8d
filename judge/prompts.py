"""Prompt templates: Jinja2 files in prompts/, rendered in a sandbox.

Rule text and statements come from policy authors and model output, so they are passed
as values and never parsed as template syntax; the sandbox also stops a template from
reaching Python internals. Each file starts with `{# version: N #}`; verdicts and locks
record the versions they were made with.
"""

from __future__ import annotations

import re
from functools import cache, lru_cache
from typing import Any

import jinja2
from jinja2.sandbox import ImmutableSandboxedEnvironment

from judge.resources import data_dir

_VERSION = re.compile(r"^\{#\s*version:\s*(\d+)\s*#\}\s*\n")


@lru_cache(maxsize=1)
def _env() -> ImmutableSandboxedEnvironment:
    return ImmutableSandboxedEnvironment(
        loader=jinja2.FileSystemLoader(str(data_dir("prompts"))),
        undefined=jinja2.StrictUndefined,
        autoescape=False,
        keep_trailing_newline=False,
    )


@cache
def version(name: str) -> int:
    """The version number in the header of prompt `name`."""
    text = (data_dir("prompts") / f"{name}.j2").read_text(encoding="utf-8")
    match = _VERSION.match(text)
    if not match:
        raise ValueError(f"prompt {name} has no '{{# version: N #}}' header")
    return int(match.group(1))


def render(name: str, **values: Any) -> str:
    """Render prompt `name` with `values` (data only, never template source)."""
    template = _env().get_template(f"{name}.j2")
    return template.render(**values).strip("\n")


def versions(*names: str) -> dict[str, int]:
    """`{name: version}` for the given prompts, for verdicts and locks."""
    return {name: version(name) for name in names}
