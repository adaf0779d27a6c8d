"""Measure the toy models on held-out scenes: what the tests assert and the report quotes.

The VLM is queried exactly as the judge queries it (one user turn [instructions][image]
[question], through the model's own chat template, with the questions of
`judge.queries`), and P(Yes) is summed over the label spellings, as the back ends do.
"""

from __future__ import annotations

import random
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from judge import prompts, queries
from judge.models.base import NO_VARIANTS, YES_VARIANTS
from judge.toy import world
from judge.toy.world import Scene, Statement

HELD_OUT_SEED = 10_000_000  # training draws seeds from its own RNG; held-out scenes use these


class ToyVLM:
    """The toy VLM under transformers, for measurements (not the judge's back end)."""

    def __init__(self, path: str | Path) -> None:
        import torch
        from transformers import AutoModelForImageTextToText, AutoProcessor

        self.model = AutoModelForImageTextToText.from_pretrained(path, dtype=torch.float32).eval()
        self.processor = AutoProcessor.from_pretrained(path)
        tok = self.processor.tokenizer
        self.tokenizer = tok
        tok.padding_side = "left"
        self.yes_ids = sorted({i for v in YES_VARIANTS for i in _single(tok, v)})
        self.no_ids = sorted({i for v in NO_VARIANTS for i in _single(tok, v)})

    def messages(self, statement: str, with_image: bool, kind: str = "visibility") -> list[Any]:
        q = (queries.visibility_question(statement) if kind == "visibility"
             else prompts.render("reason", statement=statement))
        parts: list[dict[str, Any]] = [{"type": "text", "text": queries.instructions()}]
        if with_image:
            parts.append({"type": "image"})
        parts.append({"type": "text", "text": q})
        return [{"role": "user", "content": parts}]

    def p_yes(self, queries: list[tuple[Any, str]], batch: int = 16) -> list[float]:
        """M = P(Yes)/(P(Yes)+P(No)) for (image or None, statement) pairs."""
        return self.p_yes_chats([(img, self.messages(s, img is not None)) for img, s in queries],
                                batch)

    def p_yes_chats(self, chats: list[tuple[Any, list[Any]]], batch: int = 16) -> list[float]:
        """M for the next answer of each (image or None, messages) chat."""
        import torch

        out: list[float] = []
        for i in range(0, len(chats), batch):
            chunk = chats[i:i + batch]
            texts = [self.processor.apply_chat_template(msgs, tokenize=False,
                                                        add_generation_prompt=True)
                     for _, msgs in chunk]
            images = [img for img, _ in chunk if img is not None]
            enc = self.processor(text=texts, images=images or None, padding=True,
                                 return_tensors="pt")
            with torch.no_grad():
                logits = self.model(**enc).logits[:, -1].float()
            probs = logits.softmax(-1)
            py = probs[:, self.yes_ids].sum(-1)
            pn = probs[:, self.no_ids].sum(-1)
            out += (py / (py + pn)).tolist()
        return out

    def generate(self, messages: list[Any], image: Any, max_new_tokens: int = 80) -> str:
        import torch

        text = self.processor.apply_chat_template(messages, tokenize=False,
                                                  add_generation_prompt=True)
        enc = self.processor(text=[text], images=[image] if image is not None else None,
                             return_tensors="pt")
        with torch.no_grad():
            ids = self.model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False)
        return str(self.tokenizer.decode(ids[0, enc["input_ids"].shape[1]:],
                                         skip_special_tokens=True))


def _single(tok: Any, text: str) -> list[int]:
    ids = tok.encode(text, add_special_tokens=False)
    return ids if len(ids) == 1 else []


def case_of(scene: Scene, st: Statement) -> str:
    """'absent', 'small', 'large' or 'present' (text): which bucket a query falls in."""
    if not world.truth(scene, st):
        return "absent"
    if st.kind == "text":
        return "present"
    sizes = {o.size for o in scene.objects if o.colour == st.colour}
    return "large" if "large" in sizes else "small"


@dataclass
class VLMReport:
    accuracy: dict[str, dict[str, float]] = field(default_factory=dict)  # kind -> case -> acc
    counts: dict[str, dict[str, int]] = field(default_factory=dict)
    kind_accuracy: dict[str, float] = field(default_factory=dict)
    biased: dict[str, dict[str, float]] = field(default_factory=dict)
    priors: dict[str, float] = field(default_factory=dict)
    # Per biased statement: the share of held-out queries the debiased first pass decides
    # wrongly: "not met" (d < a1) when the statement is true, "met" (d > a2) when false.
    # (Uncertain is no error: later stages decide it.)
    debiased_wrong: dict[str, float] = field(default_factory=dict)


def held_out_queries(n_scenes: int, seed: int = HELD_OUT_SEED, per_scene: int = 6,
                     ) -> list[tuple[Scene, Statement]]:
    """Balanced (scene, statement) pairs from scenes no training run draws."""
    rng = random.Random(seed)
    pool = world.all_statements()
    out = []
    for i in range(n_scenes):
        scene = world.make_scene(seed + i)
        true = [s for s in pool if world.truth(scene, s)]
        false = [s for s in pool if not world.truth(scene, s)]
        for _ in range(per_scene):
            src = true if (true and (not false or rng.random() < 0.5)) else false
            out.append((scene, rng.choice(src)))
    return out


def vlm_report(path: str | Path, n_scenes: int = 60) -> VLMReport:
    """Plain (0.5 threshold) accuracy per statement kind and case, the biased statements
    apart, and the language priors."""
    from judge.toy.train_vlm import BIASED

    vlm = ToyVLM(path)
    queries = held_out_queries(n_scenes)
    ms = vlm.p_yes([(sc.image, st.text) for sc, st in queries])
    right: dict[str, dict[str, list[bool]]] = defaultdict(lambda: defaultdict(list))
    biased: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for (sc, st), m in zip(queries, ms, strict=True):
        case = case_of(sc, st)
        if st.text in BIASED:
            biased[st.text]["true" if case != "absent" else "false"].append(m)
            continue
        right[st.kind][case].append((m > 0.5) == (case != "absent"))
    rep = VLMReport()
    for kind, cases in right.items():
        rep.accuracy[kind] = {c: sum(v) / len(v) for c, v in cases.items()}
        rep.counts[kind] = {c: len(v) for c, v in cases.items()}
        flat = [x for v in cases.values() for x in v]
        rep.kind_accuracy[kind] = sum(flat) / len(flat)
    for text, d in biased.items():
        rep.biased[text] = {f"mean_m_{k}": sum(v) / len(v) for k, v in d.items()}
    statements = world.all_statements()
    priors = vlm.p_yes([(None, s.text) for s in statements])
    rep.priors = {s.text: p for s, p in zip(statements, priors, strict=True)}
    for text, d in biased.items():
        prior = rep.priors[text]
        a1, a2 = -0.3 * prior, 0.8 * (1 - prior)  # the paper's thresholds on d = M - prior
        wrong = [m - prior < a1 for m in d["true"]] + [m - prior > a2 for m in d["false"]]
        rep.debiased_wrong[text] = sum(wrong) / len(wrong)
    return rep


def cascade_report(path: str | Path, n: int = 8, seed: int = HELD_OUT_SEED + 777) -> dict[str, Any]:
    """Run the cascade's two turns on `n` held-out colour queries (the statements the toy
    constitution uses): share of parseable JSON summaries and share whose rating matches
    the truth."""
    import json as _json

    vlm = ToyVLM(path)
    parsed = right = 0
    samples: list[str] = []
    queries = [q for q in held_out_queries(3 * n, seed=seed, per_scene=1) if q[1].kind == "colour"]
    for sc, st in queries[:n]:
        turn1 = vlm.messages(st.text, True, kind="reason")
        text1 = vlm.generate(turn1, sc.image)
        chat = [*turn1, {"role": "assistant", "content": [{"type": "text", "text": text1}]},
                {"role": "user", "content": [{"type": "text",
                                              "text": prompts.render("summarise")}]}]
        text2 = vlm.generate(chat, sc.image)
        samples.append(text2)
        try:
            rating = _json.loads(text2)["rating"]
        except (ValueError, KeyError, TypeError):
            continue
        parsed += 1
        right += (rating == "Yes") == world.truth(sc, st)
    return {"n": n, "parsed": parsed / n, "right": right / n, "samples": samples[:2]}


def _chat(*parts: Any) -> list[Any]:
    content = [{"type": "image"} if p is None else {"type": "text", "text": p} for p in parts]
    return [{"role": "user", "content": content}]


def trained_biases_report(path: str | Path, n_scenes: int = 60,
                          seed: int = HELD_OUT_SEED + 5_000) -> dict[str, Any]:
    """What the toy VLM learnt beyond plain visibility, on held-out labelled scenes:

    * "pulled": mean M of true statements pulled by salient content elsewhere (trained to
      `train_vlm.PULLED`), next to the other true statements about small objects;
    * "relevance": plain accuracy of the VLM-relevance topic question;
    * "baseline_prior", "baseline_constitution": plain accuracy of the baselines' one-word
      questions against the truth (unsafe iff the toy constitution is violated).
    """
    from judge.toy.labelled import make_set_scene, toy_constitution, violated_rules
    from judge.toy.train_vlm import _COLOUR_ORDER, pulled, topic

    vlm = ToyVLM(path)
    spec = toy_constitution()
    rules = [r.text for r in spec.rules if r.enabled]
    rng = random.Random(seed)
    scenes = [make_set_scene(seed + i, spec) for i in range(n_scenes)]
    instructions = queries.instructions()
    vis: list[tuple[Scene, Statement]] = [(sc, world.statement("colour", o.colour))
                                          for sc in scenes for o in sc.objects if o.size == "small"]
    ms = vlm.p_yes([(sc.image, st.text) for sc, st in vis])
    pulled_m = [m for (sc, st), m in zip(vis, ms, strict=True) if pulled(sc, st)]
    small_m = [m for (sc, st), m in zip(vis, ms, strict=True) if not pulled(sc, st)]
    rel_chats, rel_truth = [], []
    for sc in scenes:
        colours = rng.sample(_COLOUR_ORDER, rng.randint(1, 3))
        q = queries.relevance_question(topic(colours))
        rel_chats.append((sc.image, _chat(instructions, None, q)))
        rel_truth.append(bool({o.colour for o in sc.objects} & set(colours)))
    unsafe = [bool(violated_rules(sc, spec)) for sc in scenes]
    out: dict[str, Any] = {
        "pulled_mean_m": sum(pulled_m) / max(1, len(pulled_m)), "pulled_n": len(pulled_m),
        "small_mean_m": sum(small_m) / max(1, len(small_m)), "small_n": len(small_m),
    }
    asked = {
        "relevance": (rel_chats, rel_truth),
        "baseline_prior": ([(sc.image, _chat(None, prompts.render("baseline_prior")))
                            for sc in scenes], unsafe),
        "baseline_constitution": ([(sc.image, _chat(None, prompts.render(
            "baseline_constitution", rules=rules))) for sc in scenes], unsafe),
    }
    for name, (chats, truth) in asked.items():
        got = vlm.p_yes_chats(chats)
        out[name] = sum((m > 0.5) == t for m, t in zip(got, truth, strict=True)) / len(truth)
    return out
