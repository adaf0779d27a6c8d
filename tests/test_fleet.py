"""A vLLM fleet: routing decisions (a table over fake replicas), and the fleet back end
against real HTTP fake servers: affinity, failover, a replica that comes back, refusals."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from typing import Any

import pytest
from PIL import Image

from judge.errors import BackendError, InputError
from judge.models.base import Message, YesNoQuery
from judge.models.fleet import FleetBackend, chat_key, query_key, split_servers
from judge.models.fleet_routing import HashRing, Router, base_key
from judge.models.registry import load_backend
from tests._servers import MisbehavingServer

A, B, C = "http://a:8000", "http://b:8000", "http://c:8000"


# -- routing decisions ------------------------------------------------------------------


def test_keys_of_one_image_go_to_one_replica() -> None:
    router = Router([A, B, C])
    for n in range(50):
        key = f"img{n}"
        first = router.choose(key, [0, 0, 0], {0, 1, 2})
        for variant in (key, f"{key}#mask:knife", f"{key}#crop:knife#mask:knife"):
            assert base_key(variant) == key
            assert router.choose(variant, [0, 0, 0], {0, 1, 2}) == first


def test_the_ring_splits_keys_evenly_and_moves_only_a_removed_replicas_keys() -> None:
    three, two = HashRing([A, B, C]), HashRing([A, B])
    owners3 = Counter(three.order(f"k{n}")[0] for n in range(3000))
    assert min(owners3.values()) > 800, owners3  # about 1000 each
    moved = 0
    for n in range(3000):
        owner3 = three.order(f"k{n}")[0]
        if owner3 != 2:
            # Keys not owned by the removed replica stay where they were.
            moved += two.order(f"k{n}")[0] != owner3
    assert moved == 0


@dataclass
class Case:
    name: str
    loads: list[int]
    healthy: set[int]
    exclude: set[int]
    expect: str  # "owner", "second", "third", "none", "least"


CASES = [
    Case("idle fleet: the owner", [0, 0, 0], {0, 1, 2}, set(), "owner"),
    Case("owner a little busier: still the owner", [2, 1, 1], {0, 1, 2}, set(), "owner"),
    Case("owner out of service: the next on the ring", [0, 0, 0], {1, 2} | set(), set(), "second"),
    Case("failed on the owner: the next on the ring", [0, 0, 0], {0, 1, 2}, {"owner"}, "second"),
    Case("failed on two: the third", [0, 0, 0], {0, 1, 2}, {"owner", "second"}, "third"),
    Case("nothing left", [0, 0, 0], {0, 1, 2}, {"owner", "second", "third"}, "none"),
    Case("owner far above the mean: the next", [9, 0, 0], {0, 1, 2}, set(), "second"),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_routing_decision_table(case: Case) -> None:
    names = [A, B, C]
    order = HashRing(names).order("image-7")
    role = {"owner": order[0], "second": order[1], "third": order[2]}
    # Lay the table's loads and health out over the ring order of this key.
    loads = [0, 0, 0]
    for position, load in enumerate(case.loads):
        loads[order[position]] = load
    healthy = {order[p] for p in case.healthy}
    exclude = {role[r] for r in case.exclude}
    got = Router(names).choose("image-7", loads, healthy, exclude)
    if case.expect == "none":
        assert got is None
    else:
        assert got == role[case.expect]


def test_a_key_keeps_its_replica_while_loads_shift_and_leaves_it_when_it_fails() -> None:
    router = Router([A, B])
    owner = router.choose("x", [0, 0], {0, 1})
    assert owner is not None
    busy = [0, 0]
    busy[owner] = 50
    assert router.choose("x#mask:cat", busy, {0, 1}) == owner  # sticky: its cache is there
    assert router.choose("y-new", busy, {0, 1}) != owner or router.ring.order("y-new")[0] != owner
    router.forget(owner)
    assert router.choose("x", [0, 0], {1 - owner}) == 1 - owner


def test_round_robin_alternates_whatever_the_key() -> None:
    router = Router([A, B], "round-robin")
    picks = [router.choose("same", [0, 0], {0, 1}) for _ in range(6)]
    assert sorted(Counter(picks).values()) == [3, 3]
    assert all(picks[i] != picks[i + 1] for i in range(5))


def test_server_lists() -> None:
    assert split_servers("http://a:1, http://b:2") == ["http://a:1", "http://b:2"]
    assert split_servers(["http://a:1", "http://a:1", "http://b:2"]) == ["http://a:1", "http://b:2"]
    assert split_servers(None) == []
    with pytest.raises(InputError, match="routing policy"):
        FleetBackend(servers=[A, B], routing="random")  # type: ignore[arg-type]
    with pytest.raises(InputError, match="server URLs"):
        FleetBackend(servers=[])


def test_one_server_is_a_server_several_are_a_fleet() -> None:
    one = load_backend("vllm-server", server=[A])
    assert one.kind == "vllm-server"
    fleet = load_backend(None, server=[A, B])
    assert isinstance(fleet, FleetBackend) and fleet.urls == [A, B]
    assert isinstance(load_backend("server", server=f"{A},{B}"), FleetBackend)


def test_routing_keys() -> None:
    image = Image.new("RGB", (8, 8), "red")
    assert query_key(YesNoQuery("i", "q", image, image_key="abc#mask:x")) == "abc#mask:x"
    assert query_key(YesNoQuery("i", "q")) == "prior:q"
    assert query_key(YesNoQuery("i", "q", image)).startswith("pixels:")
    image.info["judge_key"] = "abc#crop:x"
    assert chat_key([Message.user("i", image, "q")]) == "abc#crop:x"


# -- the fleet back end against fake HTTP replicas ------------------------------------------


@dataclass
class SickableServer(MisbehavingServer):
    """A fake replica whose /health (and everything else) can be made to answer 503."""

    sick: bool = False

    def _handle(self, h: BaseHTTPRequestHandler, method: str) -> None:
        if not self.sick:
            super()._handle(h, method)
            return
        length = int(h.headers.get("Content-Length") or 0)
        if length:
            h.rfile.read(length)
        self._error(h, 503, "engine is dead")


@pytest.fixture
def sickable() -> Any:
    servers: list[SickableServer] = []

    def make(**script: Any) -> SickableServer:
        server = SickableServer(**script).start()
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.stop()


def _queries(n_images: int, per_image: int = 3, first: int = 0) -> list[YesNoQuery]:
    out = []
    for n in range(first, first + n_images):
        image = Image.new("RGB", (16, 16), (n * 7 % 256, 40, n // 256))
        out += [
            YesNoQuery("instructions", f"statement {s}?", image, image_key=f"img{n}")
            for s in range(per_image)
        ]
    return out


def _images_seen(server: MisbehavingServer) -> Counter[str]:
    """Which image each chat request was about (the data URL), counted."""
    seen: Counter[str] = Counter()
    for r in server.requests:
        if r["path"] != "/v1/chat/completions":
            continue
        parts = r["body"]["messages"][0]["content"]
        urls = [p["image_url"]["url"] for p in parts if p["type"] == "image_url"]
        seen[urls[0][-40:] if urls else "none"] += 1
    return seen


def _run(fleet: FleetBackend, coro: Callable[[], Any]) -> Any:
    async def main() -> Any:
        try:
            return await coro()
        finally:
            await fleet.aclose()

    return asyncio.run(main())


def test_affinity_keeps_each_image_on_one_replica(misbehaving_server: Any) -> None:
    a, b = misbehaving_server(), misbehaving_server()
    fleet = FleetBackend(servers=[a.url, b.url])
    results = _run(fleet, lambda: fleet.yes_no(_queries(12)))
    assert all(r.m is not None for r in results)
    on_a, on_b = _images_seen(a), _images_seen(b)
    assert on_a and on_b, "both replicas should get images"
    assert not set(on_a) & set(on_b), "an image was split over replicas"
    assert all(count == 3 for count in {**on_a, **on_b}.values())


def test_round_robin_splits_an_images_queries(misbehaving_server: Any) -> None:
    a, b = misbehaving_server(), misbehaving_server()
    fleet = FleetBackend(servers=[a.url, b.url], routing="round-robin")
    _run(fleet, lambda: fleet.yes_no(_queries(6)))
    assert set(_images_seen(a)) & set(_images_seen(b))


def test_a_replica_that_dies_mid_run_loses_no_query(misbehaving_server: Any) -> None:
    a, b = misbehaving_server(die_after=4), misbehaving_server()
    fleet = FleetBackend(servers=[a.url, b.url], health_interval=60)

    async def two_waves() -> Any:
        first = await fleet.yes_no(_queries(10))
        second = await fleet.yes_no(_queries(10))
        return first + second

    results = _run(fleet, two_waves)
    assert all(r.m is not None for r in results), [r.error for r in results if r.error]
    stats = {s["url"]: s for s in fleet.replica_stats()}
    assert not stats[a.url]["healthy"] and stats[a.url]["taken_out"] == 1
    assert stats[b.url]["healthy"]


def test_a_sick_replica_is_taken_out_and_comes_back(sickable: Any) -> None:
    a, b = sickable(), sickable()
    fleet = FleetBackend(servers=[a.url, b.url], health_interval=0.05)

    async def scenario() -> Any:
        await fleet.start()
        a.sick = True
        during = await fleet.yes_no(_queries(8))
        out = [r.healthy for r in fleet.replicas]
        a.sick = False
        await asyncio.sleep(0.1)
        back = await fleet.check_health()
        before = a.chat_count
        # New images: those judged while it was out stay where their prefix is cached.
        after = await fleet.yes_no(_queries(8, first=100))
        return during, out, back, a.chat_count - before, after

    during, out, back, a_after, after = _run(fleet, scenario)
    assert all(r.m is not None for r in during + after)
    assert out == [False, True] and back == [True, True]
    assert a_after > 0, "the replica that came back gets work again"


def test_a_request_a_healthy_replica_refuses_is_not_resent(misbehaving_server: Any) -> None:
    a, b = misbehaving_server(mode="400"), misbehaving_server(mode="400")
    fleet = FleetBackend(servers=[a.url, b.url])
    results = _run(fleet, lambda: fleet.yes_no(_queries(2, 2)))
    assert all(r.m is None and r.error for r in results)
    assert a.chat_count + b.chat_count == 4  # each sent once
    assert all(r.healthy for r in fleet.replicas)


def test_every_replica_down_gives_failed_answers_never_safe(misbehaving_server: Any) -> None:
    a, b = misbehaving_server(), misbehaving_server()
    fleet = FleetBackend(servers=[a.url, b.url], health_interval=60)

    async def scenario() -> Any:
        await fleet.start()
        a.die_after = b.die_after = 0  # the next chat request kills each
        return await fleet.yes_no(_queries(3))

    results = _run(fleet, scenario)
    assert all(r.m is None for r in results)
    assert all("no server of the fleet could answer" in (r.error or "") for r in results)


def test_a_fleet_with_no_usable_server_says_so(down_url: str) -> None:
    fleet = FleetBackend(servers=[down_url, down_url.replace("127.0.0.1", "localhost")])
    with pytest.raises(BackendError, match="no server of the fleet can be used"):
        _run(fleet, fleet.start)


def test_replicas_serving_different_models_are_refused(misbehaving_server: Any) -> None:
    a, b = misbehaving_server(model="m1"), misbehaving_server(model="m2")
    fleet = FleetBackend(servers=[a.url, b.url])
    with pytest.raises(BackendError, match="different models"):
        _run(fleet, fleet.start)


def test_generation_follows_the_image(misbehaving_server: Any) -> None:
    a, b = misbehaving_server(), misbehaving_server()
    fleet = FleetBackend(servers=[a.url, b.url])
    image = Image.new("RGB", (16, 16), "blue")
    image.info["judge_key"] = "img-blue"

    async def scenario() -> Any:
        await fleet.yes_no([YesNoQuery("i", "q?", image, image_key="img-blue")])
        return await fleet.generate([[Message.user("i", image, "why?")]], 64)

    generations = _run(fleet, scenario)
    assert json.loads(generations[0].text)["rating"] == "Yes"
    # The Yes/No query and the chat about the image went to the same replica.
    assert {a.chat_count, b.chat_count} == {0, 2}


# -- the command line: --server repeated -------------------------------------------------

POLICY = """\
name: colours
rules:
  - id: no-red
    text: Images must not show a red shape.
    preconditions:
      - a red shape
"""


def _cli(*args: str) -> tuple[int, str, str]:
    import contextlib
    import io

    from judge.cli import main

    out, err = io.StringIO(), io.StringIO()
    code = 0
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            main(list(args))
        except SystemExit as done:
            code = int(done.code or 0)
    return code, out.getvalue(), err.getvalue()


def test_judge_with_server_repeated_uses_the_fleet(
    misbehaving_server: Any, down_url: str, tmp_path: Any
) -> None:
    from judge.constitution import Constitution

    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY)
    constitution = Constitution.load(policy)
    constitution.compile(None)  # a hand-written chain: no model needed
    constitution.save_lock()
    images = []
    for n in range(4):
        path = tmp_path / f"img{n}.png"
        Image.new("RGB", (24, 24), (200, 20 * n, 20)).save(path)
        images.append(str(path))
    a, b = misbehaving_server(), misbehaving_server()
    common = ["--constitution", str(policy), "--relevance", "off", "--locator", "off",
              "--store", str(tmp_path / "s.db"), "--json"]
    code, out, err = _cli(*images, *common, "--server", a.url, "--server", b.url)
    assert code == 1, err  # the fake says Yes: unsafe
    document = json.loads(out)
    assert {v["run"]["backend"] for v in document["verdicts"]} == {"vllm-fleet"}
    assert a.chat_count > 0 and b.chat_count > 0
    # A replica that is down at the start is left out; the other judges every image.
    code, out, err = _cli(*images, *common, "--server", down_url, "--server", a.url)
    assert code == 1, err
    assert all(v["outcome"] == "unsafe" for v in json.loads(out)["verdicts"])
    # Every replica down: each image undecided with the reason, exit code 3, no traceback.
    code, out, err = _cli(*images, *common, "--server", down_url, "--server", "http://127.0.0.1:9")
    assert code == 3 and "Traceback" not in err, err
    verdicts = json.loads(out)["verdicts"]
    assert {v["outcome"] for v in verdicts} == {"undecided"}
    assert "no server of the fleet can be used" in json.dumps(verdicts)


def test_doctor_checks_every_replica(misbehaving_server: Any) -> None:
    a, b = misbehaving_server(), misbehaving_server(vision=False)
    code, out, err = _cli("doctor", "--server", a.url, "--server", b.url)
    assert code == 5, out + err  # the replica that takes no image: NoVisionError's code
    assert a.url in out and b.url in out
