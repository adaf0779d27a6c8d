"""Warnings about hand-written preconditions that do not mean what their author meant.

A constitution can be valid YAML and valid schema and still say something else than its
author intended. The two ways seen in real policies:

* **Commas in flow lists.** In YAML, `[a, b]` is two items, so
  `any_of: [the chest is bare, with no clothing on it]` is two OR alternatives, and
  "with no clothing on it" alone meets the precondition. An item that begins with a
  connecting word ("with", "and", "while", ...), a participle ("facing the camera"), a
  fragment of under three words ("a machete"), or a lower-case continuation of an item
  that has no verb ("no medical gloves, medical staff ... are visible") is reported with
  its file:line:column, and the fix: block style (one alternative per line) or quotes.
* **Absences.** "no medical gloves are visible" cannot be confirmed by asking whether
  something is visible: the model is asked about the gloves, and "Yes" would mean the
  opposite. Statements with "no", "not", "without", "nothing", ... are reported.

Hand-written statements also get the sanity checks a compiled chain must pass
(`judge.constitution.review.text_problems`, duplicates). These are warnings: the policy
still loads, and `judge check` prints them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from judge.constitution import yamlsafe
from judge.constitution.loader import parse_spec
from judge.constitution.review import text_problems


def _set(words: str) -> frozenset[str]:
    return frozenset(words.split())


# Words that continue a sentence rather than start a statement.
_CONNECTORS = _set(
    "with without and or but while whereas where which who whom whose that nor plus "
    "except unless including as so then when if because"
)
# Words a statement may start with (a determiner, a quantifier, a pronoun).
_STARTERS = _set(
    "a an the one two three four five six seven eight nine ten several many some any each "
    "every both either neither this that these those his her its their my our your "
    "someone somebody something anyone anybody another at more most less fewer few "
    "no nobody nothing none all half"
)
# Verbs that make an item a statement of its own; an item with none is a fragment.
_VERBS = _set(
    "is are was were be been being has have had can could does do did will would shows "
    "show holds hold touches touch lies lie wears wear points point covers cover stands "
    "stand sits sit contains contain bears bear appears appear looks look swings swing "
    "hits hit kicks kick flows flow burns burn kneels kneel leads lead"
)
_ABSENCE = re.compile(r"\b(no|not|without|nothing|none|nobody|never|neither|nor)\b|n't\b", re.I)


@dataclass(frozen=True)
class LintWarning:
    """One lint finding, located in the source file."""

    file: str
    line: int
    column: int
    rule_id: str
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.column}: [rule {self.rule_id}] {self.message}"


def _words(text: str) -> list[str]:
    return re.findall(r"[\w'’-]+", text.lower())


def split_reason(previous: str, item: str) -> str | None:
    """Why `item`, the flow-list item after `previous`, looks like part of one sentence
    with it; None if it reads as a statement of its own."""
    words = _words(item)
    if not words:
        return None
    first = words[0]
    if first in _CONNECTORS:
        return f"it begins with {first!r}"
    if first.endswith("ing") and first not in _STARTERS and len(first) > 4:
        return f"it begins with the participle {first!r}"
    before = _words(previous)
    if len(before) < 3:
        return f"the item before it, {previous!r}, is a fragment"
    if first not in _STARTERS and not item[:1].isupper() and not _VERBS & set(before):
        return f"it continues {previous!r}, which has no verb"
    return None


def statement_paths(
    raw_rule: dict[str, Any], base: tuple[Any, ...], located: yamlsafe.Located
) -> list[tuple[tuple[Any, ...], list[tuple[tuple[Any, ...], str]], bool]]:
    """Per precondition: its path, its (path, statement) items, and whether it is a flow
    list."""
    out = []
    for j, pre in enumerate(raw_rule.get("preconditions") or []):
        here = (*base, "preconditions", j)
        if isinstance(pre, str):
            out.append((here, [(here, pre)], False))
        elif isinstance(pre, list):
            out.append((here, [((*here, k), s) for k, s in enumerate(pre)], here in located.flow))
        elif isinstance(pre, dict) and isinstance(pre.get("any_of"), list):
            items = [
                # An alternative in its mapping form ({text, objects}): its statement.
                ((*here, "any_of", k, "text"), s["text"])
                if isinstance(s, dict) and "text" in s
                else ((*here, "any_of", k), s)
                for k, s in enumerate(pre["any_of"])
            ]
            out.append((here, items, (*here, "any_of") in located.flow))
        elif isinstance(pre, dict) and isinstance(pre.get("statement"), str):
            out.append((here, [((*here, "statement"), pre["statement"])], False))
    return out


def lint_source(data: bytes | str, file: str = "<constitution>") -> list[LintWarning]:
    """Warnings about the preconditions of a constitution's text (which must be valid:
    ConstitutionError otherwise)."""
    if isinstance(data, str):
        data = data.encode("utf-8")
    parse_spec(data, file)
    located = yamlsafe.load(data)
    found: list[LintWarning] = []
    for i, raw_rule in enumerate(located.value["rules"]):
        rule_id = str(raw_rule["id"])

        def warn(path: tuple[Any, ...], message: str, rule_id: str = rule_id) -> None:
            line, column = located.position(path)
            found.append(LintWarning(file, line, column, rule_id, message))

        for _, items, flow in statement_paths(raw_rule, ("rules", i), located):
            texts = [str(text) for _, text in items]
            for k, (path, text) in enumerate(items):
                text = str(text)
                reason = split_reason(texts[k - 1], text) if flow and k else None
                if flow and len(texts) > 1 and reason is None and len(_words(text)) < 3:
                    reason = "it is a fragment of under three words"
                if reason:
                    warn(
                        path,
                        f"alternative {text!r} looks like part of a longer sentence ({reason}): "
                        "in a flow list `[a, b]` every comma starts a new OR alternative. "
                        "Write one alternative per line (block style), or quote an "
                        "alternative that holds a comma",
                    )
                match = _ABSENCE.search(text)
                if match:
                    warn(
                        path,
                        f"statement {text!r} asserts an absence ({match.group(0)!r}): asking "
                        "whether something is visible cannot confirm that it is missing. "
                        "Say what is visible instead (e.g. 'the chest is bare', not 'no "
                        "clothing covers the chest')",
                    )
                for problem in text_problems(text):
                    warn(path, f"statement {text!r} {problem}")
                if any(t.lower() == text.lower() for t in texts[:k]):
                    warn(path, f"statement {text!r} is a duplicate alternative")
    return found


def lint_file(path: str | Path) -> list[LintWarning]:
    """`lint_source` of the file at `path`."""
    path = Path(path)
    return lint_source(path.read_bytes(), str(path))
