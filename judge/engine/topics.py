"""What the VLM relevance scan asks about a rule: a short topic, never the rule's text.

The relevance question reads "Does the image show anything related to the following topic,
even partly? ... Topic: <topic>". A rule's full text ("The image must not show ...") does
not fit there, so a rule is asked about by its topic: the phrase the author or the
compiler gave it ("nudity", "a syringe or needle"), or, for a lock made before topics
existed, a phrase built from its central object words ("genitals, anus or pubic area").
The fallback keeps every object word of the chain, so it asks at least as broadly as the
rule: a relevance scan that asks too narrowly would skip violated rules.
"""

from __future__ import annotations

import re

from judge import prompts
from judge.constitution.compiler import fallback_topic
from judge.constitution.schema import CompiledRule

RELEVANCE_PROMPT = "relevance_question"


def rule_topic(rule: CompiledRule) -> str:
    """The topic the relevance question asks about for `rule`.

    Returns:
        the rule's `topic`; else its central object words joined with "or"; else its
        category; else its id as words. Never the rule's text.
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


def relevance_question(topic: str) -> str:
    """The rendered relevance question about `topic` (the prompt takes it as a value)."""
    return prompts.render(RELEVANCE_PROMPT, topic=topic)
