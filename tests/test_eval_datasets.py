"""Labelled-set loaders: all four formats, the category mapping, the path rules, errors."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import pytest
from PIL import Image

from judge.errors import DatasetError
from judge.evaluate.datasets import CategoryMapping, load_dataset


def png(colour: tuple[int, int, int]) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), colour).save(buffer, format="PNG")
    return buffer.getvalue()


RED, BLUE, GREEN = png((255, 0, 0)), png((0, 0, 255)), png((0, 255, 0))


def write_manifest(root: Path, rows: list[dict[str, object]], name: str = "set.jsonl") -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "imgs").mkdir(exist_ok=True)
    for colour, data in (("red", RED), ("blue", BLUE), ("green", GREEN)):
        (root / "imgs" / f"{colour}.png").write_bytes(data)
    path = root / name
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


ROWS: list[dict[str, object]] = [
    {"image": "imgs/red.png", "label": "unsafe", "rules": ["red-things"], "split": "test"},
    {"image": "imgs/blue.png", "label": "safe", "split": "train", "source": "lab"},
    {"image": "imgs/green.png", "label": "unsafe", "rules": "green-things", "id": "g"},
]


def test_jsonl_manifest(tmp_path: Path) -> None:
    data = load_dataset(write_manifest(tmp_path, ROWS))
    assert data.format == "jsonl" and len(data) == 3
    red, blue, green = data.examples
    assert (red.id, red.label, red.rules, red.split) == (
        "imgs/red.png",
        "unsafe",
        ("red-things",),
        "test",
    )
    assert red.image_bytes() == RED and red.where == "set.jsonl:1"
    assert blue.metadata == {"source": "lab"} and blue.rules == ()
    assert green.id == "g" and green.rules == ("green-things",)
    assert data.splits == ["test", "train"]
    assert [e.id for e in data.select(split="train")] == ["imgs/blue.png"]
    assert len(data.select(limit=2)) == 2
    with pytest.raises(DatasetError, match="no split named 'dev'"):
        data.select(split="dev")


def test_hash_follows_content_not_order_or_place(tmp_path: Path) -> None:
    one = load_dataset(write_manifest(tmp_path / "a", ROWS))
    two = load_dataset(write_manifest(tmp_path / "b", list(reversed(ROWS))))
    assert one.sha256 == two.sha256 and len(one.sha256) == 64
    relabelled = [dict(ROWS[0], label="safe", rules=[]), *ROWS[1:]]
    assert load_dataset(write_manifest(tmp_path / "c", relabelled)).sha256 != one.sha256
    changed = tmp_path / "d"
    write_manifest(changed, ROWS)
    (changed / "imgs" / "red.png").write_bytes(GREEN)
    assert load_dataset(changed / "set.jsonl").sha256 != one.sha256


def test_folder_layout_with_and_without_splits(tmp_path: Path) -> None:
    flat = tmp_path / "flat"
    for rel, data in (
        ("safe/a.png", BLUE),
        ("unsafe/red-things/b.png", RED),
        ("unsafe/red-things/deep/c.jpg", RED),
        ("safe/notes.txt", b"x"),
    ):
        (flat / rel).parent.mkdir(parents=True, exist_ok=True)
        (flat / rel).write_bytes(data)
    data = load_dataset(flat)
    assert data.format == "folder"
    assert {(e.id, e.label, e.rules) for e in data} == {
        ("safe/a.png", "safe", ()),
        ("unsafe/red-things/b.png", "unsafe", ("red-things",)),
        ("unsafe/red-things/deep/c.jpg", "unsafe", ("red-things",)),
    }
    split = tmp_path / "split"
    for rel in ("train/safe/a.png", "test/unsafe/r/b.png"):
        (split / rel).parent.mkdir(parents=True, exist_ok=True)
        (split / rel).write_bytes(RED)
    assert {(e.split, e.label) for e in load_dataset(split)} == {
        ("train", "safe"),
        ("test", "unsafe"),
    }
    (flat / "unsafe" / "loose.png").write_bytes(RED)
    with pytest.raises(DatasetError, match=r"unsafe/<rule_id>/"):
        load_dataset(flat)
    with pytest.raises(DatasetError, match="not a labelled set"):
        load_dataset(tmp_path / "split" / "train" / "safe")


def test_csv(tmp_path: Path) -> None:
    write_manifest(tmp_path, [])
    path = tmp_path / "set.csv"
    path.write_text(
        "image,label,rules,split,source\n"
        "imgs/red.png,unsafe,red-things;other,test,web\n"
        "imgs/blue.png,safe,,train,\n"
    )
    data = load_dataset(path)
    assert data.format == "csv"
    red, blue = data.examples
    assert red.rules == ("red-things", "other") and red.metadata == {"source": "web"}
    assert blue.label == "safe" and blue.split == "train"
    path.write_text("image,label\nimgs/red.png,unsafe\nimgs/blue.png,maybe\n")
    with pytest.raises(DatasetError, match=r"set\.csv:3: label must be 'safe' or 'unsafe'"):
        load_dataset(path)


def test_parquet_with_embedded_bytes_and_mapping(tmp_path: Path) -> None:
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    # UnsafeBench's layout: an HF Image struct, "Safe"/"Unsafe", a category per image.
    table = pa.table(
        {
            "image": [
                {"bytes": RED, "path": "a.png"},
                {"bytes": BLUE, "path": "b.png"},
                {"bytes": GREEN, "path": "c.png"},
                {"bytes": GREEN, "path": "d.png"},
            ],
            "safety_label": ["Unsafe", "Safe", "Unsafe", "Unsafe"],
            "category": ["Violence", "Violence", "Spam", "Hate"],
            "source": ["Laion5B", "Lexica", "Lexica", "Laion5B"],
        }
    )
    path = tmp_path / "unsafebench.parquet"
    pq.write_table(table, path)
    plain = load_dataset(path)
    assert plain.format == "parquet"
    assert [e.label for e in plain] == ["unsafe", "safe", "unsafe", "unsafe"]
    assert plain.examples[0].image_bytes() == RED and plain.examples[0].path is None
    assert plain.examples[0].rules == ("Violence",) and plain.examples[1].rules == ()
    assert plain.examples[1].metadata["category"] == "Violence"

    mapping = tmp_path / "map.yaml"
    mapping.write_text("categories:\n  Violence: [gore, weapons]\n  Spam: null\n")
    with pytest.raises(
        DatasetError, match=r"row 3: category 'Hate' is not in the mapping file map\.yaml"
    ):
        load_dataset(path, mapping=mapping)
    mapping.write_text("categories:\n  Violence: [gore, weapons]\n  Spam: null\nunmapped: drop\n")
    mapped = load_dataset(path, mapping=mapping)
    assert [(e.id, e.label, e.rules) for e in mapped] == [
        ("row-0", "unsafe", ("gore", "weapons")),
        ("row-1", "safe", ()),
        ("row-2", "safe", ()),  # Spam is outside this constitution: safe here
    ]
    mapped.check_rules(["gore", "weapons"])
    with pytest.raises(DatasetError, match="'weapons' are not in the constitution"):
        mapped.check_rules(["gore"])
    keep = CategoryMapping.from_data({"categories": {"Violence": "gore"}, "unmapped": "keep"})
    assert [e.rules for e in load_dataset(path, mapping=keep)][2:] == [("Spam",), ("Hate",)]
    (tmp_path / "broken.parquet").write_bytes(b"PAR1 nope")
    with pytest.raises(DatasetError, match="not a readable Parquet file"):
        load_dataset(tmp_path / "broken.parquet")


def test_paths_may_not_leave_the_manifest_folder(tmp_path: Path) -> None:
    secret = tmp_path / "secret.png"
    secret.write_bytes(RED)
    root = tmp_path / "set"
    for image in ("../secret.png", str(secret)):
        path = write_manifest(root, [{"image": image, "label": "safe"}])
        with pytest.raises(
            DatasetError, match=r"set\.jsonl:1: image path .* leaves the manifest's folder"
        ):
            load_dataset(path)
        assert load_dataset(path, allow_outside=True).examples[0].image_bytes() == RED
    os.symlink(secret, root / "imgs" / "link.png")
    path = write_manifest(root, [{"image": "imgs/link.png", "label": "safe"}])
    with pytest.raises(DatasetError, match="leaves the manifest's folder"):
        load_dataset(path)
    folder = tmp_path / "folder"
    (folder / "safe").mkdir(parents=True)
    os.symlink(secret, folder / "safe" / "link.png")
    with pytest.raises(DatasetError, match="leaves the manifest's folder"):
        load_dataset(folder)


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("not json", r"set\.jsonl:2: not valid JSON"),
        ('["a"]', r"set\.jsonl:2: each line must be a JSON object"),
        ('{"label": "safe"}', r"set\.jsonl:2: missing `image`"),
        ('{"image": "imgs/blue.png"}', r"set\.jsonl:2: missing `label`"),
        (
            '{"image": "imgs/nope.png", "label": "safe"}',
            r"set\.jsonl:2: image 'imgs/nope.png' not found",
        ),
        ('{"image": "imgs/blue.png", "label": "safe", "rules": ["x"]}', "a safe image cannot list"),
        (
            '{"image": "imgs/red.png", "label": "safe"}',
            r"set\.jsonl:2: image id 'imgs/red.png' appears twice \(first at set\.jsonl:1\)",
        ),
        ('{"image": "imgs/blue.png", "label": "unsafe", "rules": 3}', "rules must be a list"),
    ],
)
def test_clear_errors_name_file_and_line(tmp_path: Path, line: str, message: str) -> None:
    path = write_manifest(tmp_path, [ROWS[0]])
    path.write_text(path.read_text() + line + "\n")
    with pytest.raises(DatasetError, match=message):
        load_dataset(path)


def test_other_bad_sets(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="does not exist"):
        load_dataset(tmp_path / "missing.jsonl")
    (tmp_path / "x.txt").write_text("hi")
    with pytest.raises(DatasetError, match="unknown labelled-set format"):
        load_dataset(tmp_path / "x.txt")
    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(DatasetError, match="no images"):
        load_dataset(tmp_path / "empty.jsonl")
    bad = tmp_path / "map.yaml"
    bad.write_text("categories: {Violence: 3}\n")
    with pytest.raises(DatasetError, match=r"map\.yaml: category 'Violence' must map"):
        CategoryMapping.load(bad)
