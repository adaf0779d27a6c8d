"""The service's settings: limits, tokens, remote-URL policy and failure behaviour.

One frozen object, built by `judge serve` from its options (or by a test), read by every
part of the service. Limits are enforced before any model work: a request over one costs
the service a header read, not a decode.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from judge.serve.auth import Tokens


@dataclass(frozen=True)
class Limits:
    """What one request may ask for, and how much the service takes on at once.

    Attributes:
        max_body_bytes: the largest request body (413 beyond it).
        max_image_bytes: the largest single image, decoded from base64 or fetched (413).
        max_pixels: the largest width x height of any frame of an image, and of the canvas a
            frame makes the decoder allocate, read from the file's structure before any
            pixel is decoded (413).
        max_images: the most images in one request (413).
        max_concurrent: requests judged at once.
        max_queue: requests waiting for a slot; one more is answered 429 with Retry-After.
        request_timeout_s: how long an image may take before its rules are "undecided".
        retry_after_s: the Retry-After a 429 suggests.
        max_video_bytes: the largest video clip (MP4/MOV, WebM/MKV, AVI) sent to
            /v1/judge (413); the request body must fit `max_body_bytes` too.
        max_video_seconds: the longest clip (413), from its header and then its packets,
            before any frame is decoded.
        max_video_pixels: the largest frame of a clip (413).
        video_timeout_s: how long a clip may take before its rules are "undecided".
    """

    max_body_bytes: int = 32 * 1024 * 1024
    max_image_bytes: int = 16 * 1024 * 1024
    max_pixels: int = 40_000_000
    max_images: int = 16
    max_concurrent: int = 8
    max_queue: int = 64
    request_timeout_s: float = 120.0
    retry_after_s: int = 1
    max_video_bytes: int = 32 * 1024 * 1024
    max_video_seconds: float = 300.0
    max_video_pixels: int = 3840 * 2160
    video_timeout_s: float = 600.0


@dataclass(frozen=True)
class RemoteImages:
    """Fetching `http(s)` image URLs: off unless hosts are allowed (a server-side request
    forgery risk: the service would fetch whatever a caller names, inside its network).

    Attributes:
        allow_hosts: host names (exact, or "*.example.com" for its subdomains) that may be
            fetched; empty means remote URLs are refused.
        timeout_s: connect and read timeout of one fetch, and the limit on the whole fetch
            (the name lookup included).
        max_bytes: the largest body fetched, counted in raw bytes as they arrive (the
            fetch asks for no content encoding and stops reading beyond it).
        allow_ports: the ports a URL may name (80 and 443 unless configured).
        allow_private: fetch from addresses that are not public (loopback, private,
            link-local, multicast, reserved): off, since an allowed name may resolve to
            one inside the network.
    """

    allow_hosts: tuple[str, ...] = ()
    timeout_s: float = 5.0
    max_bytes: int = 16 * 1024 * 1024
    allow_ports: tuple[int, ...] = (80, 443)
    allow_private: bool = False

    @property
    def enabled(self) -> bool:
        return bool(self.allow_hosts)

    def allows(self, host: str) -> bool:
        host = host.lower().rstrip(".")
        for pattern in self.allow_hosts:
            pattern = pattern.lower().rstrip(".")
            if pattern.startswith("*."):
                if host.endswith(pattern[1:]) and host != pattern[2:]:
                    return True
            elif host == pattern:
                return True
        return False


@dataclass(frozen=True)
class ServeConfig:
    """Everything `judge serve` was told, apart from the model.

    Attributes:
        constitution: the policy file (its lock beside it), re-read on reload.
        tokens: the bearer tokens, each with a role; empty means no authentication
            (loopback use only, and the command refuses it on other addresses unless told).
        tokens_file: where `tokens` came from, re-read on every reload (so tokens can be
            rotated without a restart); None: they do not change.
        limits: request and load limits.
        remote: the remote-URL policy.
        fail_closed: True (the default): an image with an undecided rule is flagged, with
            the reason; False: it is not flagged, and its result still says "undecided".
        store: the SQLite store for the decision log (None: the default store).
        log_images: keep each judged image's bytes in the decision log.
        model_name: the name the moderation endpoint reports as `model`.
        ready_check_s: how often /readyz re-runs the model checks at most.
        keep_alive_s: how long an idle client connection stays open. Longer than a
            client's or load balancer's idle time, so the service never closes a
            connection just as a client sends on it (the client would see the request
            fail without an answer); uvicorn's default is 5 s.
        public_metrics: serve /metrics without a token (it names the policy, its lock
            hash and per-rule counts, so by default it needs one).
    """

    constitution: Path
    tokens: Tokens = field(default_factory=Tokens)
    tokens_file: Path | None = None
    limits: Limits = field(default_factory=Limits)
    remote: RemoteImages = field(default_factory=RemoteImages)
    fail_closed: bool = True
    store: Path | None = None
    log_images: bool = False
    model_name: str = "judge-clue"
    ready_check_s: float = 30.0
    keep_alive_s: int = 75
    public_metrics: bool = False
