"""Load a constitution file into a `ConstitutionSpec`, or say exactly what is wrong.

Every problem raises `ConstitutionError` naming file:line:column and, inside a rule, the
rule's id. The YAML is read by `judge.constitution.yamlsafe` (safe tags only, no duplicate
keys, bounded size, nesting and alias expansion); pydantic errors are mapped back to the
node they came from.
"""

from __future__ import annotations

import difflib
import hashlib
import types
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from judge.constitution import yamlsafe
from judge.constitution.schema import CompiledRule, ConstitutionSpec, PreconditionSpec, RuleSpec
from judge.errors import ConstitutionError

_SLUG_HELP = (
    "must be a slug: lowercase letters, digits, '.', '_' or '-', starting with a letter or "
    "digit, at most 64 characters"
)
_PRECONDITION_HELP = (
    "a precondition must be a statement, a list of alternative statements, or a mapping "
    "with 'any_of' (and optionally 'objects')"
)


def load_spec(path: str | Path) -> tuple[ConstitutionSpec, str]:
    """Read and validate the constitution at `path`.

    Returns:
        The spec and the sha256 of the file's bytes (what a lock records as its source).
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as error:
        raise ConstitutionError(
            f"cannot read the file: {error.strerror or error}", file=str(path)
        ) from None
    return parse_spec(data, str(path)), hashlib.sha256(data).hexdigest()


def parse_spec(data: bytes | str, file: str = "<constitution>") -> ConstitutionSpec:
    """Validate constitution text or bytes; `file` is the name used in error messages."""
    if isinstance(data, str):
        data = data.encode("utf-8")
    try:
        located = yamlsafe.load(data)
    except yamlsafe.YamlProblem as problem:
        raise ConstitutionError(
            problem.message, file=file, line=problem.line, column=problem.column
        ) from None
    raw = located.value
    if raw is None:
        raise ConstitutionError(
            "the file is empty; a constitution needs at least 'name' and 'rules'",
            file=file,
            line=1,
            column=1,
        )
    if not isinstance(raw, dict):
        line, column = located.position(())
        raise ConstitutionError(
            f"a constitution must be a mapping with 'name' and 'rules', not {_kind(raw)}",
            file=file,
            line=line,
            column=column,
        )
    try:
        spec = ConstitutionSpec.model_validate(raw)
    except ValidationError as error:
        raise _from_validation(error, raw, located, file) from None
    _check_unique_ids(spec, located, file)
    return spec


def require_enabled_rules(rules: Sequence[RuleSpec | CompiledRule], file: str) -> None:
    """ConstitutionError naming `file` unless some rule is enabled: judged with no rule,
    every image would come out "safe" with nothing checked. (A policy with every rule
    disabled still loads and compiles; `judge check` and judging refuse it.)"""
    if any(rule.enabled for rule in rules):
        return
    what = f"each of its {len(rules)} rule(s) has enabled: false" if rules else "it has no rules"
    raise ConstitutionError(
        f"no rule to judge with ({what}): every image would be 'safe' with nothing "
        "checked. Enable at least one rule",
        file=file,
    )


def _check_unique_ids(spec: ConstitutionSpec, located: yamlsafe.Located, file: str) -> None:
    first: dict[str, int] = {}
    for index, rule in enumerate(spec.rules):
        if rule.id in first:
            earlier = located.position(("rules", first[rule.id], "id"))[0]
            line, column = located.position(("rules", index, "id"))
            raise ConstitutionError(
                f"duplicate rule id {rule.id!r} (first used at line {earlier})",
                file=file,
                line=line,
                column=column,
                rule_id=rule.id,
            )
        first[rule.id] = index


# ---- mapping pydantic errors back to the YAML ---------------------------------------


def _from_validation(
    error: ValidationError, raw: dict[str, Any], located: yamlsafe.Located, file: str
) -> ConstitutionError:
    problems = []
    for detail in error.errors(include_url=False):
        loc = tuple(detail["loc"])
        written = _written_path(loc, raw)
        missing = detail["type"] == "missing"
        if missing:  # point at (and name) the mapping that lacks the key
            written = written[:-1]
        line, column = located.position(written, key=detail["type"] == "extra_forbidden")
        rule_id, shown = _rule_and_path(written, raw)
        message = _message(detail, loc, written, raw)
        if shown:
            message = f"{shown}: {message}"
        problems.append((missing, line, column, rule_id, message))
    # A missing key is often the result of a misspelt one: report the misspelling first.
    problems.sort(key=lambda p: p[:3])
    ordered = [p[1:] for p in problems]
    line, column, rule_id, message = ordered[0]
    if len(ordered) > 1:
        rest = "\n".join(
            f"  {file}:{ln}:{col}:{f' [rule {rid}]' if rid else ''} {msg}"
            for ln, col, rid, msg in ordered[1:]
        )
        message += f"\n{len(ordered) - 1} more problem(s):\n{rest}"
    return ConstitutionError(message, file=file, line=line, column=column, rule_id=rule_id)


def _get(raw: Any, path: tuple[Any, ...]) -> Any:
    for part in path:
        in_dict = isinstance(raw, dict) and isinstance(part, str) and part in raw
        in_list = isinstance(raw, list) and isinstance(part, int) and 0 <= part < len(raw)
        if in_dict or in_list:
            raw = raw[part]
        else:
            return None
    return raw


def _written_path(loc: tuple[Any, ...], raw: dict[str, Any]) -> tuple[Any, ...]:
    """Translate a pydantic location into the path as written, undoing the precondition
    shorthands ("statement", [alternatives], {statement: ...}) that became `any_of`."""
    if len(loc) >= 5 and loc[0] == "rules" and loc[2] == "preconditions" and loc[4] == "any_of":
        base = loc[:4]
        written = _get(raw, base)
        rest = loc[5:]
        if isinstance(written, str):
            return base
        if isinstance(written, list):
            return base + rest
        if isinstance(written, dict) and "any_of" not in written and "statement" in written:
            return (*base, "statement")
    return loc


def _rule_and_path(path: tuple[Any, ...], raw: dict[str, Any]) -> tuple[str | None, str]:
    """The rule id for an error inside `rules[i]`, and the path shown in the message."""
    if len(path) >= 2 and path[0] == "rules" and isinstance(path[1], int):
        rule = _get(raw, path[:2])
        rule_id = rule.get("id") if isinstance(rule, dict) else None
        if not isinstance(rule_id, str) or not rule_id.strip():
            rule_id = f"#{path[1] + 1}"
        return rule_id, _dotted(path[2:])
    return None, _dotted(path)


def _dotted(path: tuple[Any, ...]) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _kind(value: Any) -> str:
    if value is None:
        return "nothing (null)"
    if isinstance(value, bool):
        return f"a boolean ({str(value).lower()})"
    if isinstance(value, int | float):
        return f"a number ({value})"
    if isinstance(value, str):
        return f"text ({value[:40]!r})"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return type(value).__name__


def _message(
    detail: Any, loc: tuple[Any, ...], written: tuple[Any, ...], raw: dict[str, Any]
) -> str:
    kind = detail["type"]
    ctx = detail.get("ctx") or {}
    value = detail.get("input")
    if kind == "missing":
        return f"required key {loc[-1]!r} is missing"
    if kind == "extra_forbidden":
        allowed = _allowed_keys(loc[:-1])
        hint = ""
        close = difflib.get_close_matches(str(loc[-1]), allowed, n=1)
        if close:
            hint = f"; did you mean {close[0]!r}?"
        return f"unknown key {loc[-1]!r} (allowed: {', '.join(allowed)}){hint}"
    if kind == "string_pattern_mismatch":
        return f"{value!r} {_SLUG_HELP}"
    if kind == "string_too_short" and ctx.get("min_length") == 1:
        return "must not be empty"
    if kind == "string_too_long":
        return f"is too long ({len(value)} characters; at most {ctx.get('max_length')})"
    if kind == "string_type":
        hint = "; put it in quotes" if isinstance(value, int | float | bool) else ""
        return f"must be text, not {_kind(value)}{hint}"
    if kind == "model_type" and "preconditions" in loc:
        return f"{_PRECONDITION_HELP}, not {_kind(value)}"
    if kind in ("model_type", "dict_type"):
        return f"must be a mapping, not {_kind(value)}"
    if kind == "list_type":
        return f"must be a list, not {_kind(value)}"
    if kind == "too_short":
        need = ctx.get("min_length")
        what = "alternative" if loc[-1] == "any_of" else "item"
        return (
            f"must have at least {need} {what}{'s' if need != 1 else ''}; it has none"
            if (ctx.get("actual_length") == 0)
            else f"must have at least {need} items"
        )
    if kind == "too_long":
        return f"has too many items ({ctx.get('actual_length')}; at most {ctx.get('max_length')})"
    if kind == "literal_error":
        return f"must be one of {ctx.get('expected')}, not {value!r}"
    if kind in ("bool_type", "bool_parsing"):
        return f"must be true or false, not {_kind(value)}"
    if kind in ("float_type", "float_parsing", "int_type", "int_parsing"):
        return f"must be a number, not {_kind(value)}"
    if kind in ("greater_than_equal", "less_than_equal", "greater_than", "less_than"):
        return f"{value!r} is out of range: {detail['msg'].lower()}"
    return str(detail["msg"])


def _unwrap(annotation: Any) -> Any:
    """The model class inside `X | None`, `list[X]`, `Annotated[...]`, if there is one."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType, list, typing.Annotated):
        for arg in typing.get_args(annotation):
            found = _unwrap(arg)
            if found is not None:
                return found
        return None
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    return None


def _allowed_keys(loc: tuple[Any, ...]) -> list[str]:
    """The keys allowed in the mapping at pydantic location `loc`."""
    model: type[BaseModel] | None = ConstitutionSpec
    for part in loc:
        if model is None:
            return []
        if isinstance(part, int):
            continue
        field = model.model_fields.get(part)
        model = _unwrap(field.annotation) if field else None
    if model is None:
        return []
    keys = list(model.model_fields)
    if model is PreconditionSpec:
        keys.insert(1, "statement")
    return keys


# ---- JSON Schema for editors ---------------------------------------------------------


def source_json_schema() -> dict[str, Any]:
    """The JSON Schema of the constitution source format, shorthands included.

    pydantic describes a precondition only in its full mapping form; authors may also
    write a statement, a list of alternatives, or `statement:` instead of `any_of:`, so
    the schema says so too (an editor would otherwise flag valid files).
    """
    schema = ConstitutionSpec.model_json_schema()
    full = schema["$defs"]["PreconditionSpec"]
    # An alternative may be a statement or a {text, objects} mapping; the shorthands
    # (a bare statement, `statement:`) take a statement only.
    text = full["properties"]["any_of"]["items"]["anyOf"][0]
    statement_form = {
        "type": "object",
        "additionalProperties": False,
        "properties": {"statement": text, "objects": full["properties"]["objects"]},
        "required": ["statement"],
    }
    alternatives = {k: v for k, v in full["properties"]["any_of"].items() if k != "title"}
    schema["$defs"]["PreconditionSpec"] = {
        "description": (
            "One precondition, met if any alternative is visible: a statement, a list of "
            "alternative statements, or a mapping with any_of (or statement) and objects."
        ),
        "anyOf": [
            text,
            alternatives,
            {k: v for k, v in full.items() if k != "description"},
            statement_form,
        ],
    }
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "judge constitution"
    return schema
