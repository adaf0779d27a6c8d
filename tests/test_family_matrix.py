"""The support matrix: every VLM family's tiny build through every back end.

Each family (judge.models.families) runs, with random weights, through transformers, a
real vLLM server and (for `IN_PROCESS_FAMILIES`) vLLM in process:

* `judge doctor` on the model or server;
* a whole `judge` run of the toy policy on toy images with every stage on (the toy CLIP's
  relevance scan, the OWLv2 locator, the masked re-ask, the cascade with structured output);
* the plumbing, asserted on the back end itself: the label tokens found, P(Yes) and P(No)
  read from them, the prior asked without an image, the image in the prompt (more tokens
  with it), and on the server: the label probabilities agree with transformers' within
  `TOLERANCE`, and the second statement about an image hits the prefix cache.

Every cell is recorded; with JUDGE_MATRIX_RESULTS set, the results are written there and
`scripts/support_matrix.py` renders README's and docs/models.md's matrix from them (CI
checks the rendering against the committed one). A family whose back end is known not to
work (judge.models.family) must fail with its stated reason and a non-zero exit, never
with a traceback or an undecided run that looks like success.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import io
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from judge.models.families import FAMILY_NAMES, build_family, family_of

pytestmark = [pytest.mark.slow, pytest.mark.matrix]

ROOT = Path(__file__).resolve().parent.parent
POLICY = ROOT / "constitutions" / "toy.yaml"
# An unsafe scene (green and blue shapes) and a safe one with yellow and written text: the
# relevance scan keeps some rules and skips others on each.
IMAGES = [ROOT / "eval" / "toy" / "images" / f"sample-{i:06d}.png" for i in (0, 1)]
# vLLM in process costs an engine start per family in a process of its own: two families
# (Gemma 3, whose image attention differs on vLLM's CPU build, and InternVL, which vLLM
# serves with another model's code).
IN_PROCESS_FAMILIES = ("gemma3", "internvl")
# Largest relative difference |P_vllm - P_hf| / P between vLLM and transformers, over
# P(Yes) and P(No) of the same prompts (float32 on both; random weights put each label
# near 0.004). Gemma 3: vLLM's CPU build attends causally over the image tokens where
# transformers attends both ways (docs/models.md); measured 1.2e-3.
TOLERANCE = {"gemma3": 2e-2}
DEFAULT_TOLERANCE = 1e-3

RESULTS: dict[str, dict[str, dict[str, Any]]] = {}


def record(family: str, backend: str, status: str, note: str | None = None, **details: Any) -> None:
    RESULTS.setdefault(family, {})[backend] = {"status": status, "note": note, **details}


@pytest.fixture(scope="module", autouse=True)
def write_results() -> Iterator[None]:
    yield
    target = os.environ.get("JUDGE_MATRIX_RESULTS")
    if not target or not RESULTS:
        return
    path = Path(target)
    merged = json.loads(path.read_text() or "{}") if path.exists() else {}
    for family, cells in RESULTS.items():
        merged.setdefault(family, {}).update(cells)
    path.write_text(json.dumps(merged, indent=2, sort_keys=True) + "\n")


# -- running judge ---------------------------------------------------------------------


def cli(*args: str) -> tuple[int, str, str]:
    """`judge ARGS` in this process; the exit code comes from SystemExit."""
    from judge.cli import main

    out, err = io.StringIO(), io.StringIO()
    code = 0
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            main(list(args))
        except SystemExit as done:
            code = int(done.code or 0)
    return code, out.getvalue(), err.getvalue()


def judge_run_args(family: str, where: list[str], store: Path) -> list[str]:
    return [
        *map(str, IMAGES),
        "--constitution", str(POLICY),
        "--model", f"tiny-{family}",
        *where,
        "--json",
        "--explain",
        "--store", str(store),
    ]


def check_verdicts(document: dict[str, Any], family: str) -> dict[str, Any]:
    """A verdict with evidence and no error for every image, through every stage; returns
    counts for the record."""
    verdicts = document["verdicts"]
    assert len(verdicts) == len(IMAGES)
    stages: dict[str, int] = {}
    calls: dict[str, int] = {}
    rationales = masked = 0
    for verdict in verdicts:
        for kind, count in verdict["run"]["calls"].items():
            calls[kind] = calls.get(kind, 0) + count
        assert verdict["error"] is None, (family, verdict["error"])
        assert verdict["outcome"] in ("safe", "unsafe"), (family, verdict["outcome"], verdict)
        judged = [r for r in verdict["rules"] if r["outcome"] != "irrelevant"]
        assert judged, "the relevance scan left no rule to judge"
        for rule in judged:
            assert rule["relevance"] is not None, rule  # the relevance scan scored it
            assert rule["preconditions"], rule  # evidence
            for pre in rule["preconditions"]:
                for alt in pre["alternatives"]:
                    assert alt["error"] is None, (family, alt)
                    stages[alt["stage"]] = stages.get(alt["stage"], 0) + 1
                    if alt["m"] is not None:
                        # P(Yes)/(P(Yes)+P(No)) with the image, and the prior without it.
                        assert 0.0 <= alt["m"] <= 1.0 and alt["prior"] is not None
                    masked += alt["masked_m"] is not None
                    if alt["stage"] == "cascade":
                        assert alt["rationale"] is not None, alt  # its JSON was parsed
                        rationales += 1
    # Every stage ran: the relevance scan, the locator, the masked re-ask, the cascade.
    assert calls.get("relevance_encoder", 0) > 0 and calls.get("locator", 0) > 0, calls
    assert masked > 0 and rationales > 0, (masked, rationales, stages)
    return {"stages": stages, "calls": calls, "cascade_rationales": rationales}


def yes_no_plumbing(backend: Any) -> dict[str, Any]:
    """Label tokens, P(Yes)/P(No), the prior without an image, the image's tokens, and the
    cascade's JSON summary (constrained, json.dumps spacing, no free whitespace)."""
    from judge.engine.cascade import SUMMARY_SCHEMA, parse_rating
    from judge.models.base import Message
    from judge.queries import visibility_query

    small = Image.open(IMAGES[0]).convert("RGB")
    large = small.resize((448, 448))
    queries = [
        visibility_query("a blue shape", small, "small"),
        visibility_query("a red shape", small, "small"),  # the same image, again
        visibility_query("a blue shape", None),
        visibility_query("a blue shape", large, "large"),
    ]

    summary = [Message.user("Is a blue shape visible?", small, "Answer as JSON.")]
    text_only = [Message.user("Is a blue shape visible? Answer as JSON.")]

    async def ask() -> tuple[list[Any], Any, Any]:
        try:
            results = await backend.yes_no(queries)
            generations = await backend.generate([summary, text_only], 96, SUMMARY_SCHEMA)
            return results, backend.labels, generations
        finally:
            await backend.aclose()

    results, labels, generations = asyncio.run(ask())
    for generation in generations:
        assert generation.error is None, generation
        if backend.supports_json_schema:
            assert generation.text.startswith('{"rating": "'), generation.text[:80]
            assert "\n" not in generation.text and parse_rating(generation.text) is not None
    for result in results:
        assert result.error is None and not result.missing, result
        assert result.p_yes > 0 and result.p_no > 0 and result.m is not None
    with_image, again, prior, bigger = results
    assert prior.prompt_tokens < with_image.prompt_tokens, "the image is not in the prompt"
    assert bigger.prompt_tokens >= with_image.prompt_tokens
    assert labels.yes and labels.no
    return {
        "labels": sorted({*labels.yes.values(), *labels.no.values()}),
        "prompt_tokens": with_image.prompt_tokens,
        "image_tokens": with_image.prompt_tokens - prior.prompt_tokens,
        "image_tokens_448": bigger.prompt_tokens - prior.prompt_tokens,
        "cached_tokens_second_statement": again.cached_tokens,
        "p": [[r.p_yes, r.p_no] for r in results],
        # Greedy text without an image: the same on every back end (with one, random
        # weights amplify Gemma 3's image-attention difference into another text).
        "summary": generations[1].text,
    }


def relative_difference(a: dict[str, Any], b: dict[str, Any]) -> float:
    """The largest |P_a - P_b| / max(P_a, P_b) over both labels of every query."""
    return max(
        abs(x - y) / max(x, y)
        for pair_a, pair_b in zip(a["p"], b["p"], strict=True)
        for x, y in zip(pair_a, pair_b, strict=True)
    )


def hf_plumbing(family: str) -> dict[str, Any]:
    """transformers' numbers for the family (from its matrix test, or computed now)."""
    from judge.models.registry import load_backend

    if family not in HF:
        HF[family] = yes_no_plumbing(load_backend("hf", model=str(build_family(family))))
    return HF[family]


def quirks(family: str) -> Any:
    """The family's entry in judge's table of family differences (judge.models.family)."""
    from judge.models.family import family_of as family_table

    return family_table(family_of(family).model_type)


def flat(text: str) -> str:
    """Text without line breaks and table borders, to find a message rich wrapped."""
    return " ".join(text.replace("│", " ").split())


# -- transformers ----------------------------------------------------------------------

HF: dict[str, dict[str, Any]] = {}  # the transformers numbers, for the server's comparison


@pytest.fixture(scope="module", params=FAMILY_NAMES)
def family(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def test_transformers(family: str, tmp_path: Path) -> None:
    started = time.monotonic()
    code, out, err = cli("doctor", "--model", f"tiny-{family}", "--backend", "hf")
    assert code == 0, out + err
    code, out, err = cli(*judge_run_args(family, ["--backend", "hf"], tmp_path / "s.sqlite3"))
    assert code in (0, 1), out + err
    counts = check_verdicts(json.loads(out), family)
    HF.pop(family, None)
    plumbing = hf_plumbing(family)
    record(family, "hf", "works", seconds=round(time.monotonic() - started, 1), **counts,
           **kept(plumbing))


def kept(plumbing: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in plumbing.items() if k not in ("p", "summary")}


# -- the vLLM server -------------------------------------------------------------------


class Servers:
    """One vLLM server per family, the next family's started in the background while the
    current family's tests run (2 cores: a server start is mostly one busy thread)."""

    def __init__(self, folder: Path, order: list[str]) -> None:
        self.folder, self.order = folder, order
        self.starting: dict[str, concurrent.futures.Future[Any]] = {}
        self.pool = concurrent.futures.ThreadPoolExecutor(max_workers=1)

    def _start(self, family: str) -> Any:
        from judge.bench.server import cpu_server_args, start_vllm_server

        started = time.monotonic()
        server = start_vllm_server(
            build_family(family), served_model_name=f"tiny-{family}",
            args=cpu_server_args(max_num_seqs=4), log_path=self.folder / f"{family}.log",
            timeout=600,
        )
        server.ready_seconds = round(time.monotonic() - started, 1)
        return server

    def start(self, family: str) -> None:
        if family not in self.starting:
            self.starting[family] = self.pool.submit(self._start, family)

    def get(self, family: str) -> Any:
        self.start(family)
        following = self.order.index(family) + 1 if family in self.order else len(self.order)
        if following < len(self.order):
            self.start(self.order[following])
        return self.starting[family].result()

    def stop(self, family: str) -> None:
        future = self.starting.get(family)
        if future is not None and future.done() and future.exception() is None:
            future.result().stop()

    def close(self) -> None:
        self.pool.shutdown(wait=True)
        for family in self.starting:
            self.stop(family)


def selected(request: pytest.FixtureRequest, test: str) -> list[str]:
    """The parameters of `test` that this session runs (none when -k leaves it out)."""
    return [item.name.split("[", 1)[1].rstrip("]") for item in request.session.items
            if item.name.startswith(test + "[")]


@pytest.fixture(scope="module", autouse=True)
def servers(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Servers]:
    # The first server starts while the first family is tested with transformers.
    order = selected(request, "test_vllm_server")
    pool = Servers(tmp_path_factory.mktemp("vllm-servers"), order)
    if order:
        pool.start(order[0])
    try:
        yield pool
    finally:
        pool.close()


@pytest.fixture(scope="module")
def family_server(family: str, servers: Servers) -> Iterator[Any]:
    try:
        yield servers.get(family)
    finally:
        servers.stop(family)


def test_vllm_server(family: str, family_server: Any, tmp_path: Path) -> None:
    from judge.models.registry import load_backend

    url = family_server.url
    code, out, err = cli("doctor", "--server", url)
    assert code == 0, out + err
    code, out, err = cli(*judge_run_args(family, ["--server", url], tmp_path / "s.sqlite3"))
    assert code in (0, 1), out + err
    counts = check_verdicts(json.loads(out), family)
    plumbing = yes_no_plumbing(load_backend("vllm-server", server=url))
    # The second statement about the same image reuses its prefix: instructions + image.
    assert plumbing["cached_tokens_second_statement"] >= plumbing["image_tokens"] // 2, plumbing
    hf = hf_plumbing(family)
    # The same prompt, token for token in number, and the same label probabilities.
    assert plumbing["prompt_tokens"] == hf["prompt_tokens"], (plumbing, hf)
    assert plumbing["image_tokens_448"] == hf["image_tokens_448"], (plumbing, hf)
    difference = relative_difference(plumbing, hf)
    assert difference <= TOLERANCE.get(family, DEFAULT_TOLERANCE), difference
    assert plumbing["summary"] == hf["summary"]  # the same grammar, the same greedy text
    note = None
    for limit in quirks(family).limits_for("vllm-server", "cpu"):
        # A known limit: judging what triggers it must end with its reason and exit 3,
        # never a traceback or an undecided run that looks like success.
        trigger = tmp_path / "small.png"
        Image.open(IMAGES[0]).convert("RGB").resize((96, 80)).save(trigger)
        code, out, err = cli(
            str(trigger), "--constitution", str(POLICY), "--model", f"tiny-{family}",
            "--server", url, "--json", "--store", str(tmp_path / "t.sqlite3"),
        )
        assert code == 3 and "Traceback" not in err, (code, out[-2000:], err[-2000:])
        assert flat(limit.reason) in flat(out + err), (out[-2000:], err[-2000:])
        note = limit.describe()
    record(
        family, "vllm-server", "works", note,
        ready_seconds=family_server.ready_seconds, max_p_difference=difference, **counts,
        **kept(plumbing),
    )


# -- vLLM in process -------------------------------------------------------------------


def in_process_job(family: str, folder: Path) -> tuple[subprocess.CompletedProcess[str], Path]:
    """Run tests/_family_in_process.py for `family` (vLLM's engine starts workers: a
    process of its own); returns the process and its JSON file."""
    from judge.bench.server import server_env

    build_family(family)
    out = folder / f"{family}.json"
    script = Path(__file__).with_name("_family_in_process.py")
    done = subprocess.run(
        [sys.executable, str(script), family, str(folder / f"{family}.sqlite3"), str(out)],
        capture_output=True, text=True, timeout=900, cwd=ROOT, env=server_env(),
    )
    return done, out


@pytest.fixture(scope="module", autouse=True)
def in_process_jobs(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, concurrent.futures.Future[Any]]]:
    """The in-process jobs, started at once, one after another, beside the other tests
    (they mostly wait on servers and processes: the second core is free)."""
    folder = tmp_path_factory.mktemp("vllm-in-process")
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=1)
    jobs = {f: pool.submit(in_process_job, f, folder)
            for f in selected(request, "test_vllm_in_process")}
    try:
        yield jobs
    finally:
        pool.shutdown(wait=True)


@pytest.mark.parametrize("name", IN_PROCESS_FAMILIES)
def test_vllm_in_process(
    name: str, in_process_jobs: dict[str, concurrent.futures.Future[Any]]
) -> None:
    """The doctor's checks, a whole run and the plumbing on one in-process vLLM engine
    (tests/_family_in_process.py)."""
    done, out = in_process_jobs[name].result()
    assert done.returncode == 0, done.stderr[-3000:]
    seen = json.loads(out.read_text())
    assert seen["doctor"] and all(ok for _, ok, _ in seen["doctor"]), seen["doctor"]
    counts = check_verdicts(seen["run"], name)
    plumbing, hf = seen["plumbing"], hf_plumbing(name)
    assert plumbing["prompt_tokens"] == hf["prompt_tokens"], (plumbing, hf)
    difference = relative_difference(plumbing, hf)
    assert difference <= TOLERANCE.get(name, DEFAULT_TOLERANCE), difference
    assert plumbing["summary"] == hf["summary"]
    record(name, "vllm", "works", seconds=seen["seconds"], max_p_difference=difference,
           **counts, **kept(plumbing))
