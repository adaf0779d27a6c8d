"""JSON answers without free whitespace, and why a JSON answer could not be read.

A JSON-schema grammar that allows any whitespace between tokens lets a weak model answer
`{` and then newlines until its token budget runs out (a tiny Gemma 3 through vLLM did,
for every rule). vLLM 0.32 turns free whitespace off only for the whole server
(`--structured-outputs-config '{"backend": "xgrammar", "disable_any_whitespace": true}'`),
not per request; so judge sends, per request, an EBNF grammar derived from the schema by
xgrammar with no free whitespace, which any vLLM server honours (`structured_outputs:
{"grammar": ...}`), and the in-process engine and transformers use the same grammar.

The separators are json.dumps's (", " and ": "): one fixed spelling, the one models (and
the toy VLM, which was trained on json.dumps text) write. Compact separators would force
`{"rating":"Yes"` on a model that learned `{"rating": "Yes"`.
"""

from __future__ import annotations

import functools
import json
import re
from typing import Any

# json.dumps's separators: the only whitespace the grammar allows.
SEPARATORS = (", ", ": ")


@functools.lru_cache(maxsize=16)
def _grammar(schema_text: str) -> str | None:
    try:
        import xgrammar
    except ImportError:
        return None
    try:
        grammar = xgrammar.Grammar.from_json_schema(
            schema_text, any_whitespace=False, separators=SEPARATORS
        )
    except Exception:
        return None
    return str(grammar)


def compact_json_grammar(schema: dict[str, Any]) -> str | None:
    """An EBNF grammar (root rule `root`) for `schema` that allows no whitespace between
    JSON tokens but json.dumps's separators; None without xgrammar or for a schema it
    cannot convert."""
    return _grammar(json.dumps(schema, sort_keys=True))


_BLANK_RUN = re.compile(r"\s{8,}")


def unreadable_json_reason(text: str) -> str:
    """Why a constrained JSON answer gave no rating, in words the undecided verdict shows."""
    stripped = text.strip()
    if not stripped:
        return "the answer was empty"
    blanks = sum(len(m.group(0)) for m in _BLANK_RUN.finditer(text))
    if stripped.startswith("{") and blanks >= max(8, len(text) // 2):
        return (
            f"the JSON answer was padded with whitespace ({blanks} of {len(text)} characters) "
            f"and cut off before a rating: {stripped[:60]!r}; the server's JSON grammar allows "
            "free whitespace (start vLLM with --structured-outputs-config "
            "'{\"backend\": \"xgrammar\", \"disable_any_whitespace\": true}')"
        )
    if stripped.startswith("{") and not stripped.endswith("}"):
        return f"the JSON answer was cut off before a rating: {stripped[:200]!r}"
    return f"unparseable summary: {text[:200]!r}"
