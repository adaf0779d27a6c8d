"""The questions judge asks a model, built in one place.

Every Yes/No question is one user turn laid out [instructions][image][question]
(`judge.models.base.YesNoQuery`), with the same instructions for every question, so a
prefix cache serves the instructions and an image's tokens to all questions about that
image. Two questions are asked:

* visibility: "is <statement> visible?", about an image, a crop, a masked image, or no
  image at all (the language prior M(None, c));
* relevance: "does the image show anything related to <topic>?", the served model's own
  relevance scan, about a rule's short topic, never its full text (`rule_topic`).

The engine, the prior cache, the naive benchmark algorithm and the toy model checks all
build their questions here, so a change of wording reaches all of them at once.
"""

from __future__ import annotations

import re
from functools import cache

from PIL import Image

from judge import prompts
from judge.constitution.compiler import fallback_topic
from judge.constitution.schema import CompiledRule
from judge.models.base import YesNoQuery

INSTRUCTIONS_PROMPT = "visibility_instructions"
VISIBILITY_PROMPT = "visibility_question"
RELEVANCE_PROMPT = "relevance_question"


@cache
def instructions() -> str:
    """The instructions every Yes/No question (and the cascade's first turn) starts with."""
    return prompts.render(INSTRUCTIONS_PROMPT)


def visibility_question(statement: str) -> str:
    """The question whether `statement` is visible (the prompt takes it as a value)."""
    return prompts.render(VISIBILITY_PROMPT, statement=statement)


def relevance_question(topic: str) -> str:
    """The question whether the image shows anything related to `topic`."""
    return prompts.render(RELEVANCE_PROMPT, topic=topic)


def visibility_query(
    statement: str, image: Image.Image | None = None, key: str | None = None
) -> YesNoQuery:
    """Is `statement` visible in `image`? With `image` None: the language prior's query."""
    return YesNoQuery(
        instructions=instructions(),
        question=visibility_question(statement),
        image=image,
        image_key=key if image is not None else None,
    )


def relevance_query(rule: CompiledRule, image: Image.Image, key: str | None) -> YesNoQuery:
    """Does `image` show anything related to `rule`'s topic?"""
    return YesNoQuery(
        instructions=instructions(),
        question=relevance_question(rule_topic(rule)),
        image=image,
        image_key=key,
    )


def visibility_versions() -> dict[str, int]:
    """The versions of the prompts a visibility answer (and so a prior) depends on."""
    return prompts.versions(INSTRUCTIONS_PROMPT, VISIBILITY_PROMPT)


def rule_topic(rule: CompiledRule) -> str:
    """The topic the relevance question asks about for `rule`.

    A rule's full text ("The image must not show ...") does not read as a topic, so the
    question names the phrase the author or the compiler gave the rule ("nudity"), or, for
    a lock made before topics existed, its central object words joined with "or": every
    object word of the chain, so it asks at least as broadly as the rule (a scan that
    asks too narrowly would skip violated rules).

    Returns:
        the rule's `topic`; else its central object words; else its category; else its
        id as words. Never the rule's text.
    """
    if rule.topic:
        return rule.topic
    # The compiler's own stand-in, so a lock without topics asks what a recompile would.
    from_objects = fallback_topic(rule.preconditions)
    if from_objects:
        return from_objects
    if rule.category and rule.category.strip():
        return rule.category.strip()
    return re.sub(r"[-_.]+", " ", rule.id).strip()
