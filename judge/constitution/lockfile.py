"""Read and write lock files (`POLICY.lock.yaml`, next to `POLICY.yaml`).

A lock is written with the schema's field order, nothing sorted or reflowed between runs,
so re-compiling a policy gives a small, reviewable diff. It is read with the same guarded
YAML reader as constitutions; any problem is a `LockError` that names file:line.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from judge.constitution import yamlsafe
from judge.constitution.review import needs_review
from judge.constitution.schema import (
    FALLBACK,
    HAND_WRITTEN,
    CompiledRule,
    ConstitutionSpec,
    Lock,
    RuleSpec,
)
from judge.errors import LockError

# A lock of 1000 rules with long chains can pass 1 MiB; it is still bounded.
MAX_LOCK_BYTES = 16 * 1024 * 1024

_FOOTER = (
    "# Review it and commit it next to the source; `judge compile --check` fails when the\n"
    "# source changed since, or when a rule needs review.\n"
)


def lock_path_for(source: str | Path) -> Path:
    """`policy.yaml` -> `policy.lock.yaml`, in the same folder."""
    source = Path(source)
    stem = source.name
    for suffix in (".yaml", ".yml"):
        if stem.endswith(suffix):
            stem = stem[: -len(suffix)]
            break
    return source.with_name(f"{stem}.lock.yaml")


def is_lock_path(path: str | Path) -> bool:
    return Path(path).name.endswith((".lock.yaml", ".lock.yml"))


def load_lock(path: str | Path) -> Lock:
    """Read and validate the lock at `path`."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise LockError(f"{path}: no lock file; run `judge compile` on its constitution") from None
    except OSError as error:
        raise LockError(f"{path}: cannot read the lock: {error.strerror or error}") from None
    return parse_lock(data, str(path))


def parse_lock(data: bytes | str, file: str = "<lock>") -> Lock:
    if isinstance(data, str):
        data = data.encode("utf-8")
    try:
        located = yamlsafe.load(data, max_bytes=MAX_LOCK_BYTES, max_nodes=2_000_000)
    except yamlsafe.YamlProblem as problem:
        raise LockError(f"{file}:{problem.line}:{problem.column}: {problem.message}") from None
    if not isinstance(located.value, dict):
        raise LockError(f"{file}: not a lock file (expected a mapping)")
    try:
        return Lock.model_validate(located.value)
    except ValidationError as error:
        detail = error.errors(include_url=False)[0]
        loc = tuple(detail["loc"])
        line, column = located.position(loc)
        where = ".".join(str(part) for part in loc)
        raise LockError(
            f"{file}:{line}:{column}: malformed lock ({where}: {detail['msg']}); "
            "re-create it with `judge compile --force`"
        ) from None


def dump_lock(lock: Lock) -> str:
    """The lock as YAML text, in the schema's field order, without empty optional fields.

    Lines are never wrapped: a one-word edit of a rule then changes one line of the diff.
    """
    body = lock.model_dump(mode="json", exclude_none=True)
    text: str = yaml.safe_dump(
        _prune(body), sort_keys=False, allow_unicode=True, width=10_000, default_flow_style=False
    )
    return header(lock) + text


def header(lock: Lock) -> str:
    """The lock's opening comment, worded from what produced its fields: a lock that no
    model touched must not read as a model's output."""
    models = [] if lock.compiler_model == HAND_WRITTEN else [lock.compiler_model]
    fallbacks = sum(
        FALLBACK in (r.produced_by.text, r.produced_by.preconditions, r.produced_by.objectiveness)
        for r in lock.rules
    )
    if models:
        lines = [
            f"# Compiled from {lock.source} with the model {models[0]}.",
            "# Each rule's `produced_by` names what made each field: that model, "
            "`hand-written` (as in the source)",
            "# or `fallback` (the model's answer was unusable).",
        ]
    else:
        lines = [
            f"# Compiled from {lock.source} without a model: every field below is "
            "hand-written",
            "# (taken as written in the source) or derived from it; no model scored or wrote "
            "anything.",
        ]
    if fallbacks:
        lines.append(f"# {fallbacks} rule(s) hold a fallback.")
    review = needs_review(lock)
    if review:
        lines.append(f"# NEEDS REVIEW: {', '.join(review)} (see `judge check`).")
    return "\n".join(lines) + "\n" + _FOOTER


def _prune(value: Any) -> Any:
    # Empty defaults (`defaults: {}`, `objects: []`) carry nothing: leave them out so the
    # diff shows only what a rule has.
    if isinstance(value, dict):
        return {k: _prune(v) for k, v in value.items() if v != {} and v != []}
    if isinstance(value, list):
        return [_prune(v) for v in value]
    return value


def write_lock(lock: Lock, path: str | Path) -> Path:
    """Write `lock` to `path` atomically (a reader never sees half a file)."""
    path = Path(path)
    text = dump_lock(lock)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def check_fresh(lock: Lock, spec: ConstitutionSpec, source_sha256: str, source: str) -> None:
    """Raise LockError unless `lock` was compiled from exactly this source."""
    command = f"run `judge compile {source}` (or pass --compile)"
    if lock.source_sha256 != source_sha256:
        raise LockError(f"the lock of {source} is stale: the constitution changed since; {command}")
    if lock.name != spec.name:
        raise LockError(
            f"the lock of {source} belongs to constitution {lock.name!r}, not {spec.name!r}; "
            f"{command}"
        )
    compiled = {rule.id: rule.text_sha256 for rule in lock.rules}
    for rule in spec.rules:
        if compiled.get(rule.id) != rule.text_sha256():
            raise LockError(f"the lock of {source} does not match rule {rule.id!r}; {command}")
    extra = set(compiled) - {rule.id for rule in spec.rules}
    if extra:
        raise LockError(
            f"the lock of {source} has rules the constitution lacks ({', '.join(sorted(extra))}); "
            f"{command}"
        )
    rules = {rule.id: rule for rule in lock.rules}
    for rule in spec.rules:
        for field in _not_as_written(rules[rule.id], rule):
            raise LockError(
                f"the lock of {source} says rule {rule.id!r}'s {field} is hand-written, but it is "
                f"not what the source says (was the lock edited?); {command}"
            )


def _not_as_written(compiled: CompiledRule, rule: RuleSpec) -> list[str]:
    """The fields the lock credits to the author that differ from the author's source.
    The rule hash covers the source only, so without this a lock edited by hand (a chain of
    ':' marked hand-written) would pass as fresh and skip the review gate."""
    made = compiled.produced_by
    out = []
    if compiled.source_text != rule.text:
        out.append("source text")
    if made.text == HAND_WRITTEN and compiled.text != rule.text:
        out.append("text")
    if made.preconditions == HAND_WRITTEN and (
        [p.model_dump() for p in compiled.preconditions]
        != [p.model_dump() for p in rule.preconditions or []]
    ):
        out.append("precondition chain")
    if made.topic == HAND_WRITTEN and compiled.topic != rule.topic:
        out.append("topic")
    return out
