"""Labelled sets: the images `judge eval` and `judge calibrate` are measured against.

Four forms, all read into the same `LabelledSet`:

* a JSONL manifest, one object a line::

      {"image": "imgs/001.png", "label": "unsafe", "rules": ["fatal-injury"],
       "split": "test", "id": "001", "metadata": {"source": "lab"}}

  `image` is relative to the manifest's folder (also accepted: `path`, `file`); `label` is
  "safe" or "unsafe" (also true/false, 1/0); `rules` (a list or one string) are the violated
  rule ids, or data set categories when a mapping file is given (`category` works too);
  `split`, `id` and `metadata` are optional, and unknown keys go into `metadata`
  (`violated` and `meta` are accepted for `rules` and `metadata`).
  A record may name a video clip instead (MP4/MOV, WebM/MKV, AVI, or an animated GIF/WebP),
  as Video-SafetyBench lays its rows out: `video_path` (or `video`) for the file,
  `question_id` for the id, `category` mapped to rule ids by a mapping file::

      {"video_path": "videos/0001.mp4", "question_id": "0001", "label": "unsafe",
       "category": "Violent Crimes", "subcategory": "Assault"}
* an image folder: `safe/...` and `unsafe/<rule_id>/...` (any depth below); optionally one
  level of split folders above them (`train/safe/...`, `test/unsafe/...`).
* a CSV file with a header row and the JSONL keys as columns (`rules` split on `;` or `|`).
* a Parquet file with the image bytes embedded, as public sets such as UnsafeBench publish
  it: an `image` column (binary, or a struct with `bytes`), `label` or `safety_label`,
  `category`, and optionally `split` and `id`.

A mapping file (YAML or JSON) translates a data set's categories to constitution rule ids::

    categories:
      Violence: [violence, fatal-injury]
      Hate: hate-symbols
      Spam: null          # not covered by this constitution: the image counts as safe
    unmapped: error       # an unsafe category not listed: error | keep | safe | drop

Image paths in manifests may not leave the manifest's folder (`..`, absolute paths,
symlinks pointing out) unless `allow_outside=True`: a manifest is data, and a data set
downloaded from elsewhere must not make judge read arbitrary files.
"""

from __future__ import annotations

import csv
import hashlib
import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from judge.errors import DatasetError
from judge.images import IMAGE_SUFFIXES
from judge.video.decode import VIDEO_SUFFIXES

Label = Literal["safe", "unsafe"]
_IMAGE_KEYS = ("image", "path", "file", "video_path", "video")
# What a folder layout picks up: images and clips.
_MEDIA_SUFFIXES = IMAGE_SUFFIXES | VIDEO_SUFFIXES
_LABEL_KEYS = ("label", "safety_label")
_RULE_KEYS = ("rules", "violated")
_META_KEYS = ("metadata", "meta")
_KNOWN_KEYS = frozenset(
    {*_IMAGE_KEYS, *_LABEL_KEYS, *_RULE_KEYS, *_META_KEYS, "category", "split", "id",
     "question_id"}
)


@dataclass(frozen=True)
class Example:
    """One labelled image."""

    id: str
    label: Label
    rules: tuple[str, ...] = ()  # violated rule ids; empty for safe, or unknown for unsafe
    split: str | None = None
    metadata: Mapping[str, Any] = field(default_factory=dict)
    path: Path | None = None  # the image file, or None when the bytes are embedded
    data: bytes | None = field(default=None, repr=False)
    where: str = ""  # "file:line" of the record, for messages

    @property
    def unsafe(self) -> bool:
        return self.label == "unsafe"

    @property
    def name(self) -> str:
        """What a report shows for this image."""
        return self.path.name if self.path is not None else self.id

    def image_bytes(self) -> bytes:
        if self.data is not None:
            return self.data
        assert self.path is not None
        try:
            return self.path.read_bytes()
        except OSError as error:
            message = f"{self.where}: cannot read image {self.path.name}: {error}"
            raise DatasetError(message) from error

    def source(self) -> Path | bytes:
        """The image as the judge takes it: a path, or embedded bytes."""
        if self.path is not None:
            return self.path
        assert self.data is not None
        return self.data


@dataclass(frozen=True)
class CategoryMapping:
    """Data set categories -> rule ids; None means "not covered: count the image as safe"."""

    categories: Mapping[str, tuple[str, ...] | None]
    unmapped: Literal["error", "keep", "safe", "drop"] = "error"
    source: str = "<mapping>"

    @classmethod
    def load(cls, path: str | Path) -> CategoryMapping:
        from judge.constitution.yamlsafe import read_file

        path = Path(path)
        raw = read_file(path, what="mapping file", error=DatasetError)
        return cls.from_data(raw, source=path.name)

    @classmethod
    def from_data(cls, raw: Any, *, source: str = "<mapping>") -> CategoryMapping:
        if not isinstance(raw, dict):
            raise DatasetError(f"{source}: a mapping file maps categories to rule ids")
        unmapped = raw.get("unmapped", "error") if "categories" in raw else "error"
        body = raw.get("categories", raw)
        if unmapped not in ("error", "keep", "safe", "drop"):
            raise DatasetError(
                f"{source}: unmapped must be error, keep, safe or drop, not {unmapped!r}"
            )
        if not isinstance(body, dict):
            raise DatasetError(f"{source}: 'categories' must be a mapping of category -> rule ids")
        categories: dict[str, tuple[str, ...] | None] = {}
        for key, value in body.items():
            if value is None:
                categories[str(key)] = None
            elif isinstance(value, str):
                categories[str(key)] = (value,)
            elif isinstance(value, list) and all(isinstance(v, str) for v in value):
                categories[str(key)] = tuple(value) if value else None
            else:
                raise DatasetError(
                    f"{source}: category {key!r} must map to a rule id, a list of them or null"
                )
        return cls(categories=categories, unmapped=unmapped, source=source)  # type: ignore[arg-type]

    def apply(self, example: Example) -> Example | None:
        """The example with its categories turned into rule ids (None: drop it)."""
        if not example.rules:
            return example
        rules: list[str] = []
        covered = False
        for category in example.rules:
            if category in self.categories:
                mapped = self.categories[category]
                if mapped is not None:
                    covered = True
                    rules += [r for r in mapped if r not in rules]
            elif self.unmapped == "error":
                raise DatasetError(
                    f"{example.where}: category {category!r} is not in the mapping file "
                    f"{self.source} (add it, or set `unmapped: keep|safe|drop`)"
                )
            elif self.unmapped == "drop":
                return None
            elif self.unmapped == "keep":
                covered = True
                if category not in rules:
                    rules.append(category)
        if not covered:
            # Every category of the image lies outside the constitution.
            return replace(example, label="safe", rules=())
        return replace(example, rules=tuple(rules))


@dataclass(frozen=True)
class LabelledSet:
    """A labelled set, as loaded; `sha256` identifies its content (labels and image bytes)."""

    name: str
    source: Path
    format: str
    examples: tuple[Example, ...]
    sha256: str

    def __len__(self) -> int:
        return len(self.examples)

    def __iter__(self) -> Iterator[Example]:
        return iter(self.examples)

    @property
    def splits(self) -> list[str]:
        return sorted({e.split for e in self.examples if e.split is not None})

    def rule_ids(self) -> list[str]:
        """Every rule id some example is labelled with, in first-seen order."""
        seen: dict[str, None] = {}
        for example in self.examples:
            for rule in example.rules:
                seen.setdefault(rule, None)
        return list(seen)

    def select(self, split: str | None = None, limit: int | None = None) -> LabelledSet:
        """The examples of one split (and at most `limit` of them); the hash stays the
        whole set's, since a split is named next to it wherever it is recorded."""
        examples: Sequence[Example] = self.examples
        if split is not None:
            if split not in self.splits:
                known = ", ".join(self.splits) or "none"
                raise DatasetError(
                    f"{self.source.name}: no split named {split!r} (splits: {known})"
                )
            examples = [e for e in examples if e.split == split]
        if limit is not None:
            if limit < 1:
                raise DatasetError(f"--limit must be at least 1, not {limit}")
            examples = examples[:limit]
        return replace(self, examples=tuple(examples))

    def check_rules(self, rule_ids: Iterable[str]) -> None:
        """Fail when the set names rules the constitution does not have (a typo there would
        silently zero that rule's recall)."""
        known = set(rule_ids)
        for example in self.examples:
            unknown = [r for r in example.rules if r not in known]
            if unknown:
                raise DatasetError(
                    f"{example.where}: rule id(s) {', '.join(map(repr, unknown))} are not in the "
                    f"constitution (known: {', '.join(sorted(known))}); use a mapping file "
                    "to translate data set categories"
                )


def load_dataset(
    path: str | Path,
    *,
    mapping: str | Path | CategoryMapping | None = None,
    allow_outside: bool = False,
) -> LabelledSet:
    """Load a labelled set from a manifest (.jsonl), a folder, a .csv or a .parquet file.

    Raises:
        DatasetError: the set is missing or malformed; the message names file and line.
    """
    path = Path(path)
    if not path.exists():
        raise DatasetError(f"labelled set {path} does not exist")
    if isinstance(mapping, (str, Path)):
        mapping = CategoryMapping.load(mapping)
    if path.is_dir():
        manifest = path / "manifest.jsonl"
        if manifest.is_file():
            fmt, examples = "jsonl", list(_read_jsonl(manifest, allow_outside))
        else:
            fmt, examples = "folder", list(_read_folder(path, allow_outside))
    else:
        suffix = path.suffix.lower()
        if suffix in (".jsonl", ".ndjson"):
            fmt, examples = "jsonl", list(_read_jsonl(path, allow_outside))
        elif suffix == ".csv":
            fmt, examples = "csv", list(_read_csv(path, allow_outside))
        elif suffix in (".parquet", ".pq"):
            fmt, examples = "parquet", list(_read_parquet(path))
        else:
            raise DatasetError(
                f"{path.name}: unknown labelled-set format {suffix or '(no suffix)'}; "
                "use a .jsonl manifest, an image folder, a .csv or a .parquet file"
            )
    if mapping is not None:
        mapped = (mapping.apply(e) for e in examples)
        examples = [e for e in mapped if e is not None]
    if not examples:
        raise DatasetError(f"{path.name}: the labelled set has no images")
    _check_unique(examples)
    return LabelledSet(
        name=path.stem if path.is_file() else path.name,
        source=path,
        format=fmt,
        examples=tuple(examples),
        sha256=dataset_sha256(examples),
    )


def dataset_sha256(examples: Iterable[Example]) -> str:
    """Hash of the labels and image bytes, independent of order and of where files live."""
    rows = []
    for example in examples:
        image = hashlib.sha256(example.image_bytes()).hexdigest()
        rows.append([example.id, example.label, sorted(example.rules), example.split, image])
    rows.sort(key=lambda r: str(r[0]))
    return hashlib.sha256(json.dumps(rows, separators=(",", ":")).encode()).hexdigest()


# ---- readers --------------------------------------------------------------------------


def _check_unique(examples: Sequence[Example]) -> None:
    first: dict[str, Example] = {}
    for example in examples:
        if example.id in first:
            raise DatasetError(
                f"{example.where}: image id {example.id!r} appears twice "
                f"(first at {first[example.id].where}); give each record a distinct `id`"
            )
        first[example.id] = example


def _inside(root: Path, candidate: Path, where: str, allow_outside: bool) -> Path:
    """Resolve `candidate` against `root`, refusing paths that leave it."""
    resolved = (root / candidate).resolve()
    if not allow_outside and not resolved.is_relative_to(root.resolve()):
        raise DatasetError(
            f"{where}: image path {str(candidate)!r} leaves the manifest's folder; "
            "pass --allow-outside-paths (allow_outside=True) if that is intended"
        )
    if not resolved.is_file():
        raise DatasetError(f"{where}: image {str(candidate)!r} not found")
    return resolved


def _parse_label(value: Any, where: str) -> Label:
    if isinstance(value, bool):
        return "unsafe" if value else "safe"
    if isinstance(value, int) and value in (0, 1):
        return "unsafe" if value else "safe"
    if isinstance(value, str):
        text = value.strip().lower()
        if text in ("safe", "unsafe"):
            return "safe" if text == "safe" else "unsafe"
        if text in ("0", "1", "true", "false"):
            return "unsafe" if text in ("1", "true") else "safe"
    raise DatasetError(f"{where}: label must be 'safe' or 'unsafe', not {value!r}")


def _parse_rules(value: Any, where: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        parts = value.replace("|", ";").split(";")
        return tuple(p.strip() for p in parts if p.strip())
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return tuple(v.strip() for v in value if v.strip())
    raise DatasetError(f"{where}: rules must be a list of rule ids or a string, not {value!r}")


def _record(
    row: Mapping[str, Any],
    where: str,
    *,
    default_id: str,
    path: Path | None = None,
    data: bytes | None = None,
) -> Example:
    label_key = next((k for k in _LABEL_KEYS if k in row), None)
    if label_key is None:
        raise DatasetError(f"{where}: missing `label` (safe or unsafe)")
    label = _parse_label(row[label_key], where)
    listed = next((row[k] for k in _RULE_KEYS if k in row), None)
    rules = _parse_rules(listed, where) + _parse_rules(row.get("category"), where)
    if label == "safe" and listed:
        raise DatasetError(f"{where}: a safe image cannot list violated rules")
    if label == "safe":
        rules = ()  # a category on a safe image (UnsafeBench has them) is not a violation
    metadata = next((row[k] for k in _META_KEYS if k in row), None) or {}
    if not isinstance(metadata, dict):
        raise DatasetError(f"{where}: metadata must be an object, not {type(metadata).__name__}")
    extra = {k: v for k, v in row.items() if k not in _KNOWN_KEYS}
    if "category" in row and row.get("category") not in (None, ""):
        extra["category"] = row["category"]
    split = row.get("split")
    if split is not None and not isinstance(split, str):
        raise DatasetError(f"{where}: split must be a string, not {split!r}")
    raw_id = row.get("id", row.get("question_id"))
    if raw_id is not None and not isinstance(raw_id, (str, int)):
        raise DatasetError(f"{where}: id must be a string or a number, not {raw_id!r}")
    return Example(
        id=str(raw_id) if raw_id not in (None, "") else default_id,
        label=label,
        rules=tuple(dict.fromkeys(rules)),
        split=split or None,
        metadata={**metadata, **extra},
        path=path,
        data=data,
        where=where,
    )


def _image_field(row: Mapping[str, Any], where: str) -> str:
    key = next((k for k in _IMAGE_KEYS if k in row), None)
    value = row.get(key) if key else None
    if not isinstance(value, str) or not value.strip():
        raise DatasetError(f"{where}: missing `image` (a path relative to the manifest)")
    return value.strip()


def _read_jsonl(manifest: Path, allow_outside: bool) -> Iterator[Example]:
    root = manifest.parent
    try:
        lines = manifest.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise DatasetError(f"{manifest.name}: cannot read the manifest: {error}") from error
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        where = f"{manifest.name}:{number}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as error:
            raise DatasetError(f"{where}: not valid JSON: {error.msg}") from error
        if not isinstance(row, dict):
            raise DatasetError(f"{where}: each line must be a JSON object")
        relative = _image_field(row, where)
        image = _inside(root, Path(relative), where, allow_outside)
        yield _record(row, where, default_id=relative, path=image)


def _read_csv(path: Path, allow_outside: bool) -> Iterator[Example]:
    root = path.parent
    try:
        handle = path.open(encoding="utf-8", newline="")
    except OSError as error:
        raise DatasetError(f"{path.name}: cannot read: {error}") from error
    with handle:
        reader = csv.DictReader(handle)
        if not reader.fieldnames or not any(k in reader.fieldnames for k in _IMAGE_KEYS):
            raise DatasetError(f"{path.name}:1: the header must name an `image` column")
        try:
            for row in reader:
                where = f"{path.name}:{reader.line_num}"
                clean = {k: v for k, v in row.items() if k is not None and v not in (None, "")}
                relative = _image_field(clean, where)
                image = _inside(root, Path(relative), where, allow_outside)
                yield _record(clean, where, default_id=relative, path=image)
        except csv.Error as error:
            raise DatasetError(f"{path.name}:{reader.line_num}: bad CSV: {error}") from error


def _read_folder(root: Path, allow_outside: bool) -> Iterator[Example]:
    layouts: list[tuple[str | None, Path]] = []
    if (root / "safe").is_dir() or (root / "unsafe").is_dir():
        layouts.append((None, root))
    else:
        for child in sorted(p for p in root.iterdir() if p.is_dir()):
            if (child / "safe").is_dir() or (child / "unsafe").is_dir():
                layouts.append((child.name, child))
    if not layouts:
        raise DatasetError(
            f"{root.name}/: not a labelled set: expected manifest.jsonl, or folders "
            "safe/ and unsafe/<rule_id>/ (optionally inside split folders)"
        )
    for split, base in layouts:
        for file in _images_below(base / "safe"):
            yield _folder_example(root, file, "safe", (), split, allow_outside)
        unsafe = base / "unsafe"
        if not unsafe.is_dir():
            continue
        for loose in (p for p in unsafe.iterdir() if p.is_file()):
            if loose.suffix.lower() in _MEDIA_SUFFIXES:
                raise DatasetError(
                    f"{loose.relative_to(root)}: images under unsafe/ go in a folder named "
                    "after the violated rule: unsafe/<rule_id>/"
                )
        for rule_dir in sorted(p for p in unsafe.iterdir() if p.is_dir()):
            for file in _images_below(rule_dir):
                yield _folder_example(root, file, "unsafe", (rule_dir.name,), split, allow_outside)


def _images_below(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    return sorted(
        p for p in folder.rglob("*") if p.suffix.lower() in _MEDIA_SUFFIXES and not p.is_dir()
    )


def _folder_example(
    root: Path, file: Path, label: Label, rules: tuple[str, ...], split: str | None, allow: bool
) -> Example:
    relative = file.relative_to(root)
    where = str(relative)
    image = _inside(root, relative, where, allow)
    return Example(
        id=relative.as_posix(), label=label, rules=rules, split=split, path=image, where=where
    )


def _read_parquet(path: Path) -> Iterator[Example]:
    try:
        import pyarrow.parquet as pq
    except ImportError as error:  # pragma: no cover - pyarrow is in the eval extra
        raise DatasetError(
            "reading Parquet needs pyarrow: pip install 'judge[eval]'"
        ) from error
    try:
        table = pq.read_table(path)
    except Exception as error:  # pyarrow raises many types for a bad file
        raise DatasetError(f"{path.name}: not a readable Parquet file: {error}") from error
    if "image" not in table.column_names:
        raise DatasetError(
            f"{path.name}: no `image` column (columns: {', '.join(table.column_names)})"
        )
    for index, row in enumerate(table.to_pylist()):
        where = f"{path.name}:row {index}"
        image = row.pop("image")
        if isinstance(image, dict):  # Hugging Face `Image` feature: {bytes, path}
            data = image.get("bytes")
            name = image.get("path")
        else:
            data, name = image, None
        if not isinstance(data, (bytes, bytearray)) or not data:
            raise DatasetError(f"{where}: the image bytes are missing")
        clean = {k: v for k, v in row.items() if v is not None}
        example = _record(clean, where, default_id=f"row-{index}", data=bytes(data))
        if name and "source_name" not in example.metadata:
            example = replace(example, metadata={**example.metadata, "file": str(name)})
        yield example
