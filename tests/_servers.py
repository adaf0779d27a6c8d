"""Server fixtures: a real vLLM OpenAI server on 127.0.0.1, and a scriptable bad one.

* `vllm_server` (session): starts a vLLM OpenAI server (the CPU build) serving the toy
  VLM at a free port, waits for `/health`, and stops it by its process group at the end.
  Yields `ServedModel(url, model, log_path, model_dir)`.
* `misbehaving_server` (factory): a real HTTP server in a thread that speaks enough of
  the OpenAI/vLLM API for the judge and can be told to be slow, return 500s or broken
  JSON, drop the labels, report another model, refuse logprobs or images, or die after
  N requests. It counts requests and the most in flight at once.
* `down_url`: a URL where nothing listens.

The real server is started by `judge.bench.server` (the launcher `judge bench` uses). To
iterate on the server tests without a 1-2 minute start each run, start one yourself and set
JUDGE_TEST_VLLM_URL and JUDGE_TEST_VLLM_MODEL_DIR.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

SERVED_NAME = "toy-vlm"
START_TIMEOUT = float(os.environ.get("JUDGE_TEST_VLLM_START_TIMEOUT", "600"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# -- the real vLLM server ------------------------------------------------------------------


@dataclass
class ServedModel:
    url: str
    model: str
    log_path: Path
    model_dir: Path
    trained: bool = False  # the trained toy VLM (else an untrained tiny one)
    start_seconds: float = 0.0

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


def toy_vlm_dir(request: pytest.FixtureRequest, cache: Path) -> tuple[Path, bool]:
    """(folder, trained): the trained toy VLM when tests/_toy.py provides it, else an
    untrained tiny one."""
    try:
        toy = request.getfixturevalue("toy_models")
    except pytest.FixtureLookupError:
        toy = None
    if toy is not None:
        for name in ("vlm", "vlm_dir"):
            path = toy.get(name) if isinstance(toy, dict) else getattr(toy, name, None)
            if path is not None:
                return Path(path), True
    from judge.toy.arch import build_vlm

    target = cache / "untrained-vlm"
    if not (target / "model.safetensors").exists():
        build_vlm(target, seed=0)
    return target, False


@pytest.fixture(scope="session")
def vllm_server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServedModel]:
    from judge.bench.server import cpu_server_args, start_vllm_server
    from judge.resources import cache_dir

    reuse = os.environ.get("JUDGE_TEST_VLLM_URL")
    if reuse:
        # For development: a server already running (e.g. `judge.bench.server`),
        # with JUDGE_TEST_VLLM_MODEL_DIR naming the folder it serves.
        folder = Path(os.environ["JUDGE_TEST_VLLM_MODEL_DIR"])
        yield ServedModel(
            url=reuse.rstrip("/"),
            model=SERVED_NAME,
            log_path=Path("/dev/null"),
            model_dir=folder,
            trained="untrained" not in folder.name,
        )
        return
    model_dir, trained = toy_vlm_dir(request, cache_dir() / "test-models")
    log_path = tmp_path_factory.mktemp("vllm-server") / "server.log"
    started = time.monotonic()
    # The launcher `judge bench` uses, with fewer sequences at once (2 CI cores).
    server = start_vllm_server(
        model_dir,
        served_model_name=SERVED_NAME,
        args=cpu_server_args(max_num_seqs=4),
        log_path=log_path,
        timeout=START_TIMEOUT,
    )
    try:
        served = ServedModel(
            url=server.root, model=SERVED_NAME, log_path=log_path, model_dir=model_dir,
            trained=trained, start_seconds=time.monotonic() - started,
        )
        sys.stderr.write(f"\n[vllm_server] ready in {served.start_seconds:.0f} s\n")
        yield served
    finally:
        server.stop()


# -- the misbehaving server ----------------------------------------------------------------

# Token ids of the fake tokenizer: single tokens for the lowercase/capitalised labels.
FAKE_VOCAB = {
    "Yes": 10,
    " Yes": 11,
    "yes": 12,
    " yes": 13,
    "No": 20,
    " No": 21,
    "no": 22,
    " no": 23,
}
IMAGE_TOKENS = 64


@dataclass
class MisbehavingServer:
    """A scriptable OpenAI/vLLM-like server. Attributes may be changed while it runs.

    mode: "ok", "400", "500", "malformed", "no_labels", "wrong_model", "hang" (never answers
    chat requests), "flaky" (500 for the first `fail_first` chat requests).
    """

    mode: str = "ok"
    model: str = "toy-vlm"
    answer_model: str | None = None  # the model named in chat answers (wrong_model)
    p_yes: float = 0.7
    p_no: float = 0.2
    delay: float = 0.0  # seconds before each chat answer
    models_delay: float = 0.0  # seconds before answering /v1/models
    fail_first: int = 0
    die_after: int | None = None  # chat requests answered before the server dies
    token_ids: bool = True  # supports logprob_token_ids
    tokenize: bool = True  # has /tokenize
    logprobs: bool = True  # logprobs enabled
    vision: bool = True  # accepts images
    multi_token_labels: bool = False
    require_key: str | None = None  # answer 401 unless this Bearer key is sent
    text: str = '{"rating": "Yes", "rationale": "a red circle is visible"}'
    requests: list[dict[str, Any]] = field(default_factory=list)
    in_flight: int = 0
    max_in_flight: int = 0
    chat_count: int = 0
    url: str = ""
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _stopping: threading.Event = field(default_factory=threading.Event)
    _httpd: ThreadingHTTPServer | None = None

    # lifecycle
    def start(self) -> MisbehavingServer:
        script = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                script._handle(self, "GET")

            def do_POST(self) -> None:
                script._handle(self, "POST")

        httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        httpd.daemon_threads = True
        self._httpd = httpd
        self.url = f"http://127.0.0.1:{httpd.server_address[1]}"
        threading.Thread(
            target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        ).start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        httpd, self._httpd = self._httpd, None
        if httpd is not None:
            httpd.shutdown()
            httpd.server_close()

    def count(self, path: str) -> int:
        with self._lock:
            return sum(1 for r in self.requests if r["path"] == path)

    # answers
    def _send(
        self, h: BaseHTTPRequestHandler, status: int, body: Any, raw: bytes | None = None
    ) -> None:
        data = raw if raw is not None else json.dumps(body).encode()
        h.send_response(status)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(data)))
        h.end_headers()
        h.wfile.write(data)

    def _error(self, h: BaseHTTPRequestHandler, status: int, message: str) -> None:
        self._send(
            h, status, {"error": {"message": message, "type": "BadRequestError", "code": status}}
        )

    def _handle(self, h: BaseHTTPRequestHandler, method: str) -> None:
        length = int(h.headers.get("Content-Length") or 0)
        body = json.loads(h.rfile.read(length) or b"null") if length else None
        with self._lock:
            self.requests.append(
                {"method": method, "path": h.path, "headers": dict(h.headers), "body": body}
            )
        if self.require_key and h.headers.get("Authorization") != f"Bearer {self.require_key}":
            self._error(h, 401, "invalid API key")
        elif h.path == "/health":
            self._send(h, 200, {})
        elif h.path == "/v1/models":
            if self.models_delay:
                self._stopping.wait(self.models_delay)
            self._send(
                h,
                200,
                {"object": "list", "data": [{"id": self.model, "root": f"/models/{self.model}"}]},
            )
        elif h.path == "/tokenize" and method == "POST":
            self._tokenize(h, body)
        elif h.path == "/v1/chat/completions" and method == "POST":
            with self._lock:
                self.in_flight += 1
                self.max_in_flight = max(self.max_in_flight, self.in_flight)
                self.chat_count += 1
                number = self.chat_count
            try:
                self._chat(h, body, number)
            finally:
                with self._lock:
                    self.in_flight -= 1
        else:
            self._error(h, 404, f"no route {method} {h.path}")

    def _tokenize(self, h: BaseHTTPRequestHandler, body: dict[str, Any]) -> None:
        if not self.tokenize:
            self._error(h, 404, "Not Found")
            return
        prompt = body["prompt"]
        if prompt in FAKE_VOCAB and not self.multi_token_labels:
            tokens = [FAKE_VOCAB[prompt]]
        else:
            tokens = [100 + (ord(c) % 50) for c in prompt]
        self._send(h, 200, {"tokens": tokens, "count": len(tokens), "max_model_len": 2048})

    def _chat(self, h: BaseHTTPRequestHandler, body: dict[str, Any], number: int) -> None:
        if self.die_after is not None and number > self.die_after:
            # Die: drop this connection unanswered and stop listening.
            threading.Thread(target=self.stop, daemon=True).start()
            with contextlib.suppress(OSError):
                h.connection.shutdown(socket.SHUT_RDWR)
            h.close_connection = True
            return
        if self.delay:
            self._stopping.wait(self.delay)
        if self.mode == "hang":
            self._stopping.wait(3600)
            return
        has_image = any(
            isinstance(m.get("content"), list)
            and any(p.get("type") == "image_url" for p in m["content"])
            for m in body["messages"]
        )
        if has_image and not self.vision:
            self._error(h, 400, "At most 0 image(s) may be provided in one prompt.")
            return
        if body.get("logprobs") and not self.logprobs:
            self._error(
                h,
                400,
                f"Requested sample logprobs of {body.get('top_logprobs', 1)}, "
                "which is greater than max allowed: 0",
            )
            return
        if self.mode == "400":
            self._error(h, 400, "This model's maximum context length is 2048 tokens")
            return
        if self.mode == "500" or (self.mode == "flaky" and number <= self.fail_first):
            self._error(h, 500, "Internal Server Error: EngineCore died")
            return
        if self.mode == "malformed":
            self._send(h, 200, None, raw=b'{"choices": [{"index": 0, "logprobs": {"cont')
            return
        answer_model = self.answer_model or self.model
        if self.mode == "wrong_model":
            answer_model = "someone-else/other-model"
        self._send(h, 200, self._completion(body, answer_model, has_image))

    def _completion(self, body: dict[str, Any], model: str, has_image: bool) -> dict[str, Any]:
        import math

        prompt_tokens = 40 + (IMAGE_TOKENS if has_image else 0)
        usage = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": 1,
            "total_tokens": prompt_tokens + 1,
            "prompt_tokens_details": {"cached_tokens": 32},
        }
        as_ids = bool(body.get("return_tokens_as_token_ids"))

        def tok(text: str) -> str:
            return f"token_id:{FAKE_VOCAB[text]}" if as_ids and text in FAKE_VOCAB else text

        if self.mode == "no_labels":
            table = {"Maybe": math.log(0.6), "The": math.log(0.3)}
        else:
            table = {
                "Yes": math.log(self.p_yes),
                "No": math.log(self.p_no),
                "Maybe": math.log(0.05),
            }
        if self.token_ids and body.get("logprob_token_ids"):
            ids = body["logprob_token_ids"]
            back = {v: k for k, v in FAKE_VOCAB.items()}
            top = [
                {"token": tok(back[i]), "logprob": table.get(back[i], -12.0)}
                for i in ids
                if i in back
            ]
            if self.mode == "no_labels":
                top = []
        else:
            k = int(body.get("top_logprobs") or 0)
            ranked = sorted(table.items(), key=lambda kv: -kv[1])[:k]
            top = [{"token": tok(t), "logprob": lp} for t, lp in ranked]
        best = max(table.items(), key=lambda kv: kv[1])
        content: Any = None
        text = best[0]
        if body.get("max_tokens", 1) > 1:
            text = self.text
        if body.get("logprobs"):
            content = {
                "content": [{"token": tok(best[0]), "logprob": best[1], "top_logprobs": top}]
            }
        return {
            "id": "chatcmpl-1",
            "object": "chat.completion",
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": text},
                    "logprobs": content,
                    "finish_reason": "length",
                }
            ],
            "usage": usage,
        }


@pytest.fixture
def misbehaving_server() -> Iterator[Callable[..., MisbehavingServer]]:
    servers: list[MisbehavingServer] = []

    def make(**script: Any) -> MisbehavingServer:
        server = MisbehavingServer(**script).start()
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.stop()


@pytest.fixture
def down_url() -> str:
    """A URL on 127.0.0.1 where nothing listens."""
    return f"http://127.0.0.1:{free_port()}"
