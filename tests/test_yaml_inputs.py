"""Every YAML file judge reads goes through the hardened loader that constitutions use
(judge/constitution/yamlsafe.py): a thresholds file and a category map are refused, with
the file and line, where `yaml.safe_load` would have quietly taken them."""

from __future__ import annotations

from pathlib import Path

import pytest

from judge.engine.judge import load_thresholds
from judge.errors import DatasetError, InputError
from judge.evaluate.datasets import CategoryMapping


def test_thresholds_file_with_a_duplicate_key_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "th.yaml"
    path.write_text("beta: 0.5\na1_factor: 0.3\nbeta: 0.7\n")
    with pytest.raises(InputError, match=r"th.yaml:3:1: thresholds file: duplicate key 'beta'"):
        load_thresholds(path)


def test_thresholds_file_read_as_before(tmp_path: Path) -> None:
    path = tmp_path / "th.json"
    path.write_text('{"thresholds": {"beta": 0.5}}')
    assert load_thresholds(path).beta == 0.5
    with pytest.raises(InputError, match="cannot read thresholds file"):
        load_thresholds(tmp_path / "missing.yaml")


def test_category_map_refuses_a_duplicate_category(tmp_path: Path) -> None:
    path = tmp_path / "map.yaml"
    path.write_text("violence: [r1]\nnudity: null\nviolence: [r2]\n")
    with pytest.raises(DatasetError, match=r"map.yaml:3:1: mapping file: duplicate key"):
        CategoryMapping.load(path)
    path.write_text("a: !!python/object:os.system [r1]\n")
    with pytest.raises(DatasetError, match=r"map.yaml:1:\d+: mapping file: "):
        CategoryMapping.load(path)
    path.write_text("violence: [r1]\nnudity: null\n")
    assert CategoryMapping.load(path).categories["violence"] == ("r1",)
