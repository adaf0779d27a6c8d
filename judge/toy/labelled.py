"""Labelled toy sets: scenes, their ground-truth verdicts under a constitution, a manifest.

Manifest rows (JSONL, one per image, image paths relative to the manifest):
    {"image": "images/test-000001.png", "label": "safe" | "unsafe",
     "violated": ["rule-id", ...], "split": "test" | "calib", "meta": {...scene truth}}

Ground truth comes from the scene, not from any model: a rule is violated when each of its
preconditions has an alternative that is true of the scene (judge.toy.world.truth).
Half of each set is drawn from the world at large among scenes that violate nothing; the
other half is built to violate one rule, with its object small and off-centre in a share of
the cases, so that every rule (except those no scene can violate) has positives.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import yaml

from judge.constitution.schema import ConstitutionSpec
from judge.resources import data_dir
from judge.toy import world
from judge.toy.world import Scene, SceneSpec

SPLIT_SEEDS = {"test": 40_000_000, "calib": 50_000_000, "sample": 60_000_000}


def toy_constitution() -> ConstitutionSpec:
    path = data_dir("constitutions") / "toy.yaml"
    return ConstitutionSpec.model_validate(yaml.safe_load(path.read_text(encoding="utf-8")))


def violated_rules(scene: Scene, spec: ConstitutionSpec | None = None) -> list[str]:
    """Ids of the rules the scene violates, by ground truth."""
    spec = spec or toy_constitution()
    out = []
    for rule in spec.rules:
        if not rule.enabled or not rule.preconditions:
            continue
        ok = True
        for pre in rule.preconditions:
            alts = [world.parse_statement(a) for a in pre.any_of]
            if any(a is None for a in alts):
                raise ValueError(f"rule {rule.id}: a precondition is not a toy-world statement")
            if not any(world.truth(scene, a) for a in alts if a is not None):
                ok = False
                break
        if ok:
            out.append(rule.id)
    return out


def _objects_for(rule_pre: list[list[str]], rng: random.Random,
                 small_off_centre: bool) -> tuple[list[tuple[str, str, str]], bool]:
    """Objects that make each precondition true (one alternative each); and whether text."""
    objs: list[tuple[str, str, str]] = []
    text = False
    for alts in rule_pre:
        st = world.parse_statement(rng.choice(alts))
        assert st is not None
        if st.kind == "text":
            text = True
            continue
        assert st.colour is not None
        if small_off_centre:
            objs.append((st.colour, "circle", "small"))
        else:
            objs.append((st.colour, rng.choice(world.SHAPES), "large"))
    return objs, text


def make_set_scene(seed: int, spec: ConstitutionSpec) -> Scene:
    """Scene `seed` of a labelled set: half random, half built to violate one rule."""
    rng = random.Random(seed)
    rules = [r for r in spec.rules if r.enabled and r.preconditions]
    if rng.random() < 0.5 or not rules:
        # The world at large violates some rule in most scenes: draw until one is safe,
        # so that sets come out about half safe.
        for attempt in range(40):
            scene = world.make_scene(seed + attempt * 7_919_111)
            if not violated_rules(scene, spec):
                return scene
        return scene
    rule = rng.choice(rules)
    assert rule.preconditions is not None
    pre = [p.any_of for p in rule.preconditions]
    objs, text = _objects_for(pre, rng, small_off_centre=rng.random() < 0.4)
    if not world.allowed({c for c, _, _ in objs}):
        return world.make_scene(seed)  # a never-violated rule: fall back to a random scene
    extra = [world.make_scene(seed + 1).objects[0]] if rng.random() < 0.5 else []
    objs += [(o.colour, o.shape, o.size) for o in extra
             if world.allowed({c for c, _, _ in objs} | {o.colour})]
    objs = objs[:3]
    rng.shuffle(objs)
    words = rng.choice(world.WORDS) if text else ("" if rng.random() < 0.8 else None)
    return world.make_scene(seed, SceneSpec(objects=tuple(objs), text=words))


def write_set(out_dir: str | Path, n: int, split: str = "test",
              spec: ConstitutionSpec | None = None) -> Path:
    """Write `n` labelled scenes and `manifest.jsonl` to `out_dir`; returns the manifest."""
    spec = spec or toy_constitution()
    out = Path(out_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)
    base = SPLIT_SEEDS.get(split, SPLIT_SEEDS["test"])
    rows: list[dict[str, Any]] = []
    for i in range(n):
        scene = make_set_scene(base + i, spec)
        rel = f"images/{split}-{i:06d}.png"
        assert scene.image is not None
        scene.image.save(out / rel, optimize=False)
        violated = violated_rules(scene, spec)
        rows.append({"image": rel, "label": "unsafe" if violated else "safe",
                     "violated": violated, "split": split, "meta": scene.meta()})
    manifest = out / "manifest.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return manifest
