"""The Yes/No label tokens of a tokenizer, and turning label log-probabilities into a result.

Every back end reads the probability of the same spellings (`YES_VARIANTS`, `NO_VARIANTS`);
a spelling counts only where the tokenizer makes it one token, because the judge reads one
next token. A tokenizer with no single-token spelling of Yes or of No cannot be used.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from judge.errors import TokenizerError
from judge.models.base import NO_VARIANTS, YES_VARIANTS, YesNoResult

TOKENIZER_FIX = (
    "use a model whose tokenizer encodes 'Yes' and 'No' as single tokens "
    "(Qwen2-VL, Qwen2.5-VL, InternVL and LLaVA models do)"
)


@dataclass(frozen=True)
class LabelTokens:
    """Token ids of the single-token spellings of Yes and No."""

    yes: dict[int, str]
    no: dict[int, str]

    @property
    def ids(self) -> list[int]:
        return sorted({*self.yes, *self.no})

    def spelling(self, token_id: int) -> str | None:
        return self.yes.get(token_id) or self.no.get(token_id)


def find_label_tokens(
    encode: Callable[[str], list[int]], *, where: str, url: str | None = None
) -> LabelTokens:
    """Look up the single-token spellings of Yes and No.

    Args:
        encode: text -> token ids, without special tokens.
        where: the model or server, for the error message.
        url: the server, if any, for the error message.

    Raises:
        TokenizerError: no spelling of Yes, or none of No, is a single token.
    """
    yes = {ids[0]: v for v in YES_VARIANTS if len(ids := encode(v)) == 1}
    no = {ids[0]: v for v in NO_VARIANTS if len(ids := encode(v)) == 1}
    if not yes or not no:
        missing = " and ".join(w for w, d in (("Yes", yes), ("No", no)) if not d)
        raise TokenizerError(
            f"the tokenizer of {where} has no single token for {missing}",
            fix=TOKENIZER_FIX,
            url=url,
        )
    if set(yes) & set(no):
        raise TokenizerError(
            f"the tokenizer of {where} maps Yes and No to the same token",
            fix=TOKENIZER_FIX,
            url=url,
        )
    return LabelTokens(yes=yes, no=no)


def result_from_logprobs(
    logprobs: Iterable[tuple[str, float]], *, prompt_tokens: int = 0, cached_tokens: int = 0
) -> YesNoResult:
    """Sum the probabilities of each label's spellings.

    Args:
        logprobs: (spelling, logprob) pairs; other tokens are ignored, a repeated
            spelling counts once.

    Returns:
        The result, with `missing=True` when neither label is among `logprobs`.
    """
    seen: dict[str, float] = {}
    for spelling, logprob in logprobs:
        if spelling in YES_VARIANTS or spelling in NO_VARIANTS:
            seen.setdefault(spelling, logprob)
    p_yes = sum(math.exp(lp) for s, lp in seen.items() if s in YES_VARIANTS)
    p_no = sum(math.exp(lp) for s, lp in seen.items() if s in NO_VARIANTS)
    return YesNoResult(
        p_yes=p_yes,
        p_no=p_no,
        missing=not seen,
        prompt_tokens=prompt_tokens,
        cached_tokens=cached_tokens,
    )
