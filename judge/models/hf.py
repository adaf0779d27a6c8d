"""The `hf` back end: transformers in process (CPU or GPU, no server).

`AutoModelForImageTextToText` + `AutoProcessor`; the processor's chat template renders the
same turns vLLM would, so the token sequences match the other back ends. Yes/No queries
run as batched forward passes with left padding; the next-token logits are softmaxed over
the full vocabulary and the label spellings summed. Generation is greedy; a JSON schema is
enforced with xgrammar's logits processor when xgrammar is installed (it comes with vLLM,
and with `judge[hf]`), and left to the caller's tolerant parser when it is not. The work
runs in one worker thread, so the event loop stays free.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Sequence
from typing import Any

from judge.errors import BackendError, NoVisionError
from judge.models._batch import run_isolated
from judge.models._chat import to_hf, yes_no_chat
from judge.models._inprocess import GenRequest, InProcessBackend
from judge.models.base import Chat, Generation, YesNoQuery, YesNoResult
from judge.models.family import (
    Family,
    added_bos,
    cast_floating,
    family_of,
    leading_repeats,
    missing_dependency_hint,
    strip_added_bos,
)
from judge.models.json_grammar import SEPARATORS
from judge.models.registry import require

INSTALL = "pip install 'judge[hf]'  (torch, transformers)"


class HFBackend(InProcessBackend):
    """A vision-language model run by transformers.

    Args:
        model: model id (from the local hub cache) or a local folder.
        device: "cpu", "cuda", ...; default cuda when available, else cpu.
        dtype: "float32", "bfloat16", "float16" or "auto"; default float32 on CPU
            (exact agreement with the other back ends), the model's own dtype on GPU.
        max_batch: most sequences in one forward pass.
    """

    kind = "hf"

    def __init__(
        self,
        model: str,
        *,
        device: str | None = None,
        dtype: str | None = None,
        max_batch: int = 16,
        trust_remote_code: bool = False,
    ) -> None:
        torch = require("torch", backend=self.kind, install=INSTALL)
        transformers = require("transformers", backend=self.kind, install=INSTALL)
        self._torch = torch
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        dtype = dtype or ("float32" if self.device == "cpu" else "auto")
        torch_dtype = dtype if dtype == "auto" else getattr(torch, dtype)
        try:
            config = transformers.AutoConfig.from_pretrained(
                model, trust_remote_code=trust_remote_code
            )
        except (OSError, ValueError) as exc:
            raise _load_error(model, exc) from None
        # The family table (judge.models.family) says what this family needs and does.
        self.family = family_of(getattr(config, "model_type", None))
        try:
            self._processor = transformers.AutoProcessor.from_pretrained(
                model, trust_remote_code=trust_remote_code
            )
        except ImportError as exc:
            raise _missing_package(model, self.family, exc) from None
        except (OSError, ValueError) as exc:
            raise _load_error(model, exc) from None
        if getattr(config, "vision_config", None) is None or not hasattr(
            self._processor, "image_processor"
        ):
            raise NoVisionError(
                f"the model {model!r} takes no images (no vision tower or image processor)",
                fix="choose a vision-language model, e.g. Qwen/Qwen2.5-VL-7B-Instruct",
            )
        try:
            self._model = transformers.AutoModelForImageTextToText.from_pretrained(
                model, dtype=torch_dtype, trust_remote_code=trust_remote_code
            )
        except ImportError as exc:
            raise _missing_package(model, self.family, exc) from None
        except ValueError as exc:
            raise NoVisionError(
                f"transformers cannot load {model!r} as an image-text-to-text model: "
                f"{str(exc).splitlines()[0]}",
                fix="choose a vision-language model, e.g. Qwen/Qwen2.5-VL-7B-Instruct",
            ) from None
        self._model.to(self.device).eval()
        tokenizer = self._processor.tokenizer
        # Left padding keeps every sequence's last token in the last column.
        tokenizer.padding_side = "left"
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        self._image_token_id: int | None = getattr(config, "image_token_id", None)
        self._added_bos = added_bos(tokenizer)
        super().__init__(
            model, lambda s: list(tokenizer.encode(s, add_special_tokens=False)), max_batch
        )

    @functools.cached_property
    def _grammar_compiler(self) -> Any | None:
        """xgrammar's compiler for this tokenizer, or None without xgrammar."""
        try:
            import xgrammar
        except ImportError:
            return None
        # The logits row can be longer than the tokenizer's vocabulary (padding).
        vocab = int(self._model.get_output_embeddings().weight.shape[0])
        info = xgrammar.TokenizerInfo.from_huggingface(self._processor.tokenizer, vocab_size=vocab)
        return xgrammar.GrammarCompiler(info)

    @property
    def supports_json_schema(self) -> bool:
        return self._grammar_compiler is not None

    @functools.lru_cache(maxsize=32)  # noqa: B019 - a few schemas, for the model's lifetime
    def _compiled(self, schema: str) -> Any:
        compiler = self._grammar_compiler
        assert compiler is not None, "only called when supports_json_schema"
        # No free whitespace: it lets a weak model pad the JSON with blanks until its token
        # budget runs out. json.dumps's separators, as the vLLM back ends (json_grammar.py).
        return compiler.compile_json_schema(schema, any_whitespace=False, separators=SEPARATORS)

    @property
    def max_image_pixels(self) -> int | None:
        size = getattr(self._processor.image_processor, "size", None) or {}
        value = (
            size.get("longest_edge") or size.get("max_pixels") if isinstance(size, dict) else None
        )
        return int(value) if value else None

    # -- shared ------------------------------------------------------------------------

    def _inputs(self, chats: Sequence[Chat], *, generation_prompt: bool = True) -> Any:
        texts: list[str] = []
        images: list[Any] = []
        for chat in chats:
            messages, chat_images = to_hf(chat)
            texts.append(
                self._processor.apply_chat_template(
                    messages, tokenize=False, add_generation_prompt=generation_prompt
                )
            )
            images.extend(chat_images)
        # The rendered template already holds every special token (BOS too, for Gemma,
        # Mistral, Llama 4) and vLLM adds none: where the tokenizer would add a second
        # BOS, the template's is cut from the text. (Not `add_special_tokens=False`: some
        # processors, SmolVLM's, do not pass it on to the tokenizer.)
        texts = [strip_added_bos(t, self._added_bos) for t in texts]
        inputs = self._processor(
            text=texts, images=images or None, padding=True, return_tensors="pt"
        )
        # A processor may return pixels in another dtype than the model's (Llama 4: bf16).
        return cast_floating(inputs.to(self.device), self._model.dtype)

    def prompt_token_ids(self, query: YesNoQuery) -> list[int]:
        """The token ids the model sees for `query` (for tests and `judge doctor`)."""
        with self._lock:
            inputs = self._inputs([yes_no_chat(query)])
        return [int(t) for t in inputs["input_ids"][0].tolist()]

    @property
    def image_token_id(self) -> int | None:
        return self._image_token_id

    # -- Yes/No ------------------------------------------------------------------------

    def _yes_no_batch(self, queries: list[YesNoQuery]) -> list[YesNoResult]:
        # Image and no-image prompts go in separate passes: processors differ on how
        # they take a batch where only some texts have an image.
        results: dict[int, YesNoResult] = {}
        for with_image in (True, False):
            index = [i for i, q in enumerate(queries) if (q.image is not None) == with_image]
            if not index:
                continue
            group = [queries[i] for i in index]
            done = run_isolated(self._yes_no_pass, group, lambda _q, why: YesNoResult.failed(why))
            results.update(zip(index, done, strict=True))
        return [results[i] for i in range(len(queries))]

    def _yes_no_pass(self, queries: list[YesNoQuery]) -> list[YesNoResult]:
        torch = self._torch
        with self._lock, torch.inference_mode():
            inputs = self._inputs([yes_no_chat(q) for q in queries])
            out = self._model(**inputs, logits_to_keep=1)
            logprobs = torch.log_softmax(out.logits[:, -1, :].float(), dim=-1)
            lengths = inputs["attention_mask"].sum(dim=1).tolist()
        yes_ids, no_ids = list(self.labels.yes), list(self.labels.no)
        p_yes = logprobs[:, yes_ids].exp().sum(dim=1).tolist()
        p_no = logprobs[:, no_ids].exp().sum(dim=1).tolist()
        return [
            YesNoResult(p_yes=y, p_no=n, prompt_tokens=int(t))
            for y, n, t in zip(p_yes, p_no, lengths, strict=True)
        ]

    # -- generation ----------------------------------------------------------------------

    def _generate_batch(self, requests: list[GenRequest]) -> list[Generation]:
        # One pass per (token budget, schema): generate() takes one of each per call.
        results: dict[int, Generation] = {}
        groups: dict[tuple[int, str | None], list[int]] = {}
        for i, (_, max_tokens, schema) in enumerate(requests):
            key = (max_tokens, json.dumps(schema, sort_keys=True) if schema else None)
            groups.setdefault(key, []).append(i)
        for (budget, text), index in groups.items():
            done = run_isolated(
                functools.partial(self._generate_pass, max_tokens=budget, schema=text),
                [requests[i][0] for i in index],
                lambda _c, why: Generation(text="", error=why),
            )
            results.update(zip(index, done, strict=True))
        return [results[i] for i in range(len(requests))]

    def _generate_pass(
        self, chats: list[Chat], max_tokens: int, schema: str | None
    ) -> list[Generation]:
        torch = self._torch
        tokenizer = self._processor.tokenizer
        processors = None
        if schema is not None and self.supports_json_schema:
            import transformers
            from xgrammar.contrib.hf import LogitsProcessor

            # A processor serves one generate() call: a new one per pass.
            processors = transformers.LogitsProcessorList([LogitsProcessor(self._compiled(schema))])
        with self._lock, torch.inference_mode():
            inputs = self._inputs(chats)
            out = self._model.generate(
                **inputs,
                max_new_tokens=max_tokens,
                do_sample=False,
                pad_token_id=tokenizer.pad_token_id,
                logits_processor=processors,
            )
        width = inputs["input_ids"].shape[1]
        lengths = inputs["attention_mask"].sum(dim=1).tolist()
        stops = {tokenizer.pad_token_id, tokenizer.eos_token_id}
        results = []
        for row, prompt_len in zip(out[:, width:].tolist(), lengths, strict=True):
            n = next((i for i, t in enumerate(row) if t in stops), len(row))
            text = tokenizer.decode(row[:n], skip_special_tokens=True)
            results.append(
                Generation(text=text, prompt_tokens=int(prompt_len), completion_tokens=n)
            )
        return results

    async def check(self) -> list[tuple[str, bool, str]]:
        rows = self._checks(
            f"{self._model_name} on {self.device}", "full next-token distribution (in process)"
        )
        ids = self.prompt_token_ids(YesNoQuery("Answer Yes or No.", "Is it red?"))
        bos = self._processor.tokenizer.bos_token_id
        repeats = leading_repeats(ids, bos)
        rows.append(
            (
                "bos",
                repeats <= 1,
                f"the prompt opens with {repeats} BOS token(s)"
                + ("" if repeats <= 1 else ": the tokenizer adds one the template has"),
            )
        )
        return rows


def _load_error(model: str, exc: Exception) -> BackendError:
    return BackendError(
        f"cannot load the model {model!r} with transformers: {str(exc).splitlines()[0]}",
        hint="Give a local model folder, or a hub id already in the cache (HF_HOME)",
    )


def _missing_package(model: str, family: Family, exc: ImportError) -> BackendError:
    """A package the model's processor or code imports is missing: say which, and the fix."""
    first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return BackendError(
        f"cannot load the model {model!r}: a package it needs is missing ({first})",
        hint=f"Fix: {missing_dependency_hint(exc, family)}",
    )
