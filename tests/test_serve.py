"""`judge serve` on a real uvicorn on 127.0.0.1, over the colour-reading back end.

`judge.serve.load.ColourBackend` answers each toy statement ("a blue shape") from the
pixels, so every verdict here is known in advance and the tests are about the service:
the official `openai` client, tokens, limits, the queue, remote URLs, the native
endpoint, reloads, failure behaviour, metrics and the decision log. The toy VLM behind the
same service is tested in tests/test_serve_toy.py.
"""

from __future__ import annotations

import base64
import io
import json
import shutil
import sqlite3
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import httpx
import pytest
from PIL import Image, ImageDraw

from judge.resources import data_dir
from judge.serve import Limits, RemoteImages, Tokens
from judge.serve.load import COLOURS, ColourBackend, ThreadedServer, colour_service, data_url

TOKEN = "s3cret-token-alice"
OTHER = "another-token-bob1"
TOKENS = Tokens.parse([f"alice:{TOKEN}:admin", OTHER], "test")


def png(*colours: str, size: tuple[int, int] = (64, 64)) -> bytes:
    image = Image.new("RGB", size, (255, 255, 255))
    draw = ImageDraw.Draw(image)
    for i, colour in enumerate(colours):
        draw.rectangle((4 + 20 * i, 20, 18 + 20 * i, 34), fill=COLOURS[colour])
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def part(data: bytes) -> dict[str, Any]:
    return {"type": "image_url", "image_url": {"url": data_url(data)}}


# What each scene violates under constitutions/toy.yaml.
EXPECTED = {
    ("blue",): {"blue-anywhere"},
    ("red", "yellow"): {"red-and-yellow", "yellow-with-red-or-blue", "red-with-yellow-or-blue"},
    ("green",): set(),
    (): set(),
}


@pytest.fixture(scope="module")
def policy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("policy")
    for name in ("toy.yaml", "toy.lock.yaml"):
        shutil.copy(data_dir("constitutions") / name, folder / name)
    return folder / "toy.yaml"


class Running:
    def __init__(self, service: Any, server: ThreadedServer, store: Path) -> None:
        self.service, self.server, self.store = service, server, store
        self.url = server.url
        self.backend: ColourBackend = service.backend

    def post(self, path: str, token: str | None = TOKEN, **kwargs: Any) -> httpx.Response:
        headers = kwargs.pop("headers", {})
        if token:
            headers["Authorization"] = f"Bearer {token}"
        return httpx.post(self.url + path, headers=headers, timeout=60, **kwargs)

    def get(self, path: str, token: str | None = TOKEN) -> httpx.Response:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.get(self.url + path, headers=headers, timeout=60)

    def rows(self) -> list[dict[str, Any]]:
        return self.service.log.recent(1000)  # type: ignore[no-any-return]


def start(policy: Path, tmp: Path, backend: ColourBackend | None = None, **config: Any) -> Running:
    config.setdefault("tokens", TOKENS)
    store = tmp / "store.sqlite3"
    service, app = colour_service(policy, store, backend=backend, **config)
    return Running(service, ThreadedServer(app).start(), store)


@pytest.fixture(scope="module")
def served(policy: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    running = start(policy, tmp_path_factory.mktemp("served"),
                    limits=Limits(max_images=4, max_pixels=1_000_000, max_body_bytes=2_000_000))
    yield running
    running.server.stop()


# ---- the official openai client --------------------------------------------------------------


def test_the_openai_client_gets_flagged_and_categories(served: Running) -> None:
    import openai

    client = openai.OpenAI(base_url=served.url + "/v1", api_key=TOKEN, max_retries=0)
    scenes = list(EXPECTED)
    response = client.moderations.create(
        model="omni-moderation-latest", input=[part(png(*s)) for s in scenes]
    )
    assert response.id.startswith("modr-") and response.model == "omni-moderation-latest"
    assert len(response.results) == len(scenes)
    for scene, result in zip(scenes, response.results, strict=True):
        # The rule ids are fields the client's model does not declare: its model_extra
        # (model_dump() adds OpenAI's optional categories, as None).
        categories = result.categories.model_extra or {}
        scores = result.category_scores.model_extra or {}
        assert {rule for rule, on in categories.items() if on} == EXPECTED[scene], scene
        assert result.flagged is bool(EXPECTED[scene])
        assert set(scores) == set(categories) and all(0 <= v <= 1 for v in scores.values())
        assert (result.category_applied_input_types.model_extra or {})["blue-anywhere"] == ["image"]
        # The decisive precondition's M: 0.95 for a colour present, 0.05 absent.
        assert scores["blue-anywhere"] == pytest.approx(0.95 if "blue" in scene else 0.05)
        extension = result.model_extra["judge"]  # type: ignore[index]
        assert extension["outcome"] == ("unsafe" if EXPECTED[scene] else "safe")
        assert extension["rules"][0]["preconditions"], "evidence by default"


def test_text_input_is_a_clear_400(served: Running) -> None:
    import openai

    client = openai.OpenAI(base_url=served.url + "/v1", api_key=TOKEN, max_retries=0)
    with pytest.raises(openai.BadRequestError) as caught:
        client.moderations.create(model="x", input="is this text bad?")
    assert "text input is not supported" in str(caught.value)
    response = served.post("/v1/moderations", json={"input": [
        {"type": "text", "text": "hello"}, part(png("blue"))]})
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "text_input"
    assert response.json()["error"]["param"] == "input[0]"


# ---- authentication --------------------------------------------------------------------------


def test_tokens(served: Running) -> None:
    import openai

    body = {"input": [part(png("blue"))]}
    assert served.post("/v1/moderations", token=None, json=body).status_code == 401
    wrong = served.post("/v1/moderations", token="not-a-token-at-all", json=body)
    assert wrong.status_code == 401 and wrong.headers["www-authenticate"] == "Bearer"
    assert wrong.json()["error"]["type"] == "authentication_error"
    assert served.get("/v1/policy", token=None).status_code == 401
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=served.url + "/v1", api_key="wrong-token", max_retries=0
                      ).moderations.create(model="x", input=[part(png())])
    # Open paths need none (/metrics does: tests/test_serve_hostile.py).
    for path in ("/healthz", "/openapi.json", "/readyz"):
        assert served.get(path, token=None).status_code == 200, path
    # Readiness details (paths, URLs) only with a token.
    assert "found" not in served.get("/readyz", token=None).json()["checks"][0]
    assert "found" in served.get("/readyz").json()["checks"][0]
    # The audit log names the token, never shows it.
    first = served.post("/v1/moderations", token=TOKEN, json=body).json()["id"]
    second = served.post("/v1/moderations", token=OTHER, json=body).json()["id"]
    names = {r["request_id"]: r["token_name"] for r in served.rows()}
    assert names[first] == "alice"
    assert names[second].startswith("token-") and OTHER not in names[second]
    for path in served.store.parent.iterdir():
        assert TOKEN.encode() not in path.read_bytes() and OTHER.encode() not in path.read_bytes()


def test_token_sources(tmp_path: Path) -> None:
    from judge.errors import InputError
    from judge.serve import load_tokens

    file = tmp_path / "tokens"
    file.write_text("# ops\nci:abcdefgh12345\n\nplainplainplain\n")
    tokens = load_tokens(file)
    assert tokens.check("abcdefgh12345") == "ci"
    assert tokens.check("plainplainplain", ).startswith("token-")  # type: ignore[union-attr]
    assert tokens.check("abcdefgh1234") is None and tokens.check(None) is None
    assert "abcdefgh" not in repr(tokens)
    assert load_tokens(None, env="a:abcdefgh1,b:zyxwvuts2").names == ["a", "b"]
    assert not load_tokens(None, env="").enabled
    with pytest.raises(InputError, match="shorter than 8"):
        load_tokens(None, env="short")
    with pytest.raises(InputError, match="used twice"):
        load_tokens(None, env="a:abcdefgh1,a:abcdefgh2")


def test_a_reload_rereads_the_tokens_file(policy: Path, tmp_path: Path) -> None:
    from judge.serve import load_tokens

    file = tmp_path / "tokens"
    file.write_text(f"ops:{TOKEN}:admin\n")
    running = start(policy, tmp_path, tokens=load_tokens(file), tokens_file=file)
    try:
        file.write_text(f"ops:{OTHER}:admin\n")
        reloaded = running.post("/v1/policy/reload", token=TOKEN)
        assert reloaded.status_code == 200 and "1 token(s) read" in reloaded.json()["message"]
        assert running.get("/v1/policy", token=TOKEN).status_code == 401
        assert running.get("/v1/policy", token=OTHER).status_code == 200
        file.write_text("short\n")  # refused: the tokens stay as they were
        kept = running.post("/v1/policy/reload", token=OTHER)
        assert "tokens kept as they were" in kept.json()["message"]
        assert running.get("/v1/policy", token=OTHER).status_code == 200
    finally:
        running.server.stop()


# ---- limits ----------------------------------------------------------------------------------


def _huge_png_header() -> bytes:
    """A PNG whose header claims 50,000 x 50,000 pixels (a decompression bomb)."""
    data = bytearray(png())
    data[16:24] = (50_000).to_bytes(4, "big") * 2
    return bytes(data)


def test_limits(served: Running) -> None:
    def error(response: httpx.Response) -> tuple[int, str]:
        return response.status_code, response.json()["error"]["code"]

    too_many = {"input": [part(png("blue"))] * 5}
    assert error(served.post("/v1/moderations", json=too_many)) == (413, "too_many_images")
    bomb = {"input": [part(_huge_png_header())]}
    status, code = error(served.post("/v1/moderations", json=bomb))
    assert (status, code) == (413, "too_many_pixels")
    big = {"input": [{"type": "image_url", "image_url": {"url": "data:image/png;base64,"
                                                         + "A" * 2_100_000}}]}
    assert error(served.post("/v1/moderations", json=big)) == (413, "body_too_large")
    # A chunked body has no Content-Length: it is counted as it arrives.
    chunks = (b'{"input": "' + b"A" * 100_000 for _ in range(30))
    json_type = {"Content-Type": "application/json"}
    assert error(served.post("/v1/moderations", content=chunks, headers=json_type))[0] == 413
    not_b64 = {"input": [{"type": "image_url", "image_url": {"url": "data:image/png;base64,@@@"}}]}
    assert error(served.post("/v1/moderations", json=not_b64)) == (422, "bad_image")
    not_image = {"input": [part(b"<html>hello</html>")]}
    response = served.post("/v1/moderations", json=not_image)
    assert error(response) == (422, "bad_image") and "HTML" in response.json()["error"]["message"]
    truncated = {"input": [part(png("blue")[:60])]}
    assert error(served.post("/v1/moderations", json=truncated)) == (422, "bad_image")
    assert error(served.post("/v1/moderations", content=b"{nope", headers=json_type)) == (
        400, "bad_request")
    assert error(served.post("/v1/moderations", json={"inputs": []}))[0] == 400


def test_a_full_queue_answers_429_with_retry_after(policy: Path, tmp_path: Path) -> None:
    running = start(policy, tmp_path, backend=ColourBackend(delay=1.0),
                    limits=Limits(max_concurrent=1, max_queue=1, retry_after_s=3))
    try:
        body = {"input": [part(png("blue"))]}
        answers: list[httpx.Response] = []

        def call() -> None:
            answers.append(running.post("/v1/moderations", json=body))

        threads = [threading.Thread(target=call) for _ in range(4)]
        for thread in threads:
            thread.start()
            time.sleep(0.05)
        for thread in threads:
            thread.join()
        codes = sorted(a.status_code for a in answers)
        assert codes == [200, 200, 429, 429], codes
        refused = next(a for a in answers if a.status_code == 429)
        assert refused.headers["retry-after"] == "3"
        assert refused.json()["error"]["code"] == "queue_full"
        assert 'judge_serve_rejected_total{reason="queue_full"} 2.0' in running.get(
            "/metrics").text
    finally:
        running.server.stop()


# ---- remote URLs -----------------------------------------------------------------------------


class _Images(BaseHTTPRequestHandler):
    files: ClassVar[dict[str, bytes]] = {}

    def log_message(self, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        if self.path == "/redirect":
            self.send_response(302)
            self.send_header("Location", "/blue.png")
            self.end_headers()
            return
        data = self.files.get(self.path)
        self.send_response(200 if data else 404)
        self.send_header("Content-Length", str(len(data or b"")))
        self.end_headers()
        self.wfile.write(data or b"")


def test_remote_urls_are_off_unless_allowed(served: Running, policy: Path,
                                            tmp_path: Path) -> None:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Images)
    _Images.files = {"/blue.png": png("blue"), "/big.png": png("blue") + bytes(200_000)}
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{httpd.server_address[1]}"

    def remote(url: str) -> dict[str, Any]:
        return {"input": [{"type": "image_url", "image_url": {"url": url}}]}

    try:
        off = served.post("/v1/moderations", json=remote(base + "/blue.png"))
        assert off.status_code == 400 and off.json()["error"]["code"] == "remote_urls_off"
        running = start(policy, tmp_path, remote=RemoteImages(
            allow_hosts=("127.0.0.1",), timeout_s=2, max_bytes=100_000,
            allow_ports=(httpd.server_address[1],), allow_private=True))
        try:
            ok = running.post("/v1/moderations", json=remote(base + "/blue.png"))
            assert ok.status_code == 200, ok.text
            assert ok.json()["results"][0]["categories"]["blue-anywhere"] is True
            big = running.post("/v1/moderations", json=remote(base + "/big.png"))
            assert big.status_code == 413
            moved = running.post("/v1/moderations", json=remote(base + "/redirect"))
            assert moved.status_code == 422 and moved.json()["error"]["code"] == "fetch_failed"
            other = running.post("/v1/moderations",
                                 json=remote(f"http://localhost:{httpd.server_address[1]}/b"))
            assert other.status_code == 400
            assert other.json()["error"]["code"] == "host_not_allowed"
            ftp = running.post("/v1/moderations", json=remote("file:///etc/passwd"))
            assert ftp.status_code == 400
        finally:
            running.server.stop()
    finally:
        httpd.shutdown()


# ---- the native endpoint ---------------------------------------------------------------------


def test_native_json_and_multipart(served: Running) -> None:
    blue, mixed = png("blue"), png("red", "yellow")
    body = {"images": [{"data": base64.b64encode(blue).decode(), "id": "blue.png"},
                       {"url": data_url(mixed)}], "explain": True}
    answer = served.post("/v1/judge", json=body).json()
    first, second = answer["verdicts"]
    assert first["image_id"] == "blue.png" and first["violated"] == ["blue-anywhere"]
    assert set(second["violated"]) == EXPECTED[("red", "yellow")]
    assert answer["flagged"] == [True, True] and answer["summary"]["unsafe"] == 2
    assert first["rules"][0]["preconditions"], "explain keeps the evidence"
    from judge import Verdict

    Verdict.model_validate(first)  # the same JSON as `judge --json`
    files = [("image", ("a.png", blue, "image/png")), ("image", ("b.png", png(), "image/png"))]
    answer = served.post("/v1/judge", files=files,
                         data={"rules": "blue-anywhere,red-and-yellow"}).json()
    a, b = answer["verdicts"]
    assert (a["image_id"], a["outcome"], b["outcome"]) == ("a.png", "unsafe", "safe")
    assert [r["rule_id"] for r in a["rules"]] == ["blue-anywhere", "red-and-yellow"]
    assert a["rules"][0]["preconditions"] == [], "no evidence without explain"
    subset = served.post("/v1/judge", json={"images": [{"data": base64.b64encode(
        mixed).decode()}], "rules": ["blue-anywhere"]}).json()
    assert subset["verdicts"][0]["outcome"] == "safe"
    unknown = served.post("/v1/judge", json={"images": [{"data": base64.b64encode(
        blue).decode()}], "rules": ["no-such-rule"]})
    assert unknown.status_code == 422 and unknown.json()["error"]["code"] == "unknown_rule"
    both = served.post("/v1/judge", json={"images": [{"data": "AAAA", "url": "data:,"}]})
    assert both.status_code == 400
    assert served.post("/v1/judge", content=b"x", headers={
        "Content-Type": "text/plain"}).status_code == 415


# ---- failure behaviour -----------------------------------------------------------------------


def test_a_model_that_is_down_is_flagged_never_safe(policy: Path, tmp_path: Path) -> None:
    backend = ColourBackend()
    running = start(policy, tmp_path, backend=backend)
    try:
        assert running.get("/readyz").status_code == 200
        backend.down = True
        running.service.ready_cache = None
        answer = running.post("/v1/moderations", json={"input": [part(png())]}).json()
        result = answer["results"][0]
        assert result["flagged"] is True and result["judge"]["outcome"] == "undecided"
        assert all(result["categories"].values())
        assert "fails closed" in result["judge"]["flagged_reason"]
        assert "model failure" in result["judge"]["rules"][0]["reason"]
        ready = running.get("/readyz")
        assert ready.status_code == 503 and not ready.json()["ready"]
        metrics = running.get("/metrics").text
        assert 'judge_serve_undecided_images_total{cause="model_failure"} 1.0' in metrics
        backend.down = False
        running.service.ready_cache = None
        assert running.get("/readyz").status_code == 200
        again = running.post("/v1/moderations", json={"input": [part(png())]}).json()
        assert again["results"][0]["flagged"] is False
    finally:
        running.server.stop()


class _Broken(ColourBackend):
    async def yes_no(self, queries: Any) -> Any:
        raise RuntimeError("a bug in a back end")


def test_an_unexpected_error_fails_closed_not_500(policy: Path, tmp_path: Path) -> None:
    running = start(policy, tmp_path, backend=_Broken())
    try:
        response = running.post("/v1/moderations", json={"input": [part(png())]})
        assert response.status_code == 200, response.text
        result = response.json()["results"][0]
        assert result["flagged"] is True and result["judge"]["outcome"] == "undecided"
        assert "internal error (RuntimeError)" in result["judge"]["rules"][0]["reason"]
        assert "a bug" not in response.text  # the detail stays in the service's log
    finally:
        running.server.stop()


def test_fail_open_and_timeouts(policy: Path, tmp_path: Path) -> None:
    running = start(policy, tmp_path, backend=ColourBackend(delay=2.0), fail_closed=False,
                    limits=Limits(request_timeout_s=0.3))
    try:
        result = running.post("/v1/moderations", json={"input": [part(png())]}).json()[
            "results"][0]
        assert result["flagged"] is False and result["judge"]["outcome"] == "undecided"
        assert "timed out" in result["judge"]["rules"][0]["reason"]
        assert "fails open" in result["judge"]["flagged_reason"]
        assert not any(result["categories"].values())
        assert set(result["judge"]["undecided"]) == set(result["categories"])
    finally:
        running.server.stop()


# ---- policy and reload -----------------------------------------------------------------------


def _rewrite(policy: Path, old: str, new: str) -> None:
    from judge.constitution import Constitution

    policy.write_text(policy.read_text().replace(old, new))
    constitution = Constitution.load(policy)
    constitution.compile(None)  # hand-written chains: no model
    constitution.save_lock()


def test_reload_swaps_atomically_and_refuses_a_bad_policy(policy: Path, tmp_path: Path) -> None:
    folder = tmp_path / "policy"
    folder.mkdir()
    for path in policy.parent.glob("toy*.yaml"):
        shutil.copy(path, folder / path.name)
    mine = folder / "toy.yaml"
    backend = ColourBackend(delay=0.6)
    running = start(mine, tmp_path, backend=backend)
    try:
        before = running.get("/v1/policy").json()
        assert "blue-anywhere" in [r["id"] for r in before["rules"]]
        old_hash = before["lock_hash"]
        # A request in flight keeps the policy it started with.
        slow: list[httpx.Response] = []
        thread = threading.Thread(target=lambda: slow.append(running.post(
            "/v1/moderations", json={"input": [part(png("blue"))]})))
        thread.start()
        deadline = time.monotonic() + 30
        while running.service.admission.running == 0:  # the request holds its policy now
            assert time.monotonic() < deadline
            time.sleep(0.01)
        _rewrite(mine, "id: blue-anywhere", "id: blue-somewhere")
        reloaded = running.post("/v1/policy/reload")
        assert reloaded.status_code == 200 and reloaded.json()["reloaded"], reloaded.text
        new_hash = reloaded.json()["lock_hash"]
        assert new_hash != old_hash
        thread.join()
        old_result = slow[0].json()["results"][0]
        assert old_result["judge"]["lock_hash"] == old_hash
        assert "blue-anywhere" in old_result["categories"]
        backend.delay = 0
        new_result = running.post("/v1/moderations", json={"input": [part(png("blue"))]}).json()
        assert new_result["results"][0]["judge"]["lock_hash"] == new_hash
        assert new_result["results"][0]["categories"]["blue-somewhere"] is True
        # A stale lock (source edited, not compiled) and a broken file are refused.
        mine.write_text(mine.read_text().replace("however small", "however tiny"))
        refused = running.post("/v1/policy/reload")
        assert refused.status_code == 422 and "compile" in refused.json()["error"]["message"]
        mine.write_text("rules: [unclosed\n")
        assert running.post("/v1/policy/reload").status_code == 422
        after = running.get("/v1/policy").json()
        assert after["lock_hash"] == new_hash and after["last_reload_error"]
        metrics = running.get("/metrics").text
        assert 'judge_serve_policy_reloads_total{result="refused"} 2.0' in metrics
    finally:
        running.server.stop()


# ---- metrics, the decision log, the schema ---------------------------------------------------


def test_metrics_and_the_decision_log(served: Running) -> None:
    answer = served.post("/v1/moderations", json={"input": [part(png("blue"))]}).json()
    metrics = served.get("/metrics").text
    for name in ("judge_serve_requests_total", "judge_serve_request_seconds_bucket",
                 "judge_serve_stage_seconds_bucket", "judge_serve_images_total",
                 "judge_serve_rule_outcomes_total", "judge_serve_model_calls_total",
                 "judge_serve_in_flight", "judge_serve_backend_prompt_tokens_total",
                 "judge_serve_policy_info"):
        assert name in metrics, name
    assert 'judge_serve_rule_outcomes_total{outcome="violated",rule="blue-anywhere"}' in metrics
    row = next(r for r in served.rows() if r["request_id"] == answer["id"])
    result = answer["results"][0]["judge"]
    assert row["image_sha256"] == result["image_sha256"]
    assert row["lock_hash"] == result["lock_hash"] and row["outcome"] == "unsafe"
    assert row["flagged"] and row["token_name"] == "alice" and "total" in row["timings"]
    assert row["has_image"] is False
    # What made the decision: the model and back end, and every prompt template's version.
    from judge import prompts

    assert (row["model_id"], row["backend"]) == (served.backend.model_id, served.backend.kind)
    assert row["prompt_versions"]["visibility_question"] == \
        prompts.versions("visibility_question")["visibility_question"]
    with sqlite3.connect(served.store) as db:
        joined = db.execute("SELECT d.outcome FROM decisions d JOIN serve_decisions s "
                            "ON d.image_id = s.image_id WHERE s.request_id = ?",
                            (answer["id"],)).fetchall()
    assert joined == [("unsafe",)]


def test_image_bytes_are_kept_only_when_asked(policy: Path, tmp_path: Path) -> None:
    running = start(policy, tmp_path, log_images=True)
    try:
        data = png("green")
        running.post("/v1/moderations", json={"input": [part(data)]})
        with sqlite3.connect(running.store) as db:
            assert db.execute("SELECT image FROM serve_decisions").fetchall() == [(data,)]
    finally:
        running.server.stop()


def test_openapi_document(served: Running) -> None:
    schema = served.get("/openapi.json", token=None).json()
    paths = schema["paths"]
    for path in ("/v1/moderations", "/v1/judge", "/v1/policy", "/v1/policy/reload",
                 "/healthz", "/readyz", "/metrics"):
        assert path in paths, path
    body = paths["/v1/judge"]["post"]["requestBody"]["content"]
    assert set(body) == {"application/json", "multipart/form-data"}
    assert "ModerationRequest" in schema["components"]["schemas"]
    json.dumps(schema)


# ---- the command ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (["--constitution", "missing.yaml"], {}, "cannot read the file"),
        (["--host", "0.0.0.0"], {}, "refusing to serve on 0.0.0.0 without tokens"),
        ([], {"JUDGE_SERVE_TOKENS": "short"}, "shorter than 8 characters"),
        (["--constitution", "unlocked.yaml"], {}, "has no lock"),
    ],
)
def test_bad_input_exits_2_before_any_model_loads(
    args: list[str], env: dict[str, str], message: str, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    from judge.cli import main

    shutil.copy(data_dir("constitutions") / "toy.yaml", tmp_path / "unlocked.yaml")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("JUDGE_SERVE_TOKENS", raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    toy = str(data_dir("constitutions") / "toy.yaml")
    argv = ["serve", "--constitution", toy, *args] if "--constitution" not in args else [
        "serve", *args]
    with pytest.raises(SystemExit) as done:
        main(argv)
    assert done.value.code == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_the_readme_examples_run(served: Running) -> None:
    """The README's Python examples for the service, against this one."""
    import os
    import re
    import subprocess
    import sys

    root = Path(__file__).resolve().parent.parent
    readme = (root / "README.md").read_text(encoding="utf-8")
    section = readme.split("## A moderation service: `judge serve`", 1)[1].split("\n## ", 1)[0]
    examples = re.findall(r"```py\n(.*?)```", section, flags=re.S)
    assert len(examples) == 2
    for code in examples:
        code = code.replace("http://127.0.0.1:8080", served.url)
        result = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True,
                                text=True, timeout=120, env={**os.environ, "TOKEN": TOKEN})
        assert result.returncode == 0, result.stderr[-2000:]
        assert result.stdout.strip(), code
