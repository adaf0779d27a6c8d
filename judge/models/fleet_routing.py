"""Which replica of a vLLM fleet gets a query: pure decisions, no network.

Prefix-aware ("affinity") routing: every query about one image goes to one replica, so
that replica's prefix cache holds the image's tokens for all of its statements. The
replica is found by consistent hashing of the image's key on a ring of virtual nodes, so
adding or removing a replica moves only the keys it owned. Load (queries in flight) is the
tie-breaker between cache affinity and balance: a key goes to its owner unless the owner
has more than `load_factor` times the fleet's mean load (rounded up), then to the next
replica on the ring ("consistent hashing with bounded loads", Mirrokni, Thorup and
Zadimoghaddam, 2018).
A key keeps the replica it was first given while that replica stays healthy (a sticky
table), so the later queries about an image follow its first one even when loads shift.

Round-robin routing (the baseline a plain load balancer gives) sends each query to the
next healthy replica in turn, whatever it is about.

The key of a query is its image's key up to the first '#': the engine names a masked view
or a crop of an image "<key>#mask:..." or "<key>#crop:...", and they follow the image.
"""

from __future__ import annotations

import bisect
import hashlib
import itertools
import math
from collections import OrderedDict
from collections.abc import Collection, Sequence
from typing import Literal

Policy = Literal["affinity", "round-robin"]
POLICIES: tuple[Policy, ...] = ("affinity", "round-robin")

# Virtual nodes per replica: enough that two replicas split keys close to evenly.
VNODES = 160
# Keys remembered with the replica they were given.
_STICKY = 65536


def _point(text: str) -> int:
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big")


def base_key(key: str) -> str:
    """The image a key belongs to: "abc#mask:knife" -> "abc"."""
    return key.split("#", 1)[0]


class HashRing:
    """A consistent-hash ring over replica names, `vnodes` points per replica."""

    def __init__(self, names: Sequence[str], vnodes: int = VNODES) -> None:
        if not names:
            raise ValueError("a hash ring needs at least one replica")
        points = sorted(
            (_point(f"{name}#{i}"), index)
            for index, name in enumerate(names)
            for i in range(vnodes)
        )
        self._points = [p for p, _ in points]
        self._owners = [o for _, o in points]
        self.size = len(names)

    def order(self, key: str) -> list[int]:
        """Every replica index once, in ring order from the key's point (owner first)."""
        start = bisect.bisect(self._points, _point(key)) % len(self._points)
        seen: list[int] = []
        for owner in itertools.chain(self._owners[start:], self._owners[:start]):
            if owner not in seen:
                seen.append(owner)
                if len(seen) == self.size:
                    break
        return seen


class Router:
    """Route keys to replica indexes under a policy.

    Args:
        names: the replicas (their URLs); their order is their index.
        policy: "affinity" (consistent hashing, load as tie-breaker) or "round-robin".
        load_factor: how far above the mean load an owner may be before its new keys go
            to the next replica on the ring (affinity only).
    """

    def __init__(
        self, names: Sequence[str], policy: Policy = "affinity", load_factor: float = 1.5
    ) -> None:
        if policy not in POLICIES:
            raise ValueError(f"unknown routing policy {policy!r}; choose {', '.join(POLICIES)}")
        if load_factor < 1.0:
            raise ValueError("load_factor must be at least 1")
        self.policy: Policy = policy
        self.ring = HashRing(names)
        self.load_factor = load_factor
        self._sticky: OrderedDict[str, int] = OrderedDict()
        self._turn = 0

    def choose(
        self,
        key: str,
        loads: Sequence[int],
        healthy: Collection[int],
        exclude: Collection[int] = (),
    ) -> int | None:
        """The replica for `key`; None when no healthy replica is left.

        Args:
            key: the query's key (see `base_key`).
            loads: queries in flight per replica.
            healthy: indexes of the replicas in service.
            exclude: replicas this query already failed on.
        """
        usable = [i for i in range(self.ring.size) if i in healthy and i not in exclude]
        if not usable:
            return None
        if self.policy == "round-robin":
            self._turn += 1
            return usable[self._turn % len(usable)]
        key = base_key(key)
        kept = self._sticky.get(key)
        if kept is not None and kept in usable:
            self._sticky.move_to_end(key)
            return kept
        order = [i for i in self.ring.order(key) if i in usable]
        # Bounded load: at most load_factor x the mean, counting this query (so an idle
        # fleet always takes the owner).
        total = sum(loads[i] for i in usable) + 1
        bound = math.ceil(self.load_factor * total / len(usable))
        chosen = next((i for i in order if loads[i] + 1 <= bound), None)
        if chosen is None:  # every replica is at the bound: the least loaded, ring order
            chosen = min(order, key=lambda i: loads[i])
        self._sticky[key] = chosen
        self._sticky.move_to_end(key)
        while len(self._sticky) > _STICKY:
            self._sticky.popitem(last=False)
        return chosen

    def forget(self, replica: int) -> None:
        """Drop the sticky keys of a replica taken out of service."""
        for key in [k for k, v in self._sticky.items() if v == replica]:
            del self._sticky[key]
