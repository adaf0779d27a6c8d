"""How well a model compiles the toy grammar's held-out rules (judge/toy/compile_tasks.py).

`held_out_yaml()` is a constitution of the rules kept out of training, without chains;
`score_lock()` compares what `judge compile` made of it with the right chains. A chain is
right when every precondition has exactly the right statements and object words, in order.
With `vague=True` the same chains are written with judgement words instead of colours
(judge/toy/compile_tasks.py): then a rule is right only if objectification also rewrote it
into the grammar, exactly, before its chain was extracted.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import yaml

from judge.constitution.schema import Lock
from judge.toy.compile_tasks import COLOURS, ToyRule, split, vague_held_out


def in_grammar(statement: str) -> bool:
    """Whether `statement` is one of the toy grammar's statements ("a red shape")."""
    return statement in {f"a {c} shape" for c in COLOURS}


def held_out_rules(vague: bool = False) -> list[ToyRule]:
    return vague_held_out() if vague else split()[1]


def held_out_yaml(vague: bool = False) -> str:
    """The held-out rules as a constitution YAML (ids held-01...), to compile."""
    rules = [{"id": f"held-{i + 1:02d}", "text": r.text}
             for i, r in enumerate(held_out_rules(vague))]
    return yaml.safe_dump({"name": "toy-held-out", "version": "1", "rules": rules},
                          sort_keys=False, width=1000)


@dataclass
class CompileScore:
    right: int
    total: int
    from_model: int  # chains the model wrote (not a fallback)
    wrong: dict[str, str] = field(default_factory=dict)  # rule id -> what was extracted
    rewritten: int = 0  # rules whose objectified text is a rewrite (vague rules: exact)

    @property
    def accuracy(self) -> float:
        return self.right / self.total if self.total else 0.0


def score_lock(lock: Lock, vague: bool = False) -> CompileScore:
    """Exact-match chains of a lock compiled from `held_out_yaml(vague)`; for vague rules,
    the exact rewrite too."""
    expected = {f"held-{i + 1:02d}": r for i, r in enumerate(held_out_rules(vague))}
    got = {rule.id: rule for rule in lock.rules}
    score = CompileScore(0, len(expected), 0)
    for rule_id, toy in expected.items():
        rule = got.get(rule_id)
        if rule is None:
            score.wrong[rule_id] = "missing from the lock"
            continue
        score.from_model += rule.extraction == "llm"
        chain = [{"any_of": list(p.any_of), "objects": list(p.objects)}
                 for p in rule.preconditions]
        rewrite_ok = not vague or rule.text == toy.objective().text
        score.rewritten += rule.text != rule.source_text and rewrite_ok
        if rule.extraction == "llm" and chain == toy.preconditions() and rewrite_ok:
            score.right += 1
        else:
            score.wrong[rule_id] = f"{rule.extraction}: {rule.text!r} {chain}"
    return score
