"""A fleet of two real vLLM CPU servers with the toy VLM: the bench's affinity-versus-
round-robin section, and a replica killed mid-run (every image still gets its verdict,
none "safe" by accident).

The two replicas are this module's own (the CPU build's smallest KV blocks,
`cpu_server_args`'s default, so that the toy's prompts fill whole blocks; see
judge.bench.fleet); both start at once. To iterate without
the start, run two yourself and set JUDGE_TEST_FLEET_URLS="http://a http://b" (the kill
test then only stops the second).
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import io
import json
import os
import signal
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.vllm]

# The figures for the closing note: the file JUDGE_FLEET_FIGURES names, else one in the
# system's temporary folder.
FIGURES = Path(
    os.environ.get("JUDGE_FLEET_FIGURES") or Path(tempfile.gettempdir()) / "issue16_figures.txt"
)


@pytest.fixture(scope="module")
def replicas(toy_models: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[Any]]:
    from judge.bench.server import cpu_server_args, start_vllm_server

    reuse = os.environ.get("JUDGE_TEST_FLEET_URLS")
    if reuse:
        yield [{"root": url, "process": None} for url in reuse.split()]
        return
    logs = tmp_path_factory.mktemp("fleet")

    def start(i: int) -> Any:
        return start_vllm_server(
            toy_models.vlm, served_model_name="toy-vlm", args=cpu_server_args(max_num_seqs=4),
            log_path=logs / f"r{i}.log",
            timeout=float(os.environ.get("JUDGE_TEST_VLLM_START_TIMEOUT", "600")),
        )

    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        futures = [pool.submit(start, i) for i in range(2)]
        servers = [f.result() for f in futures]
    try:
        yield [{"root": s.root, "process": s.process, "server": s} for s in servers]
    finally:
        for server in servers:
            server.stop()


def _figure(line: str) -> None:
    print(line)
    with contextlib.suppress(OSError), FIGURES.open("a", encoding="utf-8") as handle:
        handle.write(line + "\n")


def test_bench_fleet_section_affinity_against_round_robin(
    replicas: list[Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from judge.cli import main

    monkeypatch.setenv("COLUMNS", "200")
    out = tmp_path / "bench.json"
    args = ["bench", "--sections", "fleet", "--quick", "--json", str(out)]
    for replica in replicas:
        args += ["--server", replica["root"]]
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed), pytest.raises(SystemExit) as done:
        main(args)
    assert done.value.code == 0, printed.getvalue()
    result = json.loads(out.read_text())
    rows = {r["measure"]: r for r in result["rows"] if r["section"] == "fleet"}
    fleet = result["summary"]["fleet"]
    for policy in ("affinity", "round-robin"):
        assert rows[f"{policy}: cache hit (usage.cached_tokens)"]["ratio"] is not None
        assert fleet["images_per_s"][policy] > 0
    # Each policy judged the same images to the same verdicts.
    assert fleet["same_verdicts"] == fleet["images"], printed.getvalue()
    hits, metrics, rates = fleet["hit_usage"], fleet["hit_metrics"], fleet["images_per_s"]
    # Affinity keeps an image's queries where its blocks are cached: never fewer hits.
    assert hits["affinity"] >= hits["round-robin"], hits
    last = printed.getvalue().strip().splitlines()[-1]
    assert "fleet_hit=" in last, last
    from judge.bench.server import CPU_BLOCK_SIZE

    _figure(
        f"judge bench --sections fleet --quick, {fleet['replicas']} vLLM CPU replicas "
        f"(toy VLM, {CPU_BLOCK_SIZE}-token blocks), {fleet['images']} images per policy: "
        "prefix-cache hit "
        f"(usage.cached_tokens) affinity {hits['affinity']:.1%} vs round-robin "
        f"{hits['round-robin']:.1%}; /metrics hits/queries affinity "
        f"{_pct(metrics['affinity'])} vs round-robin {_pct(metrics['round-robin'])}; "
        f"images/s affinity {rates['affinity']:.2f} vs round-robin {rates['round-robin']:.2f}"
    )


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1%}"


def test_a_replica_killed_mid_run_loses_no_verdict(
    replicas: list[Any], toy_policy: Path, tmp_path: Path
) -> None:
    from judge.bench.run import scenes
    from judge.engine.judge import Judge

    urls = [r["root"] for r in replicas]
    n = 16
    with Judge(toy_policy, model="toy", servers=urls, store=tmp_path / "ref.sqlite3") as judge:
        reference = {v.image_id: v for v in judge.judge_many(list(scenes(700_000, n)))}
    assert {v.outcome for v in reference.values()} <= {"safe", "unsafe"}

    victim = replicas[1]
    verdicts = []
    killed_after = None
    with Judge(toy_policy, model="toy", servers=urls, store=tmp_path / "kill.sqlite3") as judge:
        for verdict in judge.stream(scenes(700_000, n), concurrency=4):
            verdicts.append(verdict)
            if len(verdicts) == 4:
                killed_after = len(verdicts)
                _kill(victim)
        stats = judge.backend.replica_stats()  # type: ignore[attr-defined]
    assert killed_after == 4 and len(verdicts) == n
    by_id = {v.image_id: v for v in verdicts}
    accidental = [i for i, v in by_id.items()
                  if v.outcome == "safe" and reference[i].outcome != "safe"]
    assert not accidental, accidental
    assert all(v.outcome in ("safe", "unsafe") for v in verdicts), [
        (v.image_id, v.outcome, v.undecided) for v in verdicts if v.outcome not in ("safe",
                                                                                   "unsafe")
    ]
    assert {i: v.outcome for i, v in by_id.items()} == {
        i: v.outcome for i, v in reference.items()
    }
    down = next(s for s in stats if s["url"] == victim["root"])
    assert not down["healthy"] and down["taken_out"] == 1, stats
    _figure(
        f"a replica SIGKILLed after {killed_after} of {n} images: {n} verdicts, all the same "
        f"as with both replicas; the killed replica was taken out ({down['reason'][:80]})"
    )


def _kill(replica: dict[str, Any]) -> None:
    process = replica.get("process")
    if process is None:  # a server started outside the test: it must be stopped by hand
        pytest.skip("JUDGE_TEST_FLEET_URLS servers cannot be killed by the test")
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
