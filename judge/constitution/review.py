"""Which compiled rules a person must look at before the lock is used.

A compile can "succeed" with output no policy author would sign: a rewrite that is only
':', statements such as 'image image image', a chain that fell back to the rule's own
text. Such a rule would then be judged as written by the model, and an image could come
out "safe" for no reason an author chose. So a rule *needs review* when:

* its best objectiveness score stayed below the target, or could not be scored at all;
* a model-written statement (or rewritten rule text) fails basic sanity: no letters, under
  two words, a word repeated three times in a row, a duplicate alternative, or the rule's
  own text used as a statement;
* the precondition extraction fell back to the rule's text;
* a model-written chain reached an extraction limit (`MAX_PRECONDITIONS` preconditions,
  `MAX_ALTERNATIVES` alternatives or `MAX_OBJECTS` object words): constrained decoding
  stops a list at its cap and the tolerant parser cuts a longer one there, so what the
  model gave beyond it is gone, and a person must see what is left.

Hand-written chains are the author's own and are not second-guessed here (`judge check`
lints them instead). `judge compile` lists these rules and exits with `ReviewError`'s
code; judging with such a lock is refused unless explicitly allowed.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from judge.constitution.schema import FALLBACK, HAND_WRITTEN, CompiledRule, Lock

# The most one precondition extraction keeps (the compiler's JSON schema and parser hold
# a model's answer to these).
MAX_PRECONDITIONS = 16
MAX_ALTERNATIVES = 16  # per precondition
MAX_OBJECTS = 8  # central object words per precondition

_WORD = re.compile(r"[^\W\d_]+(?:['’-][^\W\d_]+)*")


def _words(text: str) -> list[str]:
    return [w.lower() for w in _WORD.findall(text)]


def text_problems(text: str) -> list[str]:
    """What makes `text` unusable as a statement or a rule, if anything."""
    words = _words(text)
    if not words:
        return ["has no letters"]
    problems = []
    if len(text.split()) < 2:
        problems.append("is under two words")
    for i in range(len(words) - 2):
        if words[i] == words[i + 1] == words[i + 2]:
            problems.append(f"repeats {words[i]!r} three times in a row")
            break
    return problems


def _same(a: str, b: str) -> bool:
    """The same words (case, spacing and punctuation aside); text without words is
    reported as such, never as a copy."""
    words = _words(a)
    return bool(words) and words == _words(b)


def chain_problems(rule: CompiledRule) -> list[str]:
    """Sanity problems of every statement of `rule`'s chain, as readable phrases."""
    out = []
    for index, pre in enumerate(rule.preconditions, 1):
        seen: list[str] = []
        for statement in pre.any_of:
            shown = f"precondition {index}: {statement!r}"
            out += [f"{shown} {p}" for p in text_problems(statement)]
            if any(_same(statement, s) for s in seen):
                out.append(f"{shown} is a duplicate alternative")
            if _same(statement, rule.source_text) or _same(statement, rule.text):
                out.append(f"{shown} is the rule's own text, not a precondition")
            seen.append(statement)
    return out


def limit_problems(rule: CompiledRule) -> list[str]:
    """Where `rule`'s chain reached an extraction limit, as readable phrases."""
    out = []
    if len(rule.preconditions) >= MAX_PRECONDITIONS:
        out.append(f"the chain has {len(rule.preconditions)} preconditions")
    for index, pre in enumerate(rule.preconditions, 1):
        if len(pre.any_of) >= MAX_ALTERNATIVES:
            out.append(f"precondition {index} has {len(pre.any_of)} alternatives")
        if len(pre.objects) >= MAX_OBJECTS:
            out.append(f"precondition {index} has {len(pre.objects)} object words")
    return [f"{p}, the extraction limit: any more the model gave were cut" for p in out]


def review_reasons(rule: CompiledRule) -> list[str]:
    """Why `rule` needs review; empty when it does not."""
    made = rule.produced_by
    reasons = []
    if rule.objectiveness is not None and not rule.objectiveness.reached:
        reasons.append(
            f"objectiveness {rule.objectiveness.score} stayed below the target after "
            f"{max(rule.objectiveness.attempts - 1, 0)} rewrite(s)"
        )
    if made.objectiveness == FALLBACK:
        reasons.append("the model's objectiveness score could not be read")
    if made.text not in (HAND_WRITTEN, FALLBACK):
        reasons += [f"the rewritten rule text {p}" for p in text_problems(rule.text)]
    if made.preconditions == FALLBACK:
        reasons.append("precondition extraction fell back to the rule's own text")
    elif made.preconditions != HAND_WRITTEN:
        reasons += limit_problems(rule) + chain_problems(rule)
    return reasons


def needs_review(rules: Lock | Iterable[CompiledRule]) -> dict[str, list[str]]:
    """Rule id -> reasons, for every rule that needs review (enabled or not)."""
    items = rules.rules if isinstance(rules, Lock) else rules
    found = {rule.id: review_reasons(rule) for rule in items}
    return {rule_id: reasons for rule_id, reasons in found.items() if reasons}


def describe(found: dict[str, list[str]]) -> str:
    """The rules and reasons as indented lines, for messages and reports."""
    return "\n".join(f"  {rule_id}: {'; '.join(reasons)}" for rule_id, reasons in found.items())
