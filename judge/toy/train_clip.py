"""The toy CLIP: a tiny `CLIPModel` trained contrastively on scenes and their captions.

Captions name the scene's objects in the toy world's words, in several phrasings, some of
them shaped like the toy constitution's rule texts ("Images must not show a red shape"),
so that cos(image, rule text) means "this rule is about something in the image" and the
relevance threshold can be set for this model (see `constitutions/toy.yaml`).
The tokenizer is a real `CLIPTokenizer` (CLIP's lower-casing BPE with `</w>` word ends)
trained on the same words, so the ordinary CLIP and OWLv2 processors load it.
"""

from __future__ import annotations

import json
import math
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from judge.toy import world
from judge.toy.world import Scene

CLIP_IMAGE = 112


def caption_corpus() -> list[str]:
    """Texts for the CLIP tokenizer's merges: every caption word, many rule phrasings."""
    rng = random.Random(0)
    texts = [caption(world.make_scene(i), rng) for i in range(300)]
    texts += [f"images must not show {s}" for s in world.example_statements()]
    texts += [_rule_like(rng) for _ in range(200)]
    return texts


def build_clip_tokenizer(vocab_size: int = 1024) -> Any:
    """A `CLIPTokenizer` whose merges are learnt from the toy world's captions."""
    from tokenizers import Regex, Tokenizer, models, normalizers, pre_tokenizers, trainers
    from transformers import CLIPTokenizer

    special = ["<|startoftext|>", "<|endoftext|>"]
    tok = Tokenizer(models.BPE(end_of_word_suffix="</w>"))
    tok.normalizer = normalizers.Sequence(
        [normalizers.NFC(), normalizers.Replace(Regex(r"\s+"), " "), normalizers.Lowercase()]
    )
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(
            Regex(r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+"""
                  r"""|[\p{N}]|[^\s\p{L}\p{N}]+"""),
            behavior="removed", invert=True,
        ),
        pre_tokenizers.ByteLevel(add_prefix_space=False),
    ])
    # No special tokens while training: they are appended last, so that no special token
    # has id 0 (OWLv2 treats a query whose first id is 0 as padding).
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size - len(special), end_of_word_suffix="</w>",
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False,
    )
    tok.train_from_iterator(caption_corpus(), trainer=trainer)
    data = json.loads(tok.to_str())
    # Numbered in a fixed order: the trainer numbers the word-final letters ("d</w>") in
    # the order of a hash set, which changes from one process to the next.
    ordered = sorted(data["model"]["vocab"], key=lambda t: (len(t), t))
    vocab = {token: i for i, token in enumerate(ordered)}
    for name in special:
        vocab[name] = len(vocab)
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" "))
              for m in data["model"]["merges"]]
    return CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=32)  # type: ignore[arg-type]


def _describe(obj: world.Obj, rng: random.Random) -> str:
    size = f"{obj.size} " if rng.random() < 0.3 else ""
    noun = obj.shape if rng.random() < 0.7 else "shape"
    return f"a {size}{obj.colour} {noun}"


def caption(scene: Scene, rng: random.Random) -> str:
    """One caption naming every object (and text) of the scene, in random order."""
    parts = [_describe(o, rng) for o in scene.objects]
    if scene.texts:
        parts.append("written text")
    rng.shuffle(parts)
    body = parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]
    lead = rng.choice(["", "a picture of ", "an image showing ", "images must not show "])
    return lead + body


def _rule_like(rng: random.Random) -> str:
    c1, c2 = rng.sample(list(world.COLOURS), 2)
    return rng.choice([
        f"images must not show a {c1} shape together with a {c2} shape.",
        f"images must not show a {c1} or {c2} shape next to written text.",
        f"images must not show a {c1} {rng.choice(world.SHAPES)}.",
    ])


@dataclass(frozen=True)
class CLIPRecipe:
    seed: int = 0
    steps: int = 300  # 200 gave top-1 0.40 among 20 captions in the 4-colour world; 300: 0.53
    batch: int = 48
    # 2e-3 sometimes never left chance (held-out top-1 0.10 with one tokenizer numbering,
    # 0.57 with another); 1e-3 gave 0.58 and 0.62 with seeds 0 and 1, 5e-4 0.57 and 0.60.
    lr: float = 1e-3
    warmup: int = 20
    hidden: int = 128
    layers: int = 3
    heads: int = 4
    patch: int = 16


def tower_configs(recipe: Any, tokenizer: Any, image_size: int) -> dict[str, Any]:
    """Text and vision tower settings of a tiny CLIP-style model (the toy CLIP and OWLv2)."""
    common = {"hidden_size": recipe.hidden, "intermediate_size": recipe.hidden * 4,
              "num_hidden_layers": recipe.layers, "num_attention_heads": recipe.heads}
    return {
        "text_config": {**common, "vocab_size": len(tokenizer),
                        "max_position_embeddings": tokenizer.model_max_length,
                        "bos_token_id": tokenizer.bos_token_id,
                        "eos_token_id": tokenizer.eos_token_id,
                        "pad_token_id": tokenizer.pad_token_id},
        "vision_config": {**common, "image_size": image_size, "patch_size": recipe.patch},
        "projection_dim": 128,
    }


def new_clip(recipe: CLIPRecipe) -> tuple[Any, Any]:
    import torch
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor

    tokenizer = build_clip_tokenizer()
    config = CLIPConfig(**tower_configs(recipe, tokenizer, CLIP_IMAGE))
    torch.manual_seed(recipe.seed)
    model = CLIPModel(config)
    image_processor = CLIPImageProcessor(
        size={"shortest_edge": CLIP_IMAGE}, crop_size={"height": CLIP_IMAGE, "width": CLIP_IMAGE}
    )
    return model, CLIPProcessor(image_processor=image_processor, tokenizer=tokenizer)


def train_clip(out_dir: str | Path, recipe: CLIPRecipe | None = None,
               log: Callable[[str], None] = print) -> dict[str, Any]:
    """Train the toy CLIP and save it (model + processor) to `out_dir`."""
    import torch
    import torch.nn.functional as F

    recipe = recipe or CLIPRecipe()
    model, processor = new_clip(recipe)
    rng = random.Random(recipe.seed + 1)
    opt = torch.optim.AdamW(model.parameters(), lr=recipe.lr, weight_decay=0.01)
    t0 = time.time()
    model.train()
    run = 0.0
    for step in range(recipe.steps):
        f = (step + 1) / recipe.warmup if step < recipe.warmup else 0.5 * (
            1 + math.cos(math.pi * (step - recipe.warmup) / (recipe.steps - recipe.warmup)))
        for g in opt.param_groups:
            g["lr"] = recipe.lr * max(f, 0.05)
        scenes = [world.make_scene(rng.randrange(2**31)) for _ in range(recipe.batch)]
        caps = [caption(s, rng) for s in scenes]
        enc = processor(text=caps, images=[s.image for s in scenes], padding=True,
                        return_tensors="pt")
        out = model(**enc)
        logits = out.logits_per_image
        labels = torch.arange(len(scenes))
        loss = (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2
        opt.zero_grad()
        loss.backward()
        opt.step()
        acc = float((logits.argmax(1) == labels).float().mean())
        run = 0.9 * run + 0.1 * acc
        if step % 25 == 0 or step == recipe.steps - 1:
            log(f"CLIP {step} loss {loss.item():.3f} top1 {run:.3f} {time.time() - t0:.0f}s")
    model.eval()
    out_path = Path(out_dir)
    model.save_pretrained(out_path)
    processor.save_pretrained(out_path)
    return {"recipe": asdict(recipe), "seconds": time.time() - t0,
            "params": sum(p.numel() for p in model.parameters()), "train_top1": run}


def clip_top1(path: str | Path, n: int = 20, rounds: int = 5, seed: int = 20_000_000) -> float:
    """Share of held-out images whose own caption ranks first among `n` scenes' captions."""
    import torch
    from transformers import CLIPModel, CLIPProcessor

    model = CLIPModel.from_pretrained(path).eval()
    processor = CLIPProcessor.from_pretrained(path)
    rng = random.Random(seed)
    hits = total = 0
    for r in range(rounds):
        scenes = [world.make_scene(seed + r * n + i) for i in range(n)]
        caps = [caption(s, rng) for s in scenes]
        enc = processor(text=caps, images=[s.image for s in scenes], padding=True,
                        return_tensors="pt")
        with torch.no_grad():
            logits = model(**enc).logits_per_image
        hits += int((logits.argmax(1) == torch.arange(n)).sum())
        total += n
    return hits / total


# Share of violated (image, rule) pairs the toy CLIP's default threshold must keep.
KEEP_VIOLATED = 0.99
RELEVANCE_FILE = "judge-relevance.json"  # a relevance model's own default threshold


def measure_relevance_threshold(path: str | Path, n: int = 160) -> dict[str, Any]:
    """Measure the toy CLIP's relevance threshold and save it beside the model.

    Scores `n` labelled calibration scenes against every rule of the toy constitution
    through the judge's own scorer, and takes the highest threshold that keeps
    `KEEP_VIOLATED` of the pairs where the rule is violated (the paper's 0.22 was chosen
    the same way for CLIP ViT-B/16: it kept 96.6% of them). Writes `RELEVANCE_FILE`.
    """
    from judge.toy.labelled import SPLIT_SEEDS, make_set_scene, toy_constitution, violated_rules
    from judge.vision.relevance import ClipRelevance

    spec = toy_constitution()
    rules = [r for r in spec.rules if r.enabled]
    scorer = ClipRelevance(path, "clip", device="cpu")
    hit: list[float] = []
    miss: list[float] = []
    for i in range(n):
        scene = make_set_scene(SPLIT_SEEDS["calib"] + i, spec)
        violated = set(violated_rules(scene, spec))
        assert scene.image is not None
        for rule, value in zip(rules, scorer.score(scene.image, [r.text for r in rules]),
                               strict=True):
            (hit if rule.id in violated else miss).append(value)
    hit.sort()
    # Round down to 0.01 so the saved value keeps at least the measured share.
    t = math.floor(hit[int((1 - KEEP_VIOLATED) * len(hit))] * 100) / 100 - 0.01
    result = {
        "threshold": t,
        "kept_violated": sum(v > t for v in hit) / len(hit),
        "filtered": sum(v <= t for v in hit + miss) / len(hit + miss),
        "pairs": len(hit) + len(miss),
        "violated_pairs": len(hit),
        "how": f"highest t keeping {KEEP_VIOLATED:.0%} of violated (scene, rule) pairs of "
               f"{n} calibration scenes x the toy constitution",
    }
    (Path(path) / RELEVANCE_FILE).write_text(json.dumps(result, indent=1) + "\n")
    return result
