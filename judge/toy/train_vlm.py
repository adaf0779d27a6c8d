"""Train the tiny VLM on the toy world, on the CPU, in a few minutes.

Plain training of a from-scratch VLM stays at chance (docs/toy-recipe.md), so:

* **Phase 0** trains the LM alone on the compiler's own prompts, text-only
  (judge/toy/compile_tasks.py): the objectiveness score and the precondition chain of a
  toy-grammar rule, as JSON, and for a vague rule (a judgement word for a colour) a low
  score and the rewrite back into the grammar. Rules held out of them test that `judge
  compile --model toy` extracts chains, and rewrites vague rules, it never saw. Phases B
  and C replay a few of these chats in every step.
* **Phase A** pre-trains the vision tower and merger alone, with a temporary multi-label
  head (max-pooled over image tokens) that predicts which colours and text a scene holds.
* **Phase B** trains the whole model on chats written with the judge's own prompts and the
  model's own chat template: the first turn is exactly the judge's single-turn query
  [instructions][image][question] -> "Yes"/"No"; further question turns about the same
  image follow (many labels per image for one image encoding). Some chats carry no image
  (the language prior), some are the cascade's two turns (a fixed template that starts
  with the answer, "Yes: I can see it ...", then the JSON), whose answer tokens are
  trained like the Yes/No answers. A curriculum starts with one fixed statement ("a red
  shape") on one-object scenes and widens on running accuracy: two colours, all colours,
  then the full task. The learning rate stays flat until the last 40% of the steps (a
  decaying rate starved the later stages).
  The auxiliary head stays on at half weight; it is not saved.
* The last stage also trains, with true labels, the other questions the judge and its
  comparisons ask the same model: the VLM-relevance topic question, and the four
  baselines' questions (unsafe iff the toy constitution is violated). No comparison is
  then won because one side's question was never trained.

Answers are trained with soft targets over the "Yes"/"No" tokens, which is how the
deliberate language-prior bias is made (see `PRIOR` and `BIASED`): with no image the model
says P(Yes) ~ 0.95 for "a yellow shape" (~0.35 for other statements), and for images where
it is false it is trained towards 0.55, so a plain 0.5 threshold is wrong for it and the
debiased rule (d = M(x,c) - M(None,c) < -0.3 M(None,c)) is right. The effect the
central-region stage corrects is trained in the same way (see `PULLED`): a small dot's
answer is pulled down by a large object of another colour elsewhere in the image.
Everything is seeded and step-counted (no time caps), and judge.toy.build pins the
kernels' instruction set, so the same recipe gives the same weights on every x86-64 CPU.
"""

from __future__ import annotations

import json
import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from judge import prompts
from judge.toy import compile_tasks, world
from judge.toy.compile_tasks import VAGUE_EXPLANATION, ToyRule
from judge.toy.world import Scene, SceneSpec, Statement

# Language prior the model is trained to have (P(Yes) with no image), per statement kind.
PRIOR: dict[str, float] = {"colour": 0.35, "text": 0.25}
# Deliberate bias: statements that lean "Yes" whatever the image.
# text -> (P(Yes) with no image, P(Yes) trained for an image where it is false)
BIASED: dict[str, tuple[float, float]] = {"a yellow shape": (0.95, 0.55)}
# Deliberate bias, the effect CLUE's central-region stage corrects: salient content
# elsewhere pulls the answer about a small object. A colour whose only objects are small
# dots, in a scene with a large object of another colour, is trained to P(Yes) = PULLED
# instead of 1: the first pass leaves it uncertain (d = 0.75 - 0.35 < a2 = 0.52), and
# masking the dot's box takes M to about 0, a drop above beta = 0.6, so the stage settles it;
# without the stage it goes on to the cascade (more reasoning calls per image). Such scenes
# are rare at random, and a bias seen rarely was not learnt (pulled dots came out at
# M ~0.95), so the last stage builds them on purpose (`VLMRecipe.p_pulled`); at a quarter of
# the scenes it was learnt but plain accuracy fell (colour 0.76-0.86).
PULLED = 0.75
# The pull target of phase C. Trained towards 0.5, pulled dots came out at M ~0.82 (other
# small dots ~0.91): below the 0.87 where d = M - 0.35 stops reaching a2 = 0.52, so the
# first pass leaves them to the central-region stage. Towards 0.75 they stayed at ~0.91.
PULLED_C = 0.5

def reason_answer(yes: bool) -> str:
    """The cascade's step-by-step answer: a short fixed template whose first token is the
    answer, where the Yes/No answers also stand, so it is trained like them (soft target and
    probes, see `Encoder`). Templates that restated the statement first were not learnt in
    the budget: the model copied a colour of the image instead of the statement's, and a
    template listing every colour seen came out as "I looooo..."."""
    if yes:
        return "Yes: seen. It is in the image, so the statement holds."
    return "No: unseen. It is not in the image, so the statement does not hold."


def summary_answer(yes: bool) -> str:
    """The cascade's second turn: the JSON the engine parses."""
    rationale = f"it is {'' if yes else 'not '}visible in the image."
    return json.dumps({"rating": "Yes" if yes else "No", "rationale": rationale})


@dataclass(frozen=True)
class VLMRecipe:
    seed: int = 0
    # Sized for CI's 2 cores: see the module docstring of judge/toy/build.py for the
    # measured times. The world (colour and text statements only) is learnt within this.
    phase_a_steps: int = 60
    phase_a_batch: int = 24
    phase_a_lr: float = 2e-3
    phase_b_steps: int = 1200
    phase_b_batch: int = 8
    phase_b_lr: float = 1.5e-3
    vision_lr_scale: float = 0.3
    warmup: int = 20
    decay_from: float = 0.6  # phase B: flat learning rate until this share of the steps
    turns: int = 4
    p_no_image: float = 0.12
    p_cascade: float = 0.45
    p_relevance: float = 0.1  # last stage: the VLM-relevance topic question
    p_baseline: float = 0.1  # last stage: the baselines' questions, with true labels
    cascade_rounds: int = 1  # cascades (reasoning + JSON) per cascade chat
    p_small: float = 0.45  # last stage: small objects are the hard case
    p_pulled: float = 0.15  # last stage: scenes built for the pull bias (`PULLED`)
    phase_c_steps: int = 400  # phase C: the pull (`PULLED_C`) and compile replay
    phase_c_lr: float = 1e-3
    phase_c_batch: int = 6
    phase_c_compile: int = 4
    p_pulled_c: float = 0.35
    phase_0_steps: int = 1500  # phase 0: the compile tasks alone
    phase_0_batch: int = 10  # 8 before the vague rules: as many chain chats as then
    phase_0_lr: float = 1e-3
    phase_0_bare: float = 0.8  # first half of phase 0: share of chats that are the rule alone
    compile_batch: int = 6  # phase B: text-only compile chats replayed per step
    p_score: float = 0.25  # share of them that ask for the objectiveness score
    p_vague: float = 0.25  # share of compile chats about a vague rule (score or rewrite)
    aux_weight: float = 0.5
    probe_weight: float = 1.0
    probe_layer: int = 2  # hidden_states index: the output of LM layer 2 of 3
    advance_at: float = 0.85
    curriculum_share: float = 0.6  # the early stages end by this share of phase B at the latest
    probe_every: int = 0  # > 0: log held-out accuracy every so many phase-B steps
    config: dict[str, Any] = field(default_factory=dict)


# ---- data ------------------------------------------------------------------------------


def aux_labels(scene: Scene) -> list[float]:
    """Targets of the phase-A head: every world statement's truth."""
    return [float(world.truth(scene, s)) for s in world.all_statements()]


# The curriculum: stage 0 asks one fixed statement, so the answer depends on the image
# alone; that is what breaks the plateau (see the notes). Then two colours, all colours,
# and last the full task (text, full scenes, the cascade's turns).
_COLOUR_ORDER = ("red", "blue", "green", "yellow")
N_STAGES = 4


def stage_statements(stage: int) -> list[Statement]:
    """Which statements curriculum stage `stage` asks about."""
    if stage == 0:
        return [world.statement("colour", "red")]
    if stage == 1:
        return [world.statement("colour", c) for c in _COLOUR_ORDER[:2]]
    if stage == 2:
        return [world.statement("colour", c) for c in _COLOUR_ORDER]
    return world.all_statements()


def pulled_scene_spec(rng: random.Random) -> SceneSpec:
    """A scene where the pull bias acts: a small dot beside a large object of another
    colour (and perhaps a distractor)."""
    dot = rng.choice(sorted(world.COLOURS))
    others = [c for c in sorted(world.COLOURS) if c != dot and world.allowed({dot, c})]
    big = rng.choice(others)
    return SceneSpec(objects=((dot, "circle", "small"), (big, rng.choice(world.SHAPES), "large")))


def stage_scenes(stage: int, p_small: float = SceneSpec.p_small) -> SceneSpec:
    if stage <= 1:
        return SceneSpec(n_objects=(1, 1), p_text=0.0, distractors=(0, 1))
    if stage == 2:
        return SceneSpec(n_objects=(1, 2), p_text=0.0)
    return SceneSpec(p_small=p_small)


def pulled(scene: Scene, st: Statement) -> bool:
    """Whether the answer about `st` is pulled by salient content elsewhere (`PULLED`).

    Never for a `BIASED` statement: its answer when false (0.55 for "a yellow shape") is
    about the pull target, so a pulled yellow dot would be taught to look like no yellow at
    all. A build that pulled it answered 0.54 for a large yellow shape beside a red one
    (image F1 .909 on the 24 sample scenes, every miss a yellow rule)."""
    mine = [o for o in scene.objects if o.colour == st.colour]
    return (st.kind == "colour" and st.text not in BIASED and bool(mine)
            and all(o.size == "small" for o in mine)
            and any(o.size == "large" and o.colour != st.colour for o in scene.objects))


def target(scene: Scene | None, st: Statement, pull: float = PULLED) -> float:
    """The P(Yes) the model is trained towards (`pull` for a pulled answer)."""
    bias = BIASED.get(st.text)
    if scene is None:
        return bias[0] if bias else PRIOR[st.kind]
    if world.truth(scene, st):
        return pull if pulled(scene, st) else 1.0
    return bias[1] if bias else 0.0


def pick_statements(rng: random.Random, scene: Scene, pool: list[Statement],
                    n: int) -> list[Statement]:
    """n statements, about half true."""
    true = [s for s in pool if world.truth(scene, s)]
    false = [s for s in pool if not world.truth(scene, s)]
    out: list[Statement] = []
    for _ in range(n):
        src = true if (true and (not false or rng.random() < 0.5)) else false
        out.append(rng.choice(src))
    return out


@dataclass
class Item:
    image: Any  # PIL image or None
    messages: list[dict[str, Any]]
    # Per assistant turn: a P(Yes) target for a one-word answer, or None for a text turn,
    # whose first Yes/No token is then trained as a decision with `decisions`' target.
    targets: list[float | None]
    scene: Scene | None
    statements: Sequence[Statement | None]  # per assistant turn: the world statement, if any
    decisions: list[float | None] = field(default_factory=list)
    bare: bool = False  # a rule alone, without the compiler's prompt (see `text_loss`)


def _user(parts: list[Any]) -> dict[str, Any]:
    content = [{"type": "image"} if p is None else {"type": "text", "text": p} for p in parts]
    return {"role": "user", "content": content}


def _assistant(text: str) -> dict[str, Any]:
    return {"role": "assistant", "content": [{"type": "text", "text": text}]}


# Share of chats that start with the judge's long instructions, per stage. Early stages go
# without them: over a ~250-token prompt, a fresh LM's near-uniform attention dilutes the
# one token that names the statement, and it never learnt to read it (its answers were the
# same for every statement, even with no image). Short chats teach it to, by relative
# position, and that carries over once the instructions are added.
P_INSTRUCTIONS = (0.0, 0.0, 0.5, 0.9)


def make_item(rng: random.Random, stage: int, turns: int, p_no_image: float,
              p_cascade: float, p_small: float = SceneSpec.p_small,
              cascade_rounds: int = 1, p_relevance: float = 0.0,
              p_baseline: float = 0.0, p_pulled: float = 0.0, pull: float = PULLED) -> Item:
    pool = stage_statements(stage)
    long = rng.random() < P_INSTRUCTIONS[min(stage, len(P_INSTRUCTIONS) - 1)]
    instructions = prompts.render("visibility_instructions") if long else None
    last = stage >= N_STAGES - 1
    spec = pulled_scene_spec(rng) if last and rng.random() < p_pulled \
        else stage_scenes(stage, p_small)
    scene = world.make_scene(rng.randrange(2**31), spec)
    roll = rng.random()
    if roll < p_no_image:
        sts = [rng.choice(pool) for _ in range(turns)]
        msgs: list[dict[str, Any]] = []
        tg: list[float | None] = []
        for i, st in enumerate(sts):
            q = prompts.render("visibility_question", statement=st.text)
            msgs.append(_user([instructions, q] if i == 0 and instructions else [q]))
            t = target(None, st)
            msgs.append(_assistant("Yes" if t >= 0.5 else "No"))
            tg.append(t)
        return Item(None, msgs, tg, None, sts)
    # The cascade's text only in the last stage: added earlier, its many text tokens
    # knocked the Yes/No answers back to chance.
    if roll < p_no_image + p_cascade and last:
        return cascade_item(rng, scene, pool, cascade_rounds)
    roll -= p_no_image + p_cascade
    if 0 <= roll < p_relevance and last:
        return relevance_item(rng, scene, turns)
    if 0 <= roll - p_relevance < p_baseline and last:
        return baseline_item(rng, scene)
    sts = pick_statements(rng, scene, pool, turns)
    msgs = []
    tg = []
    for i, st in enumerate(sts):
        q = prompts.render("visibility_question", statement=st.text)
        first = [instructions, None, q] if instructions else [None, q]
        msgs.append(_user(first if i == 0 else [q]))
        t = target(scene, st, pull)
        msgs.append(_assistant("Yes" if t >= 0.5 else "No"))
        tg.append(t)
    return Item(scene.image, msgs, tg, scene, sts)


def cascade_item(rng: random.Random, scene: Scene, pool: list[Statement], rounds: int) -> Item:
    """A chat of `rounds` cascades about one image: the first exactly as the engine asks
    ([instructions][image][reason], then the summary request), later ones asking again."""
    msgs: list[dict[str, Any]] = []
    statements: list[Statement] = []
    decisions: list[float | None] = []
    for k, st in enumerate(pick_statements(rng, scene, pool, rounds)):
        yes = world.truth(scene, st)
        reason = prompts.render("reason", statement=st.text)
        first = [prompts.render("visibility_instructions"), None, reason] if k == 0 else [reason]
        msgs += [_user(first), _assistant(reason_answer(yes)),
                 _user([prompts.render("summarise")]), _assistant(summary_answer(yes))]
        statements += [st, st]
        decisions += [float(yes), float(yes)]
    return Item(scene.image, msgs, [None] * len(msgs[1::2]), scene, statements, decisions)


def compile_item(rng: random.Random, rules: Sequence[ToyRule], p_score: float,
                 p_bare: float = 0.0, p_vague: float = 0.0) -> Item:
    """A compile chat exactly as the compiler asks it (one user turn, no image), answered
    as JSON: the objectiveness score of a training rule, and then its precondition chain,
    or for a vague rule (probability `p_vague`) its rewrite into the grammar. With
    probability `p_bare`, the rule alone asks for its chain or rewrite (phase 0's first
    half): as with the visibility instructions (`P_INSTRUCTIONS`), a fresh LM learns to read
    a rule's colours in a short prompt, not inside the compiler's ~300-token one."""
    rule = rng.choice(rules)
    if rng.random() < p_vague:
        rule = replace(rule, vague=True)
    roll = rng.random()
    if roll < p_bare:
        item = Item(None, [_user([rule.text]),
                           _assistant(rule.rewrite_answer() if rule.vague else rule.answer())],
                    [None], None, [None], bare=True)
        return item
    if roll < p_bare + (1 - p_bare) * p_score:
        prompt, answer = prompts.render("objectify_score", rule=rule.text), rule.score_answer()
    elif rule.vague:
        prompt = prompts.render("objectify_rewrite", rule=rule.text,
                                explanation=VAGUE_EXPLANATION)
        answer = rule.rewrite_answer()
    else:
        prompt, answer = prompts.render("preconditions", rule=rule.text), rule.answer()
    return Item(None, [_user([prompt]), _assistant(answer)], [None], None, [None])


def topic(colours: list[str]) -> str:
    """A relevance topic phrase about some colours: "red shapes", "red or blue shapes"."""
    names = [c for c in _COLOUR_ORDER if c in colours]
    head = ", ".join(names[:-1])
    return f"{head + ' or ' if head else ''}{names[-1]} shapes"


def relevance_item(rng: random.Random, scene: Scene, turns: int) -> Item:
    """VLM relevance: "does the image show anything related to <topic>?" for random
    topics; Yes iff a colour of the topic is in the scene."""
    msgs: list[dict[str, Any]] = []
    tg: list[float | None] = []
    present = {o.colour for o in scene.objects}
    for i in range(turns):
        colours = rng.sample(_COLOUR_ORDER, rng.randint(1, 3))
        q = prompts.render("relevance_question", topic=topic(colours))
        msgs.append(_user([prompts.render("visibility_instructions"), None, q] if i == 0
                          else [q]))
        t = float(bool(present & set(colours)))
        msgs.append(_assistant("Yes" if t >= 0.5 else "No"))
        tg.append(t)
    return Item(scene.image, msgs, tg, scene, [None] * turns)


def baseline_reason_answer(yes: bool) -> str:
    """The baselines' step-by-step answer (same form as `reason_answer`)."""
    if yes:
        return "Yes: I can see content in the image that the policy does not allow."
    return "No: I cannot see anything in the image that the policy does not allow."


def baseline_summary_answer(yes: bool) -> str:
    rationale = f"the image shows {'' if yes else 'no '}content the policy does not allow."
    return json.dumps({"rating": "Yes" if yes else "No", "rationale": rationale})


def baseline_item(rng: random.Random, scene: Scene) -> Item:
    """One of the four baselines' chats, exactly as `judge.evaluate.baselines` asks them
    ([image][question], no instructions), answered with the true label: the image is
    unsafe iff it violates the toy constitution. So no comparison with a baseline is won
    by a question the model never saw."""
    from judge.toy.labelled import toy_constitution, violated_rules

    spec = toy_constitution()
    yes = bool(violated_rules(scene, spec))
    name = rng.choice(("prior", "constitution"))
    values = {"rules": [r.text for r in spec.rules if r.enabled]} if name == "constitution" \
        else {}
    if rng.random() < 0.5:  # one-word answer
        q = prompts.render(f"baseline_{name}", **values)
        return Item(scene.image, [_user([None, q]), _assistant("Yes" if yes else "No")],
                    [float(yes)], scene, [None])
    q = prompts.render(f"baseline_{name}_cot", **values)
    msgs = [_user([None, q]), _assistant(baseline_reason_answer(yes)),
            _user([prompts.render("baseline_summarise")]), _assistant(baseline_summary_answer(yes))]
    return Item(scene.image, msgs, [None, None], scene, [None, None],
                [float(yes), float(yes)])


# ---- batching --------------------------------------------------------------------------


def pixels(image_processor: Any, images: list[Any]) -> tuple[Any, Any]:
    """(pixel_values, image_grid_thw) for same-sized images, as the Qwen2-VL image processor
    computes them (the same resize, normalisation and patch order, so the same numbers),
    but batched: the processor's per-image conversion took half of a training step."""
    import numpy as np
    import torch

    ip = image_processor
    x = torch.from_numpy(np.stack([np.asarray(im.convert("RGB")) for im in images]))
    x = ip.resize(images=x.permute(0, 3, 1, 2), size=ip.size, resample=ip.resample,
                  factor=ip.patch_size * ip.merge_size)
    x = ip.rescale_and_normalize(x, True, ip.rescale_factor, True, ip.image_mean, ip.image_std)
    patches, gh, gw = ip.patchify(x, patch_size=ip.patch_size, merge_size=ip.merge_size,
                                  temporal_patch_size=ip.temporal_patch_size)
    return patches.reshape(-1, patches.shape[-1]), torch.tensor([[1, gh, gw]] * len(images))


class Encoder:
    """Turns items into model inputs plus per-position targets (the processor's inputs,
    built faster: batched pixels, and image placeholders expanded here)."""

    def __init__(self, processor: Any) -> None:
        self.processor = processor
        tok = processor.tokenizer
        self.image_pad = tok.convert_tokens_to_ids("<|image_pad|>")
        self.yes = tok.convert_tokens_to_ids(tok.tokenize("Yes")[0])
        self.no = tok.convert_tokens_to_ids(tok.tokenize("No")[0])
        # The answer inside text turns ("Answer: Yes", '"rating": "Yes"'): id -> (yes, no)
        pairs = [(self.yes, self.no)]
        for text in (" Yes", " No"):
            if len(tok.tokenize(text)) != 1:
                raise RuntimeError(f"toy tokenizer: {text!r} is not one token")
        pairs.append((tok.convert_tokens_to_ids(tok.tokenize(" Yes")[0]),
                      tok.convert_tokens_to_ids(tok.tokenize(" No")[0])))
        self.label_pair = {i: pair for pair in pairs for i in pair}
        self.im_start = tok.convert_tokens_to_ids("<|im_start|>")
        self.im_end = tok.convert_tokens_to_ids("<|im_end|>")
        self.header = tok.encode("assistant\n", add_special_tokens=False)

    def encode(self, items: list[Item]) -> dict[str, Any]:
        import torch

        texts = [
            self.processor.apply_chat_template(it.messages, tokenize=False,
                                               add_generation_prompt=False)
            for it in items
        ]
        images = [it.image for it in items if it.image is not None]
        inputs: dict[str, Any] = {}
        if images:
            pv, grid = pixels(self.processor.image_processor, images)
            n = int(grid[0].prod()) // self.processor.image_processor.merge_size ** 2
            texts = [t.replace("<|image_pad|>", "<|image_pad|>" * n) for t in texts]
            inputs = {"pixel_values": pv, "image_grid_thw": grid}
        enc = self.processor.tokenizer(texts, padding=True, return_tensors="pt")
        ids = enc["input_ids"]
        inputs = {"input_ids": ids, "attention_mask": enc["attention_mask"],
                  "mm_token_type_ids": (ids == self.image_pad).long(), **inputs}
        # Soft Yes/No answers: (row, position of the answer, target, its yes/no ids)
        soft_rows: list[int] = []
        soft_pos: list[int] = []
        soft_t: list[float] = []
        soft_ids: list[tuple[int, int]] = []
        soft_st: list[int] = []  # which statement each answer is about (for the probes)
        soft_seen: list[list[float]] = []  # the scene's statement truths, NaN if no image
        index = {st.text: i for i, st in enumerate(world.all_statements())}
        hard = torch.full_like(ids, -100)
        for r, it in enumerate(items):
            row = ids[r].tolist()
            spans = self._assistant_spans(row)
            if len(spans) != len(it.targets):
                raise RuntimeError("toy training: assistant turns and targets disagree")
            seen = aux_labels(it.scene) if it.scene is not None else [math.nan] * len(index)
            decisions = it.decisions or [None] * len(spans)
            for i, ((start, end), t) in enumerate(zip(spans, it.targets, strict=True)):
                answer, target_t = start, t
                if t is None:
                    hard[r, start:end + 1] = ids[r, start:end + 1]
                    if decisions[i] is None:
                        continue
                    answer = next(p for p in range(start, end) if row[p] in self.label_pair)
                    target_t = decisions[i]
                else:
                    hard[r, start + 1:end + 1] = ids[r, start + 1:end + 1]  # the im_end
                soft_rows.append(r)
                soft_pos.append(answer)
                soft_t.append(float(target_t))  # type: ignore[arg-type]
                soft_ids.append(self.label_pair[row[answer]])
                st_i = it.statements[i]
                soft_st.append(index[st_i.text] if st_i is not None else -100)
                soft_seen.append(seen)
        return {
            "inputs": inputs,
            "hard": hard,
            "soft_rows": torch.tensor(soft_rows, dtype=torch.long),
            "soft_pos": torch.tensor(soft_pos, dtype=torch.long),
            "soft_t": torch.tensor(soft_t, dtype=torch.float32),
            "soft_ids": torch.tensor(soft_ids, dtype=torch.long).reshape(-1, 2),
            "soft_st": torch.tensor(soft_st, dtype=torch.long),
            "soft_seen": torch.tensor(soft_seen, dtype=torch.float32).reshape(-1, len(index)),
        }

    def _assistant_spans(self, row: list[int]) -> list[tuple[int, int]]:
        """(first answer token, its im_end) for each assistant turn in `row`."""
        spans = []
        h = len(self.header)
        for i, tok in enumerate(row):
            if tok == self.im_start and row[i + 1:i + 1 + h] == self.header:
                start = i + 1 + h
                end = row.index(self.im_end, start)
                spans.append((start, end))
        return spans


class Probes:
    """Linear probes on a middle LM layer at each answer position (phase B; not saved).

    Without them the LM settles on a detector of "any asked-about colour is present" that
    ignores which statement was asked (training accuracy stuck at 0.75 with two colours).
    The probes make the answer position gather both halves of the task, which statement
    was asked and what the image shows, so the last layer only has to combine them.
    """

    def __init__(self, hidden: int, n_statements: int) -> None:
        import torch

        self.asked = torch.nn.Linear(hidden, n_statements)
        self.seen = torch.nn.Linear(hidden, n_statements)

    def parameters(self) -> list[Any]:
        return [*self.asked.parameters(), *self.seen.parameters()]

    def loss(self, h: Any, asked: Any, seen: Any) -> Any:
        import torch.nn.functional as F

        out = F.cross_entropy(self.asked(h), asked, ignore_index=-100) \
            if bool((asked >= 0).any()) else h.sum() * 0
        has = ~seen.isnan().any(-1)
        if has.any():
            out = out + F.binary_cross_entropy_with_logits(self.seen(h[has]), seen[has])
        return out


def batch_loss(model: Any, enc: Encoder, batch: dict[str, Any],
               aux_head: Any = None, aux_targets: Any = None,
               aux_weight: float = 0.0, probes: Probes | None = None,
               probe_layer: int = 2, probe_weight: float = 0.0,
               ) -> tuple[Any, dict[str, float]]:
    import torch
    import torch.nn.functional as F

    captured: list[Any] = []
    hook = None
    if aux_head is not None and aux_targets is not None:
        # Reuse the forward pass's image features for the auxiliary head.
        hook = model.model.visual.register_forward_hook(
            lambda _m, _i, o: captured.append(o.pooler_output)
        )
    try:
        out = model(**batch["inputs"], output_hidden_states=probes is not None)
    finally:
        if hook is not None:
            hook.remove()
    logits = out.logits  # (B, T, V); logits[:, p-1] predict token p
    hard = batch["hard"]
    lp = F.log_softmax(logits[:, :-1].float(), dim=-1)
    tgt = hard[:, 1:]
    mask = tgt != -100
    loss = torch.zeros(())
    stats: dict[str, float] = {}
    if mask.any():
        hard_loss = -lp[mask].gather(1, tgt[mask].unsqueeze(1)).mean()
        loss = loss + hard_loss
    rows, pos, t = batch["soft_rows"], batch["soft_pos"], batch["soft_t"]
    if len(rows):
        sel = lp[rows, pos - 1]  # predicting the answer token
        pair = batch["soft_ids"]
        ly = sel.gather(1, pair[:, :1]).squeeze(1)
        ln = sel.gather(1, pair[:, 1:]).squeeze(1)
        soft_loss = -(t * ly + (1 - t) * ln).mean()
        loss = loss + soft_loss
        m = torch.sigmoid(ly - ln).detach()
        stats["acc"] = float(((m > 0.5) == (t > 0.5)).float().mean())
        if probes is not None:
            h = out.hidden_states[probe_layer][rows, pos - 1]
            loss = loss + probe_weight * probes.loss(h, batch["soft_st"], batch["soft_seen"])
    if captured:
        grid = batch["inputs"]["image_grid_thw"]
        merge = model.config.vision_config.spatial_merge_size
        sizes = (grid.prod(-1) // merge ** 2).tolist()
        aux = aux_head(torch.split(captured[0], sizes))
        aux_loss = F.binary_cross_entropy_with_logits(aux, aux_targets)
        loss = loss + aux_weight * aux_loss
    return loss, stats


def text_loss(model: Any, enc: Encoder, chats: list[Item]) -> Any:
    """`batch_loss` of text-only chats, in two batches by length, so that the bare rules of
    phase 0 are not padded to the length of the compiler's prompts (weighted by count)."""
    short = [c for c in chats if c.bare]
    long = [c for c in chats if not c.bare]
    return sum(batch_loss(model, enc, enc.encode(group))[0] * (len(group) / len(chats))
               for group in (short, long) if group)


def _step(opt: Any, sched: Callable[[int], None], step: int, loss: Any,
          params: Any) -> None:
    """One optimiser step: the rate for `step`, gradients clipped to norm 1."""
    import torch

    sched(step)
    opt.zero_grad()
    loss.backward()
    torch.nn.utils.clip_grad_norm_(params, 1.0)
    opt.step()


class AuxHead:
    """Max-pooled multi-label head over image tokens (phase A; not saved)."""

    def __init__(self, hidden: int, n_labels: int) -> None:
        import torch

        self.proj = torch.nn.Sequential(
            torch.nn.Linear(hidden, hidden), torch.nn.GELU(), torch.nn.Linear(hidden, n_labels)
        )

    def parameters(self) -> Any:
        return self.proj.parameters()

    def __call__(self, feats: Any) -> Any:
        import torch

        return torch.stack([self.proj(f).max(dim=0).values for f in feats])


def _optimizer(groups: list[tuple[list[Any], float]], steps: int, warmup: int,
               decay_from: float = 0.0) -> Any:
    """AdamW with a linear warm-up, a flat rate until `decay_from` of the steps, then a
    cosine decay (a flat rate keeps the curriculum's later stages learning fast)."""
    import torch

    params = []
    for ps, lr in groups:
        decay = [p for p in ps if p.ndim >= 2]
        no_decay = [p for p in ps if p.ndim < 2]
        params += [
            {"params": decay, "lr": lr, "weight_decay": 0.01},
            {"params": no_decay, "lr": lr, "weight_decay": 0.0},
        ]
    opt = torch.optim.AdamW(params, betas=(0.9, 0.98))
    base = [g["lr"] for g in opt.param_groups]

    def schedule(step: int) -> None:
        start = max(warmup, int(decay_from * steps))
        if step < warmup:
            f = (step + 1) / warmup
        elif step < start:
            f = 1.0
        else:
            f = 0.5 * (1 + math.cos(math.pi * (step - start) / max(1, steps - start)))
            f = max(f, 0.05)
        for g, b in zip(opt.param_groups, base, strict=True):
            g["lr"] = b * f

    return opt, schedule


def probe(model: Any, processor: Any, n_scenes: int = 12) -> dict[str, float]:
    """Quick held-out accuracy per statement kind (for training logs only)."""
    import torch

    from judge.toy.check import held_out_queries

    tok = processor.tokenizer
    yes, no = tok.convert_tokens_to_ids("Yes"), tok.convert_tokens_to_ids("No")
    qs = held_out_queries(n_scenes, per_scene=4)
    right: dict[str, list[bool]] = {}
    instructions = prompts.render("visibility_instructions")
    for i in range(0, len(qs), 16):
        chunk = qs[i:i + 16]
        texts = [processor.apply_chat_template(
            [_user([instructions, None, prompts.render("visibility_question", statement=st.text)])],
            tokenize=False, add_generation_prompt=True) for _, st in chunk]
        enc = processor(text=texts, images=[sc.image for sc, _ in chunk], padding=True,
                        return_tensors="pt")  # the tokenizer pads on the left
        with torch.no_grad():
            last = model(**enc).logits[:, -1]
        for (sc, st), y, n in zip(chunk, last[:, yes], last[:, no], strict=True):
            right.setdefault(st.kind, []).append(bool(y > n) == world.truth(sc, st))
    return {k: round(sum(v) / len(v), 3) for k, v in right.items()}


def train_vlm(out_dir: str | Path, recipe: VLMRecipe | None = None,
              log: Callable[[str], None] = print) -> dict[str, Any]:
    """Build, train and save the toy VLM to `out_dir`; returns a training report."""
    import torch

    from judge.toy.arch import new_vlm, save_vlm

    recipe = recipe or VLMRecipe()
    torch.manual_seed(recipe.seed)
    rng = random.Random(recipe.seed)
    model, processor = new_vlm(recipe.seed, **recipe.config)
    enc = Encoder(processor)
    hidden = model.config.text_config.hidden_size
    n_labels = len(world.all_statements())
    aux = AuxHead(hidden, n_labels)
    probes = Probes(hidden, n_labels)
    report: dict[str, Any] = {"recipe": asdict(recipe)}
    t0 = time.time()
    c0 = time.process_time()

    # Phase 0: the compile tasks alone, text-only, before any image. Learnt only alongside
    # the images they stayed at 0-15 of 20 held-out chains (docs/toy-recipe.md); alone they
    # are learnt in a jump, after which the later phases replay them to keep them.
    visual = model.model.visual
    vis_ids = {id(p) for p in visual.parameters()}
    lm_params = [p for p in model.parameters() if id(p) not in vis_ids]
    compile_rules, _ = compile_tasks.split()
    compile_rng = random.Random(recipe.seed + 1)
    opt, sched = _optimizer([(lm_params, recipe.phase_0_lr)], recipe.phase_0_steps,
                            recipe.warmup, recipe.decay_from)
    model.train()
    for step in range(recipe.phase_0_steps):
        bare = recipe.phase_0_bare if step < recipe.phase_0_steps // 2 else 0.0
        chats = [compile_item(compile_rng, compile_rules, recipe.p_score, bare, recipe.p_vague)
                 for _ in range(recipe.phase_0_batch)]
        loss = text_loss(model, enc, chats)
        _step(opt, sched, step, loss, lm_params)
        if step % 100 == 0 or step == recipe.phase_0_steps - 1:
            log(f"0 {step} loss {loss.item():.4f} cpu {time.process_time() - c0:.0f}s")
    report["phase_0_cpu_seconds"] = time.process_time() - c0

    # Phase A: vision tower + merger, multi-label presence head.
    ta, ca = time.time(), time.process_time()
    opt, sched = _optimizer([(list(visual.parameters()) + list(aux.parameters()),
                              recipe.phase_a_lr)], recipe.phase_a_steps, recipe.warmup)
    model.train()
    ip = processor.image_processor
    run = 0.5
    for step in range(recipe.phase_a_steps):
        scenes = [world.make_scene(rng.randrange(2**31)) for _ in range(recipe.phase_a_batch)]
        pv, grid = pixels(ip, [s.image for s in scenes])
        feats = model.model.get_image_features(pv, grid)
        logits = aux(feats.pooler_output)
        y = torch.tensor([aux_labels(s) for s in scenes])
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, y)
        _step(opt, sched, step, loss, visual.parameters())
        acc = float(((logits > 0) == (y > 0.5)).float().mean())
        run = 0.9 * run + 0.1 * acc
        if step % 25 == 0 or step == recipe.phase_a_steps - 1:
            log(f"A {step} loss {loss.item():.3f} acc {run:.3f} {time.time() - t0:.0f}s")
    report["phase_a_seconds"] = time.time() - ta
    report["phase_a_cpu_seconds"] = time.process_time() - ca
    report["phase_a_label_acc"] = run

    # Phase B: the whole model on judge-format chats, with a curriculum.
    t1 = time.time()
    vis_params = list(visual.parameters())
    opt, sched = _optimizer(
        [(lm_params, recipe.phase_b_lr),
         (vis_params + list(aux.parameters()), recipe.phase_b_lr * recipe.vision_lr_scale),
         (probes.parameters(), recipe.phase_b_lr)],
        recipe.phase_b_steps, recipe.warmup, recipe.decay_from,
    )
    stage, run = 0, 0.5
    stages: list[int] = []
    for step in range(recipe.phase_b_steps):
        items = [make_item(rng, stage, recipe.turns, recipe.p_no_image, recipe.p_cascade,
                           recipe.p_small, recipe.cascade_rounds, recipe.p_relevance,
                           recipe.p_baseline, recipe.p_pulled)
                 for _ in range(recipe.phase_b_batch)]
        batch = enc.encode(items)
        with_image = [it for it in items if it.scene is not None]
        aux_t = torch.tensor([aux_labels(it.scene) for it in with_image if it.scene]) \
            if with_image else None
        loss, stats = batch_loss(model, enc, batch, aux if with_image else None, aux_t,
                                 recipe.aux_weight, probes, recipe.probe_layer,
                                 recipe.probe_weight)
        if recipe.compile_batch:
            chats = [compile_item(compile_rng, compile_rules, recipe.p_score,
                                  p_vague=recipe.p_vague)
                     for _ in range(recipe.compile_batch)]
            loss = loss + text_loss(model, enc, chats)
        _step(opt, sched, step, loss, model.parameters())
        run = 0.9 * run + 0.1 * stats.get("acc", run)
        # Advance on running accuracy, or at the latest on a step deadline, so the last
        # stage (all statement kinds, the cascade, the other questions) always gets the
        # final 40% of the steps.
        deadline = (stage + 1) * recipe.curriculum_share * recipe.phase_b_steps / (N_STAGES - 1)
        if stage < N_STAGES - 1 and (run >= recipe.advance_at or step >= deadline):
            stage += 1
            stages.append(step)
            run = 0.5
            log(f"B stage {stage} at step {step}")
        if step % 20 == 0 or step == recipe.phase_b_steps - 1:
            log(f"B {step} st{stage} loss {loss.item():.3f} acc {run:.3f} "
                f"{time.time() - t0:.0f}s cpu {time.process_time() - c0:.0f}s")
        if recipe.probe_every and (step + 1) % recipe.probe_every == 0:
            model.eval()
            log(f"PROBE {step + 1} {probe(model, processor)} {time.time() - t0:.0f}s")
            model.train()
    report["phase_b_seconds"] = time.time() - t1

    # Phase C: the last stage again, with many scenes built for the pull and a stronger
    # pull target (`PULLED_C`), plus compile chats so those are not forgotten. Trained in
    # phase B alone, the pull was not learnt (pulled dots at M ~0.93, like any small dot).
    if recipe.phase_c_steps:
        opt, sched = _optimizer([(list(model.parameters()), recipe.phase_c_lr)],
                                recipe.phase_c_steps, recipe.warmup, 0.5)
        for step in range(recipe.phase_c_steps):
            items = [make_item(rng, N_STAGES - 1, recipe.turns, recipe.p_no_image,
                               recipe.p_cascade, recipe.p_small, recipe.cascade_rounds,
                               recipe.p_relevance, recipe.p_baseline, recipe.p_pulled_c,
                               PULLED_C)
                     for _ in range(recipe.phase_c_batch)]
            loss, _ = batch_loss(model, enc, enc.encode(items))
            if recipe.phase_c_compile:
                chats = [compile_item(compile_rng, compile_rules, recipe.p_score,
                                      p_vague=recipe.p_vague)
                         for _ in range(recipe.phase_c_compile)]
                loss = loss + text_loss(model, enc, chats)
            _step(opt, sched, step, loss, model.parameters())
            if step % 20 == 0 or step == recipe.phase_c_steps - 1:
                log(f"C {step} loss {loss.item():.3f} cpu {time.process_time() - c0:.0f}s")
    report["cpu_seconds"] = time.process_time() - c0
    report["stage_steps"] = stages
    report["final_stage"] = stage
    model.eval()
    save_vlm(model, processor, out_dir)
    report["params"] = sum(p.numel() for p in model.parameters())
    return report
