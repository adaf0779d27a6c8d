"""Schemathesis over `judge serve`'s OpenAPI document: generated requests to every
operation, on a real uvicorn on 127.0.0.1 (the colour-reading back end), must never get a
5xx. Bounded: a few examples per operation and no shrinking, a few seconds in all."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings

from judge.resources import data_dir
from judge.serve import Limits, Tokens
from judge.serve.load import ThreadedServer, colour_service

TOKEN = "schema-token-1234"


@pytest.fixture(scope="module")
def schema_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ThreadedServer]:
    folder = tmp_path_factory.mktemp("schema")
    for name in ("toy.yaml", "toy.lock.yaml"):
        shutil.copy(data_dir("constitutions") / name, folder / name)
    _, app = colour_service(
        folder / "toy.yaml", folder / "store.sqlite3",
        tokens=Tokens.parse([TOKEN], "test"),
        limits=Limits(max_images=4, max_body_bytes=1_000_000, request_timeout_s=10),
    )
    with ThreadedServer(app) as server:
        yield server


def test_no_request_gets_a_server_error(schema_server: ThreadedServer) -> None:
    """Each operation's generated cases (schemathesis's strategies, driven by hypothesis
    directly: its pytest plugin does not load under this pytest)."""
    api = schemathesis.openapi.from_url(schema_server.url + "/openapi.json")
    headers = {"Authorization": f"Bearer {TOKEN}"}
    seen: dict[str, int] = {}
    operations = [result.ok() for result in api.get_all_operations()]
    assert len(operations) >= 7
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(max_examples=25, deadline=None, phases=[Phase.explicit, Phase.generate],
                  suppress_health_check=list(HealthCheck), derandomize=True, database=None)
        def check(case: Any) -> None:
            response = case.call(base_url=schema_server.url, headers=headers, timeout=30)
            key = f"{case.method} {case.path} {response.status_code}"
            seen[key] = seen.get(key, 0) + 1
            assert response.status_code < 500, (case.as_curl_command(), response.text[:500])

        check()
    print("\n" + "\n".join(f"{k}: {v}" for k, v in sorted(seen.items())))
