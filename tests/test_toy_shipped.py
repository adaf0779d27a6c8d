"""The seed-0 toy models ship with judge, tied to the recipe that built them.

The recipe-hash test is the one that fails within seconds when someone changes the recipe
(a toy module, a trained prompt, a library pin) without shipping new models, and says how
to rebuild them. The others check that the shipped bits are the recorded ones, that a
changed file is named, and that the wheel carries them.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from judge.toy import build


def test_the_shipped_models_are_built_from_the_current_recipe() -> None:
    """The recipe's code, prompts and rules, and the pinned library versions, are the ones
    the shipped models were built from."""
    shipped = build.shipped_report()
    assert shipped is not None, f"no shipped toy models in {build.SHIPPED}: {build.REBUILD_HINT}"
    hint = f"{build.REBUILD_HINT[0].upper()}{build.REBUILD_HINT[1:]}."
    now = build.recipe_hash(0, versions=False)
    assert shipped["source_hash"] == now, (
        f"the toy recipe changed: its hash is now {now}, the shipped models were built from "
        f"{shipped['source_hash']}. {hint}")
    assert shipped["recipe_hash"] == build.recipe_hash(0), (
        "torch, transformers or tokenizers is not the version the shipped models were built "
        f"with (scripts/setup.sh pins them). {hint}")


def test_the_recipe_hash_reads_code_not_comments() -> None:
    source = (Path(build.__file__).with_name("train_vlm.py")).read_text()
    reworded = source.replace('"""Train the tiny VLM', '"""Train the little VLM', 1)
    commented = source.replace("PULLED_C = 0.5", "PULLED_C = 0.5  # a comment", 1)
    changed = source.replace("PULLED_C = 0.5", "PULLED_C = 0.6", 1)
    assert len({reworded, commented, changed, source}) == 4
    code = build.code_only(source)
    assert build.code_only(reworded) == code == build.code_only(commented)
    assert build.code_only(changed) != code


def test_the_shipped_files_are_the_recorded_ones() -> None:
    models = build.verify_shipped()
    want = build.expected_hashes(models.recipe_hash)
    assert want == {name: build.folder_sha256(models.root / name)
                    for name in ("vlm", "clip", "owlv2")}
    assert build.ensure_toy_models() == models  # seed 0 trains nothing: the shipped folders
    assert models.vlm.is_relative_to(build.SHIPPED)


def test_only_safetensors_weights_and_no_duplicate_files() -> None:
    report = build.shipped_report()
    assert report is not None
    files = report["files"]
    weights = [f for f in files if f.endswith((".bin", ".pt", ".pth", ".ckpt"))]
    assert weights == [], "weights are stored as safetensors only"
    assert sum(f.endswith(".safetensors") for f in files) == 3
    by_hash: dict[str, list[str]] = {}
    for name, sha in files.items():
        by_hash.setdefault(sha, []).append(name)
    big_dupes = [names for sha, names in by_hash.items()
                 if len(names) > 1 and (build.SHIPPED / names[0]).stat().st_size > 4096]
    assert big_dupes == [], f"files shipped twice: {big_dupes}"


@pytest.fixture()
def shipped_copy(tmp_path: Path) -> Path:
    copy = tmp_path / "shipped"
    shutil.copytree(build.SHIPPED, copy)
    return copy


def test_a_changed_file_is_an_error_that_names_it(shipped_copy: Path) -> None:
    weights = shipped_copy / "vlm" / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1
    weights.write_bytes(bytes(data))
    with pytest.raises(build.ToyModelsError, match=r"vlm/model\.safetensors differs"):
        build.verify_shipped(shipped_copy)


def test_a_missing_or_extra_file_is_an_error_that_names_it(shipped_copy: Path) -> None:
    (shipped_copy / "clip" / "config.json").unlink()
    with pytest.raises(build.ToyModelsError, match=r"clip/config\.json is missing"):
        build.verify_shipped(shipped_copy)


def test_a_changed_recipe_says_which_command_rebuilds(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(build, "recipe_hash", lambda seed=0, versions=True: "0" * 16)
    with pytest.raises(build.ToyModelsError) as error:
        build.ensure_toy_models()
    said = str(error.value)
    assert "recipe changed" in said and "judge toy build --seed 0 --ship" in said
    assert "judge/toy/expected.json" in said


def test_judge_toy_build_copies_the_shipped_models(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from judge.cli import main

    with pytest.raises(SystemExit) as done:
        main(["toy", "build", "--out", str(tmp_path), "--images", "3"])
    assert not done.value.code
    assert "the shipped models, every file checked" in capsys.readouterr().out
    for name in ("vlm", "clip", "owlv2"):
        assert build.folder_sha256(tmp_path / "models" / name) == \
            build.folder_sha256(build.SHIPPED / name)
    assert len((tmp_path / "set" / "manifest.jsonl").read_text().splitlines()) == 3


def test_the_wheel_carries_the_shipped_models(tmp_path: Path) -> None:
    root = Path(build.__file__).resolve().parents[2]
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                    "-q", "-w", str(tmp_path), str(root)], check=True)
    [wheel] = tmp_path.glob("judge-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    report = build.shipped_report()
    assert report is not None
    missing = [f for f in [*report["files"], "toy-models.json"]
               if f"judge/toy/shipped/{f}" not in names]
    assert missing == []
    assert "judge/toy/expected.json" in names


def test_a_stale_recipe_is_exit_2_with_the_command_not_a_traceback(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from judge.cli import main
    from judge.toy import register

    root = Path(build.__file__).resolve().parents[2]
    register._models.cache_clear()  # "toy" is found once per process: find it again
    monkeypatch.setattr(build, "recipe_hash", lambda seed=0, versions=True: "0" * 16)
    with pytest.raises(SystemExit) as done:
        main([str(root / "eval/toy/images/sample-000000.png"), "--constitution",
              str(root / "constitutions/toy.yaml"), "--model", "toy"])
    assert done.value.code == 2
    said = " ".join(capsys.readouterr().err.split())
    register._models.cache_clear()  # not the stale answer for the tests after this one
    assert "judge toy build --seed 0 --ship" in said and "Traceback" not in said
