"""Stage 5, cascaded reasoning: think step by step, then summarise as a JSON rating.

Turn 1 asks the model to reason about one statement and the image (prompts/reason.j2);
turn 2 asks for `{"rating": "Yes"|"No", "rationale": "..."}` (prompts/summarise.j2),
constrained by a JSON schema where the back end enforces one.

Only an unambiguous answer counts: the JSON rating (tolerantly read: code fences, single
quotes, prose around the object, lower case, a cut-off rationale), or a whole answer that
is just "Yes" or "No". Anything else ("No clear answer", "Not sure", "Yes and no") is no
rating, and an answer still without one after one retry is *undecided*, never "No": a
model that failed to answer has not shown the content is absent.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from PIL import Image

from judge import prompts, queries
from judge.models.base import Backend, Generation, Message
from judge.models.json_grammar import unreadable_json_reason

REASON_TOKENS = 256
SUMMARY_TOKENS = 96

SUMMARY_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "rating": {"type": "string", "enum": ["Yes", "No"]},
        "rationale": {"type": "string"},
    },
    "required": ["rating", "rationale"],
    "additionalProperties": False,
}

_OBJECT = re.compile(r"\{.*\}", re.DOTALL)
# A rating value must end where the value ends: "rating": "No clear answer" is no rating.
_RATING = re.compile(
    r"""["']?rating["']?\s*[:=]\s*["']?\s*(yes|no)[ \t]*(?=["',}\r\n]|$)""", re.IGNORECASE
)
_RATIONALE = re.compile(r"""["']?rationale["']?\s*[:=]\s*["'](.*?)["']\s*[,}]""", re.I | re.S)
# The whole answer is one word, give or take punctuation, markup and case: "**Yes.**".
_BARE = re.compile(r"^\W*(yes|no)\W*$", re.IGNORECASE)


@dataclass(frozen=True)
class CascadeItem:
    statement: str
    image: Image.Image
    image_key: str


@dataclass(frozen=True)
class CascadeResult:
    rating: bool | None  # True "Yes", False "No", None undecided
    rationale: str | None = None
    reasoning: str | None = None
    error: str | None = None
    generations: int = 0  # model calls spent, retries included


def parse_rating(text: str) -> tuple[bool, str] | None:
    """(rating, rationale) from a summary turn, or None unless it holds one unambiguous
    rating: the JSON rating, or an answer that is only "Yes" or "No"."""
    cleaned = text.strip().removeprefix("```json").removeprefix("```").removesuffix("```")
    match = _OBJECT.search(cleaned)
    if match:
        try:
            data = json.loads(match.group(0))
        except json.JSONDecodeError:
            data = None
        if isinstance(data, dict):
            lowered = {str(k).lower(): v for k, v in data.items()}
            rating = str(lowered.get("rating", "")).strip().lower()
            if rating in ("yes", "no"):
                return rating == "yes", str(lowered.get("rationale") or "").strip()
    # Not JSON (cut off, or loosely written): a rating field, if it says one thing only.
    ratings = {value.lower() for value in _RATING.findall(cleaned)}
    if len(ratings) == 1:
        why = _RATIONALE.search(cleaned)
        return ratings.pop() == "yes", (why.group(1).strip() if why else "")
    if not ratings:
        bare = _BARE.match(cleaned)
        if bare:
            return bare.group(1).lower() == "yes", ""
    return None


def _first_turn(item: CascadeItem) -> Message:
    # Same [instructions][image][question] order as the Yes/No queries: the back end's
    # prefix cache then reuses the image's tokens.
    item.image.info["judge_key"] = item.image_key
    return Message.user(
        queries.instructions(), item.image, prompts.render("reason", statement=item.statement)
    )


async def _generate_with_retry(
    backend: Backend, chats: list[list[Message]], max_tokens: int, schema: dict[str, Any] | None
) -> tuple[list[Generation], list[int]]:
    """Generate; chats whose request failed are sent once more. Returns texts and calls."""
    results = await backend.generate(chats, max_tokens, schema)
    calls = [1] * len(chats)
    failed = [i for i, g in enumerate(results) if g.error is not None]
    if failed:
        again = await backend.generate([chats[i] for i in failed], max_tokens, schema)
        for i, generation in zip(failed, again, strict=True):
            results[i] = generation
            calls[i] += 1
    return results, calls


async def run_cascade(backend: Backend, items: Sequence[CascadeItem]) -> list[CascadeResult]:
    """Reason about each item and read its rating; one batch per turn for all items."""
    if not items:
        return []
    chats = [[_first_turn(item)] for item in items]
    reasons, calls = await _generate_with_retry(backend, chats, REASON_TOKENS, None)
    results: list[CascadeResult | None] = [None] * len(items)
    summary_chats: dict[int, list[Message]] = {}
    summarise = prompts.render("summarise")
    for i, generation in enumerate(reasons):
        if generation.error is not None:
            results[i] = CascadeResult(
                None, error=f"reasoning failed: {generation.error}", generations=calls[i]
            )
        else:
            summary_chats[i] = [
                *chats[i],
                Message.assistant(generation.text),
                Message.user(summarise),
            ]
    order = list(summary_chats)
    summaries, more = await _generate_with_retry(
        backend, [summary_chats[i] for i in order], SUMMARY_TOKENS, SUMMARY_SCHEMA
    )
    retry: list[int] = []
    for i, generation, spent in zip(order, summaries, more, strict=True):
        calls[i] += spent
        parsed = None if generation.error else parse_rating(generation.text)
        if parsed is not None:
            results[i] = CascadeResult(parsed[0], parsed[1], reasons[i].text, generations=calls[i])
        elif generation.error is not None:
            results[i] = CascadeResult(
                None,
                reasoning=reasons[i].text,
                error=f"summary failed: {generation.error}",
                generations=calls[i],
            )
        else:
            # Unparseable: ask once more, showing the model its own answer.
            summary_chats[i] = [
                *summary_chats[i],
                Message.assistant(generation.text),
                Message.user(summarise),
            ]
            retry.append(i)
    if retry:
        again = await backend.generate(
            [summary_chats[i] for i in retry], SUMMARY_TOKENS, SUMMARY_SCHEMA
        )
        for i, generation in zip(retry, again, strict=True):
            calls[i] += 1
            parsed = None if generation.error else parse_rating(generation.text)
            if parsed is not None:
                results[i] = CascadeResult(
                    parsed[0], parsed[1], reasons[i].text, generations=calls[i]
                )
            else:
                why = generation.error or unreadable_json_reason(generation.text)
                results[i] = CascadeResult(
                    None, reasoning=reasons[i].text, error=why, generations=calls[i]
                )
    return [r if r is not None else CascadeResult(None, error="no answer") for r in results]
