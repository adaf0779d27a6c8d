"""A hostile-body fuzz run against `judge serve` (issue 24, item 8): hundreds of bodies
that are malformed in every way we could think of (nesting, numbers, types, base64,
UTF-8, content types, multipart, URLs, images) go to both judging routes, and none may
get a 5xx. Generated schema cases are in tests/test_serve_schema.py.

The corpus is built here, deterministically, so a failure names the body that caused it.
"""

from __future__ import annotations

import base64
import json
import shutil
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from judge.resources import data_dir
from judge.serve import Limits, RemoteImages
from tests.test_images import gif_bigger_than_its_screen, jpeg_with_two_sizes, tiff_claiming
from tests.test_serve import TOKEN, Running, png, start

Body = tuple[str, str, str | None, bytes]  # (label, path, content type, body)
JSON = "application/json"


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _images() -> dict[str, bytes]:
    good = png("blue")
    return {
        "png": good,
        "empty": b"",
        "truncated": good[:40],
        "html": b"<html><body>hi</body></html>",
        "gif_bomb": gif_bigger_than_its_screen((3000, 3000)),
        "jpeg_two_sizes": jpeg_with_two_sizes((3000, 3000)),
        "tiff_bomb": tiff_claiming(20_000, 20_000),
        "png_header_only": good[:33],
        "zeros": bytes(64),
    }


_URLS = [
    "", "data:", "data:,", "data:image/png,AAAA", "data:text/html;base64,AAAA",
    "data:image/png;base64,", "data:image/png;base64,@@@@", "data:image/png;base64,A",
    "data:image/png;base64,AAAA====", "data:image/png;base64,\u00e9\u00e9",
    "data:image/png;base64,\x00\x00", "data:image/png;charset=x;base64,AAAA",
    "DATA:IMAGE/PNG;BASE64," + _b64(b"\x89PNG\r\n\x1a\n"), "data:;base64,AAAA",
    "http://127.0.0.1:80:80/a.png", "http://127.0.0.1\t/a.png", "http://127.0.0.1/a\x00.png",
    "http://127.0.0.1:99999/", "http://127.0.0.1:-1/", "http://127.0.0.1:abc/",
    "http://[::1/", "http://[zz]/", "http://[::1]/a.png", "http:///a.png", "http://",
    "https://user:pw@127.0.0.1/a.png", "http://127.0.0.1/" + "a" * 5000, "ftp://127.0.0.1/",
    "file:///etc/passwd", "gopher://127.0.0.1:70/", "http://ex\u00e4mple.test/",
    "http://127.0.0.1/a.png", "http://127.0.0.1:8080/a.png", "http://0x7f.1/",
    "http://2130706433/", "http://[::ffff:127.0.0.1]/", "//127.0.0.1/a.png", "javascript:1",
    "http://a..b/", "http://" + "a" * 300 + ".test/", "\u202ehttp://127.0.0.1/",
]

_SCALARS: list[Any] = [
    None, True, False, 0, -1, 1e308, -0.0, 2**70, "", "x", "\u0000", "\ud800", [], {},
    [None], [[]], [{}], {"a": None},
]


def _nested(depth: int, kind: str) -> str:
    if kind == "list":
        return "[" * depth + "]" * depth
    return '{"a":' * depth + "1" + "}" * depth


def corpus() -> list[Body]:
    """Every hostile body, labelled."""
    bodies: list[Body] = []
    images = _images()

    def add(label: str, path: str, kind: str | None, body: bytes | str) -> None:
        raw = body.encode("utf-8", "surrogatepass") if isinstance(body, str) else body
        bodies.append((label, path, kind, raw))

    def both(label: str, moderation: Any, native: Any) -> None:
        add(label, "/v1/moderations", JSON, json.dumps(moderation))
        add(label, "/v1/judge", JSON, json.dumps(native))

    # Nesting, numbers and raw text that is not JSON.
    for path in ("/v1/moderations", "/v1/judge"):
        for depth in (50, 500, 990, 1_000, 5_000, 100_000):
            for kind in ("list", "dict"):
                add(f"nested {kind} {depth}", path, JSON, _nested(depth, kind))
        for raw in ("1" * 5_000, "1e999999", "-" + "9" * 4_400, "NaN", "Infinity",
                    '{"input": 1e99999}', '{"images": -Infinity}', "", " ", "null",
                    "true", '"string"', "[]", "{}", "{", '{"input": [', "\x00",
                    '{"input": "\\ud800"}', '{"a": 1, "a": 2}', "\ufeff{}",
                    '{"input": [' + ",".join(["{}"] * 2_000) + "]}"):
            add(f"raw {raw[:20]!r}", path, JSON, raw)
        for raw_bytes in (b"\xff\xfe", b'{"input": "\xff"}', b"\xc0\x80", b"\xed\xa0\x80",
                          b'{"images": [{"data": "\x80\x81"}]}', b"\x00" * 100):
            add(f"bad utf-8 {raw_bytes[:10]!r}", path, JSON, raw_bytes)

    # Wrong types in every field.
    for value in _SCALARS:
        both(f"top {value!r}", value, value)
        both(f"field {value!r}", {"input": value, "model": value},
             {"images": value, "explain": value, "rules": value})
        both(f"part {value!r}", {"input": [value]}, {"images": [value]})
        both(f"inner {value!r}",
             {"input": [{"type": value, "image_url": value, "text": value}]},
             {"images": [{"data": value, "url": value, "id": value}]})
        both(f"url {value!r}", {"input": [{"type": "image_url", "image_url": {"url": value}}]},
             {"images": [{"url": value}]})
        add(f"explain {value!r}", "/v1/moderations", JSON,
            json.dumps({"input": [{"type": "image_url", "image_url": {
                "url": "data:image/png;base64," + _b64(images["png"])}}],
                "judge_explain": value}))
        add(f"rules {value!r}", "/v1/judge", JSON,
            json.dumps({"images": [{"data": _b64(images["png"])}], "rules": [value]}))

    # URLs, data URLs and base64 of every kind.
    for url in _URLS:
        both(f"url {url[:30]!r}", {"input": [{"type": "image_url", "image_url": {"url": url}}]},
             {"images": [{"url": url}]})
    for text in ("@@@", "A", "AAAA====", "=", "\u00e9", "\x00", "   ", "-_-_", "AA==AA==",
                 "A" * 1_500_000, _b64(b"x" * 100)):
        add(f"base64 {text[:12]!r}", "/v1/judge", JSON,
            json.dumps({"images": [{"data": text}]}))

    # Images: good, broken and hostile, by every route.
    for name, data in images.items():
        url = "data:image/png;base64," + _b64(data)
        both(f"image {name}", {"input": [{"type": "image_url", "image_url": {"url": url}}]},
             {"images": [{"data": _b64(data), "id": name}], "rules": ["blue-anywhere"]})
        bodies.append(_multipart(f"upload {name}", [("image", name, data)]))
    both("too many images",
         {"input": [{"type": "image_url", "image_url": {
             "url": "data:image/png;base64," + _b64(images["png"])}}] * 9},
         {"images": [{"data": _b64(images["png"])}] * 9})
    add("rules empty", "/v1/judge", JSON,
        json.dumps({"images": [{"data": _b64(images["png"])}], "rules": []}))
    add("id too long", "/v1/judge", JSON,
        json.dumps({"images": [{"data": _b64(images["png"]), "id": "x" * 500}]}))

    # Content types.
    valid = json.dumps({"input": [{"type": "image_url", "image_url": {
        "url": "data:image/png;base64," + _b64(images["png"])}}]})
    for kind in (None, "", "text/plain", "application/x-www-form-urlencoded",
                 "application/json; charset=latin-1", "application/JSON", "application/json,",
                 "multipart/form-data", "multipart/form-data; boundary=",
                 "multipart/form-data; boundary=x", "image/png", "application/json ; x=\"y\"",
                 ";;;", "a" * 2_000):
        for path in ("/v1/moderations", "/v1/judge"):
            add(f"content type {str(kind)[:30]!r}", path, kind, valid)

    # Multipart oddities.
    png_bytes = images["png"]
    bodies += [
        _multipart("no parts", []),
        _multipart("field only", [("rules", None, b"blue-anywhere")]),
        _multipart("rules commas", [("image", "a.png", png_bytes), ("rules", None, b",,,")]),
        _multipart("rules unknown", [("image", "a.png", png_bytes), ("rules", None, b"nope")]),
        _multipart("explain odd", [("image", "a.png", png_bytes), ("explain", None, b"\xff")]),
        _multipart("nul name", [("image", "a\x00b.png", png_bytes)]),
        _multipart("path name", [("image", "../../etc/passwd", png_bytes)]),
        _multipart("long name", [("image", "n" * 5_000, png_bytes)]),
        _multipart("empty file", [("image", "e.png", b"")]),
        _multipart("too many files", [("image", f"{i}.png", png_bytes) for i in range(9)]),
        _multipart("many fields", [(f"f{i}", None, b"x") for i in range(100)]),
        _multipart("utf-8 field", [("image", "a.png", png_bytes), ("rules", None,
                                                                     "\u00e9".encode())]),
    ]
    boundary = "fuzzboundary"
    kind = f"multipart/form-data; boundary={boundary}"
    for label, raw in (
        ("truncated", f"--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; "
                      f"filename=\"a.png\"\r\n\r\n".encode() + png_bytes[:20]),
        ("no closing", f"--{boundary}\r\n".encode()),
        ("garbage", b"\x00\xff" * 100),
        ("no disposition", f"--{boundary}\r\nX: y\r\n\r\nzz\r\n--{boundary}--\r\n".encode()),
        ("bad header", f"--{boundary}\r\n\xff\xfe\r\n\r\nzz\r\n--{boundary}--\r\n"
                       .encode("latin-1")),
        ("nested boundary", f"--{boundary}\r\nContent-Disposition: form-data; name=\"a\"\r\n"
                            f"Content-Type: multipart/mixed; boundary=b2\r\n\r\n--b2\r\n\r\n"
                            f"--{boundary}--\r\n".encode()),
        ("empty", b""),
    ):
        add(f"multipart {label}", "/v1/judge", kind, raw)
    return bodies


def _multipart(label: str, parts: list[tuple[str, str | None, bytes]]) -> Body:
    boundary = "fuzzb0undary"
    out = b""
    for name, filename, data in parts:
        disposition = f'form-data; name="{name}"'
        if filename is not None:
            disposition += f'; filename="{filename}"'
        out += (f"--{boundary}\r\nContent-Disposition: {disposition}\r\n"
                + ("Content-Type: application/octet-stream\r\n" if filename is not None else "")
                + "\r\n").encode("utf-8", "surrogatepass") + data + b"\r\n"
    out += f"--{boundary}--\r\n".encode()
    return (f"multipart {label}", "/v1/judge", f"multipart/form-data; boundary={boundary}",
            out)


@pytest.fixture(scope="module")
def fuzz_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    folder = tmp_path_factory.mktemp("fuzz")
    for name in ("toy.yaml", "toy.lock.yaml"):
        shutil.copy(data_dir("constitutions") / name, folder / name)
    running = start(
        folder / "toy.yaml", folder,
        limits=Limits(max_images=8, max_pixels=1_000_000, max_body_bytes=4_000_000,
                      max_queue=1_000, request_timeout_s=30),
        remote=RemoteImages(allow_hosts=("127.0.0.1", "::1"), timeout_s=2),
    )
    yield running
    running.server.stop()


def test_no_hostile_body_gets_a_5xx(fuzz_service: Running, capsys: pytest.CaptureFixture[str],
                                    ) -> None:
    bodies = corpus()
    assert len(bodies) >= 300
    statuses: dict[int, int] = {}
    server_errors = []
    with httpx.Client(base_url=fuzz_service.url, timeout=60) as client:
        for label, path, kind, body in bodies:
            headers = {"Authorization": f"Bearer {TOKEN}"}
            if kind is not None:
                headers["Content-Type"] = kind
            for query in ("", "?explain=maybe") if path == "/v1/moderations" else ("",):
                response = client.post(path + query, content=body, headers=headers)
                statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
                if response.status_code >= 500:
                    server_errors.append((label, path, response.status_code, response.text[:300]))
                elif response.status_code >= 400:
                    # A refusal has the error shape and a reason.
                    error = response.json()["error"]
                    assert error["message"] and error["code"], (label, response.text)
    sent = sum(statuses.values())
    with capsys.disabled():
        print(f"\nhostile bodies: {sent} requests, statuses {dict(sorted(statuses.items()))}")
    assert server_errors == [], server_errors
    assert statuses.get(200, 0) > 0  # the good images in the corpus were judged

