"""What `judge batch` reads: image files, folders, globs, JSONL manifests and Parquet files
with the image bytes embedded (UnsafeBench's layout), as small *sources* read lazily.

The driver only lists: a file path, or one Parquet row group. An image's id is its path
as given, the manifest's `id`, the Parquet file's `id` column, or else `<file>:row-N` (N
counting from 0 over the file, `<file>` the Parquet path as given). Workers read the bytes
(`load_source`), hash them, and drop what the output already holds, so a million-image
Parquet file never passes through the driver.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from judge.errors import InputError
from judge.inputs import expand_inputs

# An image larger than this is an error row, not a worker out of memory.
MAX_IMAGE_BYTES = 64 * 1024 * 1024
_IMAGE_KEYS = ("image", "path", "file", "video_path")


def discover(args: Sequence[str], *, allow_outside: bool = False) -> list[dict[str, Any]]:
    """Sources for every input argument, in order; each (id, file) once.

    Raises:
        InputError: a folder or glob with no image, a bad manifest, a Parquet file with no
            `image` column.
    """
    sources: list[dict[str, Any]] = []
    for arg in args:
        path = Path(arg)
        suffix = path.suffix.lower()
        if path.is_file() and suffix == ".jsonl":
            sources += _manifest(path, allow_outside)
        elif path.is_file() and suffix in (".parquet", ".pq"):
            sources += _parquet(path)
        else:
            sources += [_file(p, p) for p in expand_inputs([arg])]
    # The same file named twice under the same id (a folder and a glob over it) once.
    unique = {(s["id"], s["path"], s["row_group"]): s for s in sources}
    return list(unique.values())


def _file(image_id: str, path: str) -> dict[str, Any]:
    return {"id": image_id, "path": path, "row_group": -1, "offset": 0}


def _manifest(manifest: Path, allow_outside: bool) -> list[dict[str, Any]]:
    root = manifest.parent.resolve()
    out = []
    try:
        lines = manifest.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise InputError(f"{manifest}: cannot read the manifest: {error}") from None
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        where = f"{manifest}:{number}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as error:
            raise InputError(f"{where}: not valid JSON: {error.msg}") from None
        key = next((k for k in _IMAGE_KEYS if isinstance(row, dict) and k in row), None)
        if key is None or not isinstance(row[key], str) or not row[key].strip():
            raise InputError(f"{where}: each line needs an `image` path (relative to the file)")
        relative = row[key].strip()
        resolved = (root / relative).resolve()
        if not allow_outside and not resolved.is_relative_to(root):
            raise InputError(
                f"{where}: image path {relative!r} leaves the manifest's folder; pass "
                "--allow-outside-paths if that is intended"
            )
        image_id = row.get("id")
        out.append(_file(str(image_id) if image_id not in (None, "") else relative, str(resolved)))
    return out


def _parquet(path: Path) -> list[dict[str, Any]]:
    import pyarrow.parquet as pq

    try:
        meta = pq.ParquetFile(path)
    except Exception as error:  # pyarrow raises many types for a bad file
        raise InputError(f"{path}: not a readable Parquet file: {error}") from None
    names = meta.schema_arrow.names
    if "image" not in names:
        raise InputError(f"{path}: no `image` column (columns: {', '.join(names)})")
    out, offset = [], 0
    for group in range(meta.num_row_groups):
        out.append({"id": "", "path": str(path), "row_group": group, "offset": offset})
        offset += meta.metadata.row_group(group).num_rows
    return out


# ---- in the workers ------------------------------------------------------------------------


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def load_source(source: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """The images of one source as rows {id, sha256, data, error}; a file that cannot be
    read is a row with the error (and no sha256), never an exception."""
    if int(source["row_group"]) >= 0:
        yield from _parquet_rows(source)
        return
    path, image_id = str(source["path"]), str(source["id"])
    try:
        with open(path, "rb") as handle:
            data = handle.read(MAX_IMAGE_BYTES + 1)
    except FileNotFoundError:
        yield _row(image_id, None, f"{path}: no such file")
        return
    except (OSError, ValueError) as error:
        yield _row(image_id, None, f"{path}: cannot read: {error}")
        return
    if len(data) > MAX_IMAGE_BYTES:
        yield _row(image_id, None, f"{path}: larger than {MAX_IMAGE_BYTES >> 20} MiB")
        return
    yield _row(image_id, data, None)


def _parquet_rows(source: dict[str, Any]) -> Iterator[dict[str, Any]]:
    import pyarrow.parquet as pq

    file = pq.ParquetFile(source["path"])
    columns = ["image"] + (["id"] if "id" in file.schema_arrow.names else [])
    table = file.read_row_group(int(source["row_group"]), columns=columns)
    for index, row in enumerate(table.to_pylist()):
        number = int(source["offset"]) + index
        raw_id = row.get("id")
        # Without an `id`, the row's number in its file, named with the file (as given):
        # two files' row 0 are two images.
        image_id = str(raw_id) if raw_id not in (None, "") else f"{source['path']}:row-{number}"
        image = row.get("image")
        data = image.get("bytes") if isinstance(image, dict) else image  # HF Image: {bytes, path}
        if not isinstance(data, (bytes, bytearray)) or not data:
            where = f"{source['path']}: row {number}"
            yield _row(image_id, None, f"{where}: the image bytes are missing")
        else:
            yield _row(image_id, bytes(data), None)


def _row(image_id: str, data: bytes | None, error: str | None) -> dict[str, Any]:
    return {
        "id": image_id,
        "sha256": sha256_hex(data) if data is not None else None,
        "data": data,
        "error": error,
    }
