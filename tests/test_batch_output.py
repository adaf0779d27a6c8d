"""`judge batch` without Ray: its inputs, its output parts, resume bookkeeping, and the
command's refusals (bad input exits 2 before Ray starts)."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from judge.batch.inputs import discover, load_source
from judge.batch.output import PartWriter, compact, parts, read_done, rule_columns
from judge.errors import InputError


def _png(path: Path, colour: tuple[int, int, int] = (200, 30, 30)) -> bytes:
    Image.new("RGB", (12, 12), colour).save(path)
    return path.read_bytes()


def test_inputs_files_folders_manifests_and_parquet(tmp_path: Path) -> None:
    (tmp_path / "dir").mkdir()
    a = _png(tmp_path / "dir" / "a.png")
    _png(tmp_path / "dir" / "b.png", (0, 0, 200))
    (tmp_path / "m.jsonl").write_text(
        json.dumps({"image": "dir/a.png", "id": "first"}) + "\n"
        + json.dumps({"path": "dir/b.png"}) + "\n"
    )
    images = pa.array(
        [{"bytes": a, "path": "a.png"}, {"bytes": b"", "path": "empty.png"}],
        pa.struct([("bytes", pa.binary()), ("path", pa.string())]),
    )
    pq.write_table(
        pa.table({"image": images, "label": ["unsafe", "safe"]}), tmp_path / "set.parquet"
    )
    sources = discover([str(tmp_path / "dir"), str(tmp_path / "m.jsonl"),
                        str(tmp_path / "set.parquet"), str(tmp_path / "gone.png")])
    rows = [row for source in sources for row in load_source(source)]
    by_id = {r["id"]: r for r in rows}
    row = f"{tmp_path / 'set.parquet'}:row-"  # Parquet rows without an id: file and number
    assert by_id["first"]["data"] == a and by_id["first"]["sha256"] == by_id[row + "0"]["sha256"]
    assert "dir/b.png" in by_id
    assert by_id[row + "1"]["error"] and by_id[row + "1"]["sha256"] is None
    assert "no such file" in by_id[str(tmp_path / "gone.png")]["error"]


def test_bad_inputs_are_input_errors(tmp_path: Path) -> None:
    (tmp_path / "out.jsonl").write_text('{"image": "../../etc/passwd"}\n')
    with pytest.raises(InputError, match="leaves the manifest's folder"):
        discover([str(tmp_path / "out.jsonl")])
    pq.write_table(pa.table({"picture": [b"x"]}), tmp_path / "p.parquet")
    with pytest.raises(InputError, match="no `image` column"):
        discover([str(tmp_path / "p.parquet")])
    with pytest.raises(InputError, match="no file matches"):
        discover([str(tmp_path / "*.png")])


def _result(image_id: str, sha: str | None, outcome: str, rules: dict[str, str]) -> dict[str, Any]:
    verdict = {"image_id": image_id, "outcome": outcome,
               "rules": [{"rule_id": k, "outcome": v} for k, v in rules.items()]}
    return {"id": image_id, "sha256": sha, "outcome": outcome, "verdict": json.dumps(verdict),
            "error": None if outcome != "error" else "broken"}


def test_parts_are_atomic_and_resume_reads_them(tmp_path: Path) -> None:
    out = tmp_path / "out.parquet"
    writer = PartWriter(out, ["r1", "r2"], "lockhash")
    writer.write([
        _result("a", "s1", "unsafe", {"r1": "violated", "r2": "irrelevant"}),
        _result("b", "s2", "undecided", {"r1": "undecided", "r2": "not_violated"}),
        _result("c", None, "error", {}),
    ])
    (out / ".part-123.parquet.tmp").write_bytes(b"half a part")  # a killed write
    table = pq.read_table(out)  # hidden files are not read
    assert table.num_rows == 3
    rows = {r["id"]: r for r in table.to_pylist()}
    assert (rows["a"]["rule:r1"], rows["a"]["rule:r2"]) == (True, False)
    assert rows["b"]["rule:r1"] is None  # undecided is never "not violated"
    assert rows["c"]["rule:r1"] is None and rows["c"]["error"] == "broken"
    done = read_done(out, "lockhash")
    assert done.outcomes == {("a", "s1"): "unsafe", ("b", "s2"): "undecided",
                             ("c", None): "error"} and done.rows == 3
    assert done.skip({"undecided", "error"}) == {("a", "s1")}
    assert not list(out.glob(".part-*"))  # the torn temporary file is gone
    with pytest.raises(InputError, match="another constitution"):
        read_done(out, "otherhash")


def test_compact_keeps_the_latest_row_of_each_key(tmp_path: Path) -> None:
    out = tmp_path / "out.parquet"
    writer = PartWriter(out, ["r1"], "lockhash")
    writer.write([_result("a", "s1", "unsafe", {"r1": "violated"}),
                  _result("b", "s2", "undecided", {"r1": "undecided"})])
    writer.write([_result("c", None, "error", {})])
    first, second = parts(out)
    # A rerun that retried b and c and was killed before it compacted: b twice, c twice.
    writer.write([_result("b", "s2", "safe", {"r1": "not_violated"}),
                  _result("c", "s3", "unsafe", {"r1": "violated"})])
    done = read_done(out, "lockhash")  # the latest row of a key wins
    assert done.outcomes[("b", "s2")] == "safe" and done.rows == 5
    assert compact(out) == {"unsafe": 2, "safe": 1}
    rows = pq.read_table(out).to_pylist()
    assert sorted((r["id"], r["outcome"]) for r in rows) == [
        ("a", "unsafe"), ("b", "safe"), ("c", "unsafe")]
    assert first in parts(out) and second not in parts(out)  # rewritten in place; emptied
    assert read_done(out, "lockhash").rows == 3  # the rewritten part keeps its lock hash
    assert compact(out) == {"unsafe": 2, "safe": 1}  # nothing left to drop


def test_rule_columns_of_a_missing_verdict_are_null() -> None:
    assert rule_columns(None, ["x"]) == {"rule:x": None}


def test_command_refuses_bad_options_before_ray(tmp_path: Path) -> None:
    from judge.cli import main

    policy = tmp_path / "p.yaml"
    policy.write_text("name: p\nrules:\n  - id: r\n    text: No red.\n    preconditions:\n"
                      "      - a red shape\n")
    from judge.constitution import Constitution

    c = Constitution.load(policy)
    c.compile(None)
    c.save_lock()
    _png(tmp_path / "a.png")

    def run(*args: str) -> tuple[int, str]:
        err = io.StringIO()
        code = 0
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            try:
                main(["batch", *args])
            except SystemExit as done:
                code = int(done.code or 0)
        return code, err.getvalue()

    base = ["--constitution", str(policy), "--backend", "hf", "--ray", "local"]
    code, err = run(str(tmp_path / "a.png"), *base, "--model", str(tmp_path / "nowhere"),
                    "--out", str(tmp_path / "o.parquet"))
    assert code == 2 and "no such folder" in err and "Traceback" not in err
    (tmp_path / "file.parquet").write_text("not a folder")
    code, err = run(str(tmp_path / "a.png"), *base, "--model", "toy",
                    "--out", str(tmp_path / "file.parquet"))
    assert code == 2 and "not a folder" in err
    code, err = run(str(tmp_path / "none*.png"), *base, "--model", "toy",
                    "--out", str(tmp_path / "o.parquet"))
    assert code == 2 and "no file matches" in err


def test_deploy_doc_is_linked_and_its_batch_options_exist() -> None:
    import importlib
    import re

    from typer.main import get_command

    # Register `batch` and one more command: typer collapses an app of one command.
    for name in ("batch", "judge_cmd"):
        importlib.import_module(f"judge.commands.{name}")
    from judge.commands.app import app

    root = Path(__file__).resolve().parent.parent
    assert "(docs/deploy.md)" in (root / "README.md").read_text(encoding="utf-8")
    doc = (root / "docs" / "deploy.md").read_text(encoding="utf-8")
    command = get_command(app).commands["batch"]  # type: ignore[attr-defined]
    known = {opt for p in command.params for opt in p.opts}
    blocks = re.findall(r"```bash\n(.*?)```", doc, re.S)
    used = {o for b in blocks if "judge batch" in b for o in re.findall(r"(--[a-z][\w-]*)", b)}
    assert used and used <= known, used - known
