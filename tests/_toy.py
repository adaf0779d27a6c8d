"""Toy-world fixtures (a pytest plugin loaded by conftest.py).

* `toy_models` (session): `judge.toy.build.ToyModels` with `.vlm`, `.clip`, `.owlv2`
  (alias `.owl`) folders, trained once per recipe into $JUDGE_CACHE/toy/<hash>/ (minutes
  the first time; a file lock makes concurrent sessions wait for one build).
* `toy_policy` (session): constitutions/toy.yaml copied to a temporary folder with its
  lock compiled beside it (hand-written chains: no model needed).
* `toy_set` (session): a held-out labelled set (manifest path) in a temporary folder,
  from judge.toy.labelled with the "test" split's seeds; rows are in `toy_set_rows`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest


@pytest.fixture(scope="session")
def toy_models() -> Any:
    from judge.toy.build import ensure_toy_models

    return ensure_toy_models()


@pytest.fixture(scope="session")
def toy_policy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import shutil

    from judge.constitution import Constitution
    from judge.resources import data_dir

    policy = tmp_path_factory.mktemp("policy") / "toy.yaml"
    shutil.copy(data_dir("constitutions") / "toy.yaml", policy)
    constitution = Constitution.load(policy)
    constitution.compile(None)
    constitution.save_lock()
    return policy


@pytest.fixture(scope="session")
def toy_set(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from judge.toy.labelled import write_set

    return write_set(tmp_path_factory.mktemp("toy-set"), 60, split="test")


@pytest.fixture(scope="session")
def toy_set_rows(toy_set: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in toy_set.read_text().splitlines()]
