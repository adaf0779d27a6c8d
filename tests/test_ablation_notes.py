"""An ablation that cannot differ from the full method says so in every report."""

from __future__ import annotations

from judge.constitution import Constitution
from judge.evaluate.ablations import nothing_to_ablate
from judge.evaluate.report import method_label, method_rows
from judge.resources import data_dir


def _toy_rules() -> list:  # type: ignore[type-arg]
    return list(Constitution.load(data_dir("constitutions") / "toy.yaml").lock.rules)


def test_no_objectify_has_nothing_to_ablate_when_no_rule_was_rewritten() -> None:
    rules = _toy_rules()
    assert all(r.text == r.source_text for r in rules)  # the toy lock is hand-written
    assert "no rule was rewritten" in (nothing_to_ablate("no-objectify", rules) or "")
    rewritten = [rules[0].model_copy(update={"text": "Images must not show a red shape."}),
                 *rules[1:]]
    assert nothing_to_ablate("no-objectify", rewritten) is None
    assert nothing_to_ablate("no-debias", rules) is None


def test_the_methods_table_names_the_idle_ablation() -> None:
    idle = {"method": "no-objectify", "kind": "ablation", "model": "m",
            "run": {"method_config": {"nothing_to_ablate": "nothing to ablate: why"}}}
    assert method_label(idle) == "no-objectify (nothing to ablate: why)"
    assert method_label({"method": "full", "run": {"method_config": {}}}) == "full"
    image = {"recall": 1.0, "accuracy": 1.0, "precision": 1.0, "f1": 1.0, "undecided": 0,
             "errors": 0, "fail_closed": {"recall": 1.0, "accuracy": 1.0, "f1": 1.0}}
    [row] = method_rows({"methods": [idle | {"image": image}]})
    assert row[0] == "no-objectify (nothing to ablate: why)"
