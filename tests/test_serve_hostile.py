"""`judge serve` under a hostile review (issue 24, items 1 and 5 to 10): an empty rule
subset, OpenAI's own category fields, pixels hidden past the header, work that outlives
its request, inputs that used to give a 500, remote images, roles and exposure.

Every test runs the service on a real uvicorn on 127.0.0.1 over the colour-reading back
end (judge.serve.load.ColourBackend), as tests/test_serve.py does; the hostile-body fuzz
run is in tests/test_serve_fuzz.py.
"""

from __future__ import annotations

import asyncio
import base64
import gzip
import shutil
import socket
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import httpx
import pytest

from judge.resources import data_dir
from judge.serve import Limits, RemoteImages
from judge.serve.load import ColourBackend
from tests.test_images import gif_bigger_than_its_screen, jpeg_with_two_sizes, tiff_claiming
from tests.test_serve import OTHER, TOKEN, Running, part, png, start

JSON = {"Content-Type": "application/json"}


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def code(response: httpx.Response) -> tuple[int, str]:
    return response.status_code, response.json()["error"]["code"]


def wait_for(condition: Callable[[], bool], what: str, limit: float = 60.0) -> None:
    """Poll until `condition` holds. The limit only ends a test that has already failed;
    nothing here asserts how fast anything happens."""
    deadline = time.monotonic() + limit
    while not condition():
        assert time.monotonic() < deadline, f"never happened: {what}"
        time.sleep(0.01)


@pytest.fixture(scope="module")
def policy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("policy")
    for name in ("toy.yaml", "toy.lock.yaml"):
        shutil.copy(data_dir("constitutions") / name, folder / name)
    return folder / "toy.yaml"


@pytest.fixture(scope="module")
def served(policy: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    running = start(policy, tmp_path_factory.mktemp("served"),
                    limits=Limits(max_images=4, max_pixels=1_000_000, max_body_bytes=2_000_000))
    yield running
    running.server.stop()


# ---- 1. an empty rule subset -----------------------------------------------------------------


def test_an_empty_rule_subset_is_refused_not_safe(served: Running) -> None:
    blue = png("blue")  # violates blue-anywhere
    as_json = served.post("/v1/judge", json={"images": [{"data": b64(blue)}], "rules": []})
    as_form = served.post("/v1/judge", files=[("image", ("a.png", blue, "image/png"))],
                          data={"rules": ","})
    for response in (as_json, as_form):
        assert code(response) == (422, "empty_rules"), response.text
        error = response.json()["error"]
        assert error["param"] == "rules" and "nothing would be judged" in error["message"]
    # A subset that names a rule still works.
    named = served.post("/v1/judge", json={"images": [{"data": b64(blue)}],
                                           "rules": ["blue-anywhere"]})
    assert named.status_code == 200 and named.json()["verdicts"][0]["outcome"] == "unsafe"


# ---- 5. OpenAI's category fields -------------------------------------------------------------


@pytest.fixture(scope="module")
def categorised(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The toy policy with OpenAI categories: blue-anywhere is "violence", red-and-yellow
    "sexual", green-and-yellow (never violated) "hate"; the others keep theirs."""
    from judge.constitution import Constitution

    folder = tmp_path_factory.mktemp("categorised")
    source = (data_dir("constitutions") / "toy.yaml").read_text()
    source = source.replace("category: single-object", "category: violence")
    source = source.replace("category: colour-mix", "category: Sexual", 1)  # red-and-yellow
    source = source.replace("category: never-violated", "category: hate")
    (folder / "toy.yaml").write_text(source)
    constitution = Constitution.load(folder / "toy.yaml")
    constitution.compile(None)  # hand-written chains: no model
    constitution.save_lock()
    return folder / "toy.yaml"


def test_the_openai_client_reads_its_own_categories(categorised: Path, tmp_path: Path) -> None:
    import openai

    running = start(categorised, tmp_path)
    try:
        client = openai.OpenAI(base_url=running.url + "/v1", api_key=TOKEN, max_retries=0)
        blue, red_yellow, green = client.moderations.create(
            model="omni-moderation-latest",
            input=[part(png("blue")), part(png("red", "yellow")), part(png("green"))],
        ).results
        assert blue.categories.violence is True and blue.categories.sexual is False
        assert blue.category_scores.violence == pytest.approx(0.95)
        assert red_yellow.categories.violence is False and red_yellow.categories.sexual is True
        assert red_yellow.category_scores.violence == pytest.approx(0.05)
        assert green.flagged is False
        assert not any([green.categories.violence, green.categories.sexual,
                        green.categories.hate])
        # Categories no rule names are absent: the client reads None, never False.
        for result in (blue, red_yellow, green):
            assert result.categories.self_harm is None
            assert result.categories.harassment is None
            assert result.category_scores.self_harm is None
            # The rule-id keys stay.
            assert (result.categories.model_extra or {}).keys() >= {"blue-anywhere",
                                                                    "red-and-yellow"}
        assert (blue.categories.model_extra or {})["blue-anywhere"] is True
        # An undecided rule counts like `flagged`: true under fail-closed.
        running.backend.down = True
        down = client.moderations.create(model="x", input=[part(png("green"))]).results[0]
        assert down.flagged is True
        assert down.categories.violence is True and down.categories.hate is True
        assert down.categories.self_harm is None
    finally:
        running.server.stop()


def test_an_undecided_category_is_false_only_when_failing_open() -> None:
    from judge.serve.moderation import moderation_result
    from judge.serve.service import all_undecided

    verdict = all_undecided("x", "0" * 64, ["a", "b"], "timed out")
    categories = {"a": "violence", "b": "not-an-openai-category"}
    for fail_closed in (True, False):
        result = moderation_result(verdict, fail_closed=fail_closed, explain=False,
                                   decision_id="d", lock_hash="h", rule_categories=categories)
        assert result["categories"]["violence"] is fail_closed
        assert result["category_scores"]["violence"] == (1.0 if fail_closed else 0.0)
        assert "not-an-openai-category" not in result["categories"]


# ---- 6. pixels past the header ---------------------------------------------------------------


HIDDEN = {
    "gif_frame_3000_over_a_1x1_screen": lambda: gif_bigger_than_its_screen((3000, 3000)),
    "gif_8000_frame_48kb": lambda: gif_bigger_than_its_screen((8000, 8000)),
    "jpeg_second_size_marker": lambda: jpeg_with_two_sizes((3000, 3000)),
    "tiff_20000x20000": lambda: tiff_claiming(20_000, 20_000),
}


@pytest.mark.parametrize("name", sorted(HIDDEN))
def test_hidden_pixels_are_413_too_many_pixels(served: Running, name: str) -> None:
    data = HIDDEN[name]()
    assert len(data) < 60_000  # small on disk
    for response in (
        served.post("/v1/moderations", json={"input": [part(data)]}),
        served.post("/v1/judge", files=[("image", ("x", data, "application/octet-stream"))]),
    ):
        assert code(response) == (413, "too_many_pixels"), response.text
        message = response.json()["error"]["message"]
        assert "over the limit of 1,000,000" in message
        assert "decompression bomb DOS" not in message  # Pillow's own words never leak


# ---- 7. work stops when a request is over ----------------------------------------------------


class ThreadBackend(ColourBackend):
    """Answers only after a worker thread returns, and the thread waits for `release`:
    the stand-in for work done in a thread (a decode, a relevance scan), which a
    cancelled coroutine cannot stop."""

    def __init__(self) -> None:
        super().__init__()
        self.release = threading.Event()
        self.threads = 0

    async def yes_no(self, queries: Sequence[Any]) -> Any:
        def work() -> None:
            self.threads += 1
            self.release.wait(120)

        await asyncio.to_thread(work)
        return await super().yes_no(queries)


def test_a_timed_out_request_holds_its_slot_until_its_threads_end(
    policy: Path, tmp_path: Path
) -> None:
    backend = ThreadBackend()
    running = start(policy, tmp_path, backend=backend, limits=Limits(
        max_concurrent=1, max_queue=4, request_timeout_s=0.3))
    admission = running.service.admission
    try:
        first = running.post("/v1/moderations", json={"input": [part(png("blue"))]})
        result = first.json()["results"][0]
        assert "timed out" in result["judge"]["rules"][0]["reason"]
        # Answered, but its threads (the prior and the first pass) still run: the slot is
        # still taken.
        started = backend.threads
        assert started >= 1 and admission.running == 1
        second: list[httpx.Response] = []
        thread = threading.Thread(target=lambda: second.append(running.post(
            "/v1/moderations", json={"input": [part(png("blue"))]})))
        thread.start()
        # The next request waits for the slot, rather than running beside the thread.
        wait_for(lambda: admission.waiting == 1 or bool(second), "the second request queued")
        assert not second and backend.threads == started
        backend.release.set()
        thread.join()
        assert second[0].status_code == 200
        wait_for(lambda: admission.running == 0, "every slot given back")
    finally:
        backend.release.set()
        running.server.stop()


def test_an_in_process_model_computes_nothing_for_a_caller_that_gave_up() -> None:
    """In-process back ends batch their callers' queries in one worker thread: a query
    whose request timed out (its future cancelled) is dropped, not computed."""
    from judge.models._batch import Coalescer

    release = threading.Event()
    computed: list[list[int]] = []

    def run(items: list[int]) -> list[int]:
        computed.append(list(items))
        release.wait(60)
        return items

    async def scenario() -> None:
        coalescer: Coalescer[int, int] = Coalescer(run, max_batch=1)
        first = asyncio.ensure_future(coalescer.submit([1]))  # computed at once, held
        while not computed:
            await asyncio.sleep(0.01)
        late = asyncio.ensure_future(coalescer.submit([2]))  # waits for the next batch
        await asyncio.sleep(0)
        late.cancel()  # its request timed out
        release.set()
        assert await first == [1]
        while coalescer._running:
            await asyncio.sleep(0.01)

    asyncio.run(scenario())
    assert computed == [[1]]


def test_the_body_is_read_inside_the_slot(policy: Path, tmp_path: Path) -> None:
    """A full service refuses with 429 before it reads (and parses) a body."""
    backend = ThreadBackend()
    running = start(policy, tmp_path, backend=backend, limits=Limits(
        max_concurrent=1, max_queue=0, request_timeout_s=30))
    try:
        busy = threading.Thread(target=lambda: running.post(
            "/v1/moderations", json={"input": [part(png("blue"))]}))
        busy.start()
        wait_for(lambda: backend.threads >= 1, "the first request judging")
        for path in ("/v1/moderations", "/v1/judge"):
            refused = running.post(path, content=b"{not json", headers=JSON)
            assert code(refused) == (429, "queue_full"), refused.text
        backend.release.set()
        busy.join()
    finally:
        backend.release.set()
        running.server.stop()


# ---- 8. no 500 from any input ----------------------------------------------------------------


def test_deeply_nested_json_is_400(served: Running) -> None:
    for path in ("/v1/moderations", "/v1/judge"):
        for depth in (10_000, 100_000):
            for body in ("[" * depth + "]" * depth, '{"a":' * depth + "1" + "}" * depth):
                response = served.post(path, content=body.encode(), headers=JSON)
                assert code(response) == (400, "bad_request"), (path, depth, response.text)


@pytest.mark.parametrize("url", [
    "http://allowed.test\t/a.png",
    "http://allowed.test/a\x00.png",
    "http://allowed.test:80:80/a.png",
    "http://allowed.test:99999/a.png",
    "http://[::1/a.png",
    "http://user:pw@allowed.test/a.png",
    "http:///a.png",
])
def test_malformed_remote_urls_are_400(remote_service: Running, url: str) -> None:
    response = remote_service.post("/v1/moderations", json={"input": [
        {"type": "image_url", "image_url": {"url": url}}]})
    assert code(response) == (400, "bad_url"), response.text
    native = remote_service.post("/v1/judge", json={"images": [{"url": url}]})
    assert code(native) == (400, "bad_url"), native.text


@pytest.fixture(scope="module")
def remote_service(policy: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    running = start(policy, tmp_path_factory.mktemp("remote"), remote=RemoteImages(
        allow_hosts=("allowed.test",), timeout_s=2))
    yield running
    running.server.stop()


# ---- 9. remote images ------------------------------------------------------------------------


class _Images(BaseHTTPRequestHandler):
    files: ClassVar[dict[str, bytes]] = {}
    seen: ClassVar[list[dict[str, str]]] = []
    hold: ClassVar[threading.Event | None] = None
    arrived: ClassVar[threading.Event] = threading.Event()

    def log_message(self, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        type(self).seen.append({k.lower(): v for k, v in self.headers.items()})
        type(self).arrived.set()
        if type(self).hold is not None:
            type(self).hold.wait(60)
        data = self.files.get(self.path)
        if self.path == "/gzip.png":
            data = gzip.compress(b"\0" * 5_000_000)
            self.send_response(200)
            self.send_header("Content-Encoding", "gzip")
        else:
            self.send_response(200 if data else 404)
        self.send_header("Content-Length", str(len(data or b"")))
        self.end_headers()
        self.wfile.write(data or b"")


@pytest.fixture
def images_server() -> Iterator[tuple[str, int]]:
    _Images.files = {"/blue.png": png("blue")}
    _Images.seen = []
    _Images.hold = None
    _Images.arrived = threading.Event()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Images)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        yield "127.0.0.1", int(httpd.server_address[1])
    finally:
        if _Images.hold is not None:
            _Images.hold.set()
        httpd.shutdown()


def _remote(url: str) -> dict[str, Any]:
    return {"input": [{"type": "image_url", "image_url": {"url": url}}]}


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_private_addresses_are_refused_unless_allowed(
    policy: Path, tmp_path: Path, images_server: tuple[str, int]
) -> None:
    _, port = images_server
    remote = RemoteImages(allow_hosts=("127.0.0.1", "localhost"), allow_ports=(port,),
                          timeout_s=2)
    running = start(policy, tmp_path, remote=remote)
    try:
        for name in ("127.0.0.1", "localhost"):
            refused = running.post("/v1/moderations", json=_remote(
                f"http://{name}:{port}/blue.png"))
            assert code(refused) == (422, "fetch_failed"), refused.text
        assert _Images.seen == []  # never connected
    finally:
        running.server.stop()
    from dataclasses import replace

    running = start(policy, tmp_path, remote=replace(remote, allow_private=True))
    try:
        ok = running.post("/v1/moderations", json=_remote(f"http://localhost:{port}/blue.png"))
        assert ok.status_code == 200, ok.text
        assert ok.json()["results"][0]["categories"]["blue-anywhere"] is True
        # Asked for no content encoding; the URL's host name in the Host header.
        assert _Images.seen[-1]["accept-encoding"] == "identity"
        assert _Images.seen[-1]["host"] == f"localhost:{port}"
    finally:
        running.server.stop()


def test_one_uniform_error_whatever_failed(
    policy: Path, tmp_path: Path, images_server: tuple[str, int]
) -> None:
    _, port = images_server
    closed = _closed_port()
    running = start(policy, tmp_path, remote=RemoteImages(
        allow_hosts=("127.0.0.1", "nothing.invalid"), allow_ports=(port, closed),
        allow_private=True, timeout_s=2, max_bytes=100_000))
    try:
        answers = {
            what: running.post("/v1/moderations", json=_remote(url)).json()["error"]
            for what, url in {
                "no such host": f"http://nothing.invalid:{port}/blue.png",
                "nothing listens": f"http://127.0.0.1:{closed}/blue.png",
                "not found": f"http://127.0.0.1:{port}/missing.png",
                "compressed anyway": f"http://127.0.0.1:{port}/gzip.png",
            }.items()
        }
        assert {(a["code"], a["message"]) for a in answers.values()} == {
            ("fetch_failed", "input[0]: the image could not be fetched from this URL (the "
             "service's log says why)")}, answers
        # Ports other than those allowed are refused before any connection.
        other = running.post("/v1/moderations", json=_remote("http://127.0.0.1:8/x.png"))
        assert code(other) == (400, "port_not_allowed")
    finally:
        running.server.stop()


def test_only_ports_80_and_443_by_default(
    policy: Path, tmp_path: Path, images_server: tuple[str, int]
) -> None:
    host, port = images_server
    running = start(policy, tmp_path, remote=RemoteImages(
        allow_hosts=("127.0.0.1",), allow_private=True, timeout_s=2))
    try:
        refused = running.post("/v1/moderations", json=_remote(f"http://{host}:{port}/blue.png"))
        assert code(refused) == (400, "port_not_allowed"), refused.text
        assert "80, 443" in refused.json()["error"]["message"]
        assert _Images.seen == []
    finally:
        running.server.stop()


def test_the_name_is_resolved_once_and_that_address_is_used(
    policy: Path, tmp_path: Path, images_server: tuple[str, int],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """DNS rebinding: the name answers 127.0.0.1 once, then an address where nothing
    listens. The fetch connects to the first (checked) answer and asks no more."""
    _, port = images_server
    real = socket.getaddrinfo
    asked: list[str] = []

    def getaddrinfo(name: Any, *args: Any, **kwargs: Any) -> Any:
        if name == "rebind.test":
            asked.append(name)
            answer = "127.0.0.1" if len(asked) == 1 else "127.0.0.2"
            return real(answer, *args, **kwargs)
        return real(name, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    running = start(policy, tmp_path, remote=RemoteImages(
        allow_hosts=("rebind.test",), allow_ports=(port,), allow_private=True, timeout_s=2))
    try:
        ok = running.post("/v1/moderations", json=_remote(f"http://rebind.test:{port}/blue.png"))
        assert ok.status_code == 200, ok.text
        assert asked == ["rebind.test"]
        assert _Images.seen[-1]["host"] == f"rebind.test:{port}"
    finally:
        running.server.stop()


def test_a_remote_fetch_holds_a_slot(
    policy: Path, tmp_path: Path, images_server: tuple[str, int]
) -> None:
    host, port = images_server
    _Images.hold = threading.Event()
    running = start(policy, tmp_path, limits=Limits(max_concurrent=1, max_queue=0),
                    remote=RemoteImages(allow_hosts=("127.0.0.1",), allow_ports=(port,),
                                        allow_private=True, timeout_s=30))
    try:
        fetching: list[httpx.Response] = []
        thread = threading.Thread(target=lambda: fetching.append(running.post(
            "/v1/moderations", json=_remote(f"http://{host}:{port}/blue.png"))))
        thread.start()
        assert _Images.arrived.wait(60)
        assert running.service.admission.running == 1
        busy = running.post("/v1/moderations", json={"input": [part(png())]})
        assert code(busy) == (429, "queue_full")
        _Images.hold.set()
        thread.join()
        assert fetching[0].status_code == 200
    finally:
        _Images.hold.set()
        running.server.stop()


# ---- 10. roles and exposure ------------------------------------------------------------------


def test_token_roles_are_parsed(tmp_path: Path) -> None:
    from judge.errors import InputError
    from judge.serve import load_tokens

    file = tmp_path / "tokens"
    file.write_text("ops:abcdefgh12345:admin\nci:zyxwvuts98765\nplainplainplain\n")
    tokens = load_tokens(file)
    assert [(n, tokens.role(n)) for n in tokens.names] == [
        ("ops", "admin"), ("ci", "user"), (tokens.names[2], "user")]
    assert tokens.check("abcdefgh12345") == "ops"
    assert load_tokens(None, env="a:abcdefgh1:ADMIN").role("a") == "admin"
    with pytest.raises(InputError, match="role 'root'"):
        load_tokens(None, env="a:abcdefgh1:root")


def test_only_an_admin_may_reload(served: Running) -> None:
    user = served.post("/v1/policy/reload", token=OTHER)
    assert code(user) == (403, "forbidden")
    assert user.json()["error"]["type"] == "permission_error"
    assert served.post("/v1/policy/reload", token=TOKEN).status_code == 200


def test_metrics_need_a_token_unless_opened(served: Running, policy: Path,
                                            tmp_path: Path) -> None:
    assert code(served.get("/metrics", token=None)) == (401, "unauthorized")
    assert "judge_serve_policy_info" in served.get("/metrics", token=OTHER).text
    running = start(policy, tmp_path, public_metrics=True)
    try:
        assert running.get("/metrics", token=None).status_code == 200
        assert running.get("/v1/policy", token=None).status_code == 401
    finally:
        running.server.stop()


def test_json_bodies_must_say_so(served: Running) -> None:
    import json

    body = json.dumps({"input": [part(png("blue"))]}).encode()
    for headers in ({"Content-Type": "text/plain"},
                    {"Content-Type": "application/x-www-form-urlencoded"}, {}):
        response = served.post("/v1/moderations", content=body, headers=headers)
        assert code(response) == (415, "unsupported_media_type"), headers
    native = json.dumps({"images": [{"data": b64(png("blue"))}]}).encode()
    assert code(served.post("/v1/judge", content=native)) == (415, "unsupported_media_type")
    ok = served.post("/v1/moderations", content=body,
                     headers={"Content-Type": "application/json; charset=utf-8"})
    assert ok.status_code == 200


def test_a_callers_image_id_has_its_own_column(served: Running) -> None:
    first = served.post("/v1/judge", json={"images": [{"data": b64(png("blue"))}]}).json()
    generated = f"{first['id']}/0"
    # A second caller names its image after the first request's image.
    second = served.post("/v1/judge", json={"images": [
        {"data": b64(png("green")), "id": generated}]}).json()
    assert second["verdicts"][0]["image_id"] == generated  # the answer keeps the name
    rows = {r["request_id"]: r for r in served.rows()}
    assert rows[first["id"]]["image_id"] == generated
    assert rows[first["id"]]["caller_image_id"] is None
    assert rows[second["id"]]["image_id"] == f"{second['id']}/0"
    assert rows[second["id"]]["caller_image_id"] == generated
    with sqlite3.connect(served.store) as db:
        joined = db.execute("SELECT d.outcome FROM decisions d JOIN serve_decisions s "
                            "ON d.image_id = s.image_id WHERE s.image_id = ?",
                            (generated,)).fetchall()
    assert joined == [("unsafe",)]  # only the first request's blue image


def test_the_decision_log_migrates(tmp_path: Path) -> None:
    """A store written before the caller_image_id column gains it."""
    from judge import Store
    from judge.serve.decisions import _MIGRATIONS, DecisionLog

    store = Store(tmp_path / "old.sqlite3")
    store.ensure_schema("serve", _MIGRATIONS[:1])
    DecisionLog(store)
    with sqlite3.connect(tmp_path / "old.sqlite3") as db:
        columns = [row[1] for row in db.execute("PRAGMA table_info(serve_decisions)")]
    assert "caller_image_id" in columns
    store.close()

