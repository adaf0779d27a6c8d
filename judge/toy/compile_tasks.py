"""The compile tasks of the toy world: rules of the toy grammar, and their right answers.

The toy VLM learns CLUE's stages 1 and 2 for this grammar (judge/toy/train_vlm.py): the
objectiveness score, and the precondition chain with object words and a topic, both as the
JSON the compiler asks for, answering the compiler's own prompts. A rule names one, two or
three colours of shapes, all together, and a precondition may allow two colours:

    Images must not show a yellow shape together with a red or a blue shape.
    -> [a yellow shape] AND ([a red shape] OR [a blue shape])

`split()` keeps some chains out of training altogether (in every wording), so a test can
check that `judge compile --model toy` extracts chains it never saw; the toy constitution's
own rules are always in training.

Stage 1 has something to do too: a *vague* rule names its shapes by a judgement word
instead of a colour (`VAGUE`: "a menacing shape" for a red one). The model scores it low
(`VAGUE_SCORE`) and rewrites it into the grammar (the same chain, in the first wording),
which then scores 10:

    Images must not show a menacing shape next to a garish shape.     -> score 3
    -> rewrite: Images must not show a red shape together with a yellow shape.  -> score 10
"""

from __future__ import annotations

import itertools
import json
import random
from dataclasses import dataclass

COLOURS: tuple[str, ...] = ("red", "blue", "green", "yellow")  # also the topic's order
HELD_OUT_SEED = 1234
N_HELD_OUT = 20
# Wordings of a rule beyond the first three: (opening, link of two preconditions, ending).
# With three wordings the LM learnt where in a sentence each colour sits, and copied
# unseen chains right for one seed in two (text-only: 16 and 7 of 20 held out); with
# eight it must read the colours themselves (20 of 20 on that second seed).
_WORDINGS = (
    ("Do not allow images that show ", " and ", ""),
    ("No image may show ", " together with ", ""),
    ("Images showing ", " plus ", " are not allowed"),
    ("Never show ", " and also ", ""),
    ("Flag any image with ", " as well as ", ""),
)
N_WORDINGS = 3 + len(_WORDINGS)

# The objectiveness answer: every rule of the grammar names only colours of shapes.
SCORE_ANSWER = json.dumps({
    "explanation": "It names only shapes and their colours, which anyone can see.",
    "score": 10,
})
# The judgement word that stands for each colour in a vague rule. A toy convention: the
# model learns what each means, as a real one knows what "gory" looks like.
VAGUE: dict[str, str] = {"red": "menacing", "blue": "gloomy", "green": "sickly",
                         "yellow": "garish"}
VAGUE_SCORE = 3
VAGUE_EXPLANATION = "It names its shapes by judgement words, not by colours anyone can see."
VAGUE_SCORE_ANSWER = json.dumps({"explanation": VAGUE_EXPLANATION, "score": VAGUE_SCORE})

Chain = tuple[tuple[str, ...], ...]  # preconditions, each its alternative colours


@dataclass(frozen=True)
class ToyRule:
    chain: Chain
    wording: int
    vague: bool = False  # shapes named by `VAGUE` judgement words instead of colours

    @property
    def text(self) -> str:
        parts = [_phrase(alts, self.vague) for alts in self.chain]
        w = self.wording % N_WORDINGS
        listed = ", ".join(parts[:-1]) + f" and {parts[-1]}" if len(parts) > 1 else parts[0]
        if w >= 3:
            lead, link, tail = _WORDINGS[w - 3]
            body = f"{parts[0]}{link}{parts[1]}" if len(parts) == 2 else listed
            return f"{lead}{body}{tail}."
        if len(parts) == 1:
            tail = (", however small or off-centre.", ".", " anywhere in the picture.")[w]
            return f"Images must not show {parts[0]}{tail}"
        if len(parts) == 2:
            link = (" together with ", " and ", " next to ")[w]
            end = ("", " in the same picture", "")[w]
            return f"Images must not show {parts[0]}{link}{parts[1]}{end}."
        end = ("together", "in the same picture", "at once")[w]
        return f"Images must not show {listed} {end}."

    def preconditions(self) -> list[dict[str, list[str]]]:
        """The chain as the lock holds it: statements and object words per precondition."""
        return [{"any_of": [f"a {c} shape" for c in alts], "objects": [f"{c} shape" for c in alts]}
                for alts in self.chain]

    @property
    def topic(self) -> str:
        names = [c for c in COLOURS if any(c in alts for alts in self.chain)]
        head = ", ".join(names[:-1])
        return f"{head + ' or ' if head else ''}{names[-1]} shapes"

    def answer(self) -> str:
        """The JSON answer to the compiler's precondition prompt."""
        return json.dumps({"preconditions": self.preconditions(), "topic": self.topic})

    def objective(self) -> ToyRule:
        """The rule as the rewrite gives it: the same chain, colours named, first wording."""
        return ToyRule(self.chain, 0)

    def score_answer(self) -> str:
        """The JSON answer to the compiler's objectiveness prompt."""
        return VAGUE_SCORE_ANSWER if self.vague else SCORE_ANSWER

    def rewrite_answer(self) -> str:
        """The JSON answer to the compiler's rewrite prompt."""
        return json.dumps({"rule": self.objective().text})


def _phrase(alts: tuple[str, ...], vague: bool = False) -> str:
    names = [VAGUE[c] if vague else c for c in alts]
    return f"a {names[0]} shape" if len(names) == 1 else f"a {names[0]} or a {names[1]} shape"


def all_chains() -> list[Chain]:
    """Every chain of the grammar: 1-3 single colours, or a pair of alternatives alone or
    with one more colour before or after it (100 chains)."""
    out: list[Chain] = []
    for n in (1, 2, 3):
        out += [tuple((c,) for c in cols) for cols in itertools.permutations(COLOURS, n)]
    for a, b in itertools.permutations(COLOURS, 2):
        out.append(((a, b),))
        for c in COLOURS:
            if c not in (a, b):
                out += [((c,), (a, b)), ((a, b), (c,))]
    return out


def toy_constitution_chains() -> set[Chain]:
    """The chains of the toy constitution's rules."""
    from judge.toy.labelled import toy_constitution

    return {tuple(tuple(str(getattr(a, "text", a)).split()[1] for a in p.any_of)
                  for p in rule.preconditions or [])
            for rule in toy_constitution().rules}


def split() -> tuple[list[ToyRule], list[ToyRule]]:
    """(training rules in every wording, held-out rules): `N_HELD_OUT` chains that never
    appear in training, each in one wording. The toy constitution's chains stay in training."""
    kept = toy_constitution_chains()
    chains = all_chains()
    random.Random(HELD_OUT_SEED).shuffle(chains)
    held = [c for c in chains if c not in kept][:N_HELD_OUT]
    train = [ToyRule(c, w) for c in chains if c not in held for w in range(N_WORDINGS)]
    return train, [ToyRule(c, i) for i, c in enumerate(held)]


def vague_held_out() -> list[ToyRule]:
    """The held-out chains written vaguely, one wording each: neither the chain nor any
    rewrite of it was trained."""
    return [ToyRule(r.chain, r.wording, vague=True) for r in split()[1]]
