"""`judge bench` section "geometry": how a model's token geometry meets the prefix cache.

For the model on the server (the toy VLM, a tiny family build such as `tiny-gemma3`, or
any served model), on images sent as the engine sends them (resized once to the back
end's pixel budget):

* image tokens: what one image adds to a prompt (its placeholders and markers), from the
  server's /tokenize with and without the image;
* shared prefix: the tokens two questions about one image share ([chat head]
  [instructions][image][the question's head]), also from /tokenize;
* prefix-cache hit: `cached_tokens / prompt_tokens` of the second statement about one
  image, after the first computed it, beside its limit (the shared prefix over the
  prompt) and the block size that rounds it down;
* computed / ideal: every distinct statement of the policy about each of a few images,
  sent through the back end as the engine sends them (the first question about an image
  alone, the rest after it), against the ideal of `judge.bench.run.prefill_of` (each
  image's prefix once, plus each statement's own tokens). No relevance scan, locator or
  priors: this is the model's geometry, not the procedure (the prefill section measures
  the whole procedure).

It needs nothing but the served model, so it runs for random-weight builds, whose
answers mean nothing but whose tokens are those of the real family.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import httpx
from PIL import Image

from judge import queries
from judge.bench.probes import (
    RecordingBackend,
    server_block_size,
    server_root,
    tokenize_chat,
)
from judge.images import fit_pixels

GEOMETRY_SEED = 600_000
GEOMETRY_IMAGES = 4
HIT_TARGET = 0.80  # the prefill section's cache target, for one second statement


@dataclass
class Geometry:
    """One model's geometry on one server (JSON-ready through `asdict`)."""

    model: str
    block_size: int | None
    image_size: tuple[int, int]  # as sent, after the pixel budget
    image_tokens: int | None
    prefix_tokens: int | None
    second_prompt: int  # prompt tokens of the second statement about one image
    second_cached: int  # of which served from the prefix cache
    statements: int  # distinct statements asked about each image
    images: int
    computed: int
    ideal: int | None
    seconds: float

    @property
    def hit(self) -> float | None:
        return self.second_cached / self.second_prompt if self.second_prompt else None

    @property
    def hit_limit(self) -> float | None:
        """The most a prefix cache could serve of the second statement: its prefix."""
        if self.prefix_tokens is None or not self.second_prompt:
            return None
        return self.prefix_tokens / self.second_prompt

    @property
    def block_granular(self) -> int | None:
        """The cached tokens whole blocks allow: the prefix rounded down to a block."""
        if self.prefix_tokens is None or not self.block_size:
            return None
        return (self.prefix_tokens // self.block_size) * self.block_size

    @property
    def computed_over_ideal(self) -> float | None:
        return self.computed / self.ideal if self.ideal else None

    def as_json(self) -> dict[str, Any]:
        out = asdict(self)
        out.update(hit=self.hit, hit_limit=self.hit_limit,
                   block_granular_cached=self.block_granular,
                   computed_over_ideal=self.computed_over_ideal)
        return out


def served_name(url: str) -> str | None:
    """The first model the server lists at /v1/models (None when it lists none)."""
    try:
        response = httpx.get(f"{server_root(url)}/v1/models", timeout=10.0)
        response.raise_for_status()
        return str(response.json()["data"][0]["id"])
    except (httpx.HTTPError, KeyError, IndexError, ValueError):
        return None


def image_tokens(url: str, model: str, image: Image.Image) -> int | None:
    """Tokens `image` adds to a question, from the server's /tokenize (None without it)."""
    query = queries.visibility_query("a red shape", image)
    try:
        with_image = tokenize_chat(url, model, query.instructions, query.question, image)
        without = tokenize_chat(url, model, query.instructions, query.question, None)
    except (httpx.HTTPError, KeyError, ValueError):
        return None
    return len(with_image) - len(without)


def lock_statements(lock: Any) -> list[str]:
    """Every distinct statement of the policy's enabled rules, in order of appearance."""
    seen: dict[str, None] = {}
    for rule in lock.enabled_rules():
        for pre in rule.preconditions:
            for alternative in pre.any_of:
                seen.setdefault(alternative, None)
    return list(seen)


async def measure_geometry(
    backend: RecordingBackend,
    url: str,
    statements: Sequence[str],
    reset: Any,
    n_images: int = GEOMETRY_IMAGES,
) -> Geometry:
    """Measure the served model's geometry (see the module docstring).

    Args:
        backend: a recording back end over the server.
        url: the server's base URL (for /tokenize, /metrics and the cache reset).
        statements: the statements to ask about each image (two at least).
        reset: `reset_prefix_cache(url) -> bool`, called before each measurement.
    """
    from judge.bench.run import PrefixLength, prefill_of, scenes

    if len(statements) < 2:
        statements = [*statements, "a red shape", "written text"][:2]
    model = backend.model_id or served_name(url) or ""
    budget = backend.max_image_pixels
    images = [(f"geometry-{key}", fit_pixels(image, budget))
              for key, image in scenes(GEOMETRY_SEED, n_images + 1)]
    probe_key, probe = images[0]
    tokens = image_tokens(url, model, probe)
    prefix = PrefixLength(url, model)

    # The second statement about one image, once the first has computed its prefix.
    reset(url)
    first = queries.visibility_query(statements[0], probe, probe_key)
    second = queries.visibility_query(statements[1], probe, probe_key)
    await backend.yes_no([first])
    (answer,) = await backend.yes_no([second])

    # Every statement about each image, as the engine sends them.
    reset(url)
    backend.recording.clear()
    started = time.perf_counter()
    for key, image in images[1:]:
        await backend.yes_no([queries.visibility_query(s, image, key) for s in statements])
    seconds = time.perf_counter() - started
    pre = prefill_of(list(backend.recording.queries), n_images, prefix)
    return Geometry(
        model=model,
        block_size=server_block_size(url),
        image_size=probe.size,
        image_tokens=tokens,
        prefix_tokens=prefix(probe.size),
        second_prompt=answer.prompt_tokens,
        second_cached=answer.cached_tokens,
        statements=len(statements),
        images=n_images,
        computed=pre.computed,
        ideal=pre.ideal,
        seconds=seconds,
    )


def add_geometry_rows(result: Any, g: Geometry) -> None:
    """The section's rows and its `summary["geometry"]` in a `BenchResult`."""
    width, height = g.image_size
    result.add("geometry", "model (served)", g.model)
    result.add("geometry", "KV-cache block size (server)",
               "unknown" if g.block_size is None else f"{g.block_size} tokens")
    result.add("geometry", f"image tokens ({width}x{height} as sent)",
               "n/a" if g.image_tokens is None else str(g.image_tokens))
    result.add("geometry", "shared prefix (instructions + image) tokens",
               "n/a" if g.prefix_tokens is None else str(g.prefix_tokens))
    limit = "n/a" if g.hit_limit is None else f"limit {g.hit_limit:.2f}"
    granular = "" if g.block_granular is None else f", whole blocks {g.block_granular}"
    result.add("geometry", "prefix-cache hit, 2nd statement about an image",
               f"{g.second_cached}/{g.second_prompt} ({limit}{granular})", g.hit,
               f">= {HIT_TARGET:.0%}", None if g.hit is None else g.hit >= HIT_TARGET)
    result.add("geometry", f"computed / ideal, {g.statements} statements x {g.images} images",
               f"{g.computed}/{g.ideal}" if g.ideal is not None else "n/a (no /tokenize)",
               g.computed_over_ideal)
    result.summary["geometry"] = g.as_json()


def geometry_summary(summary: dict[str, Any]) -> str:
    """The geometry's part of the bench's one-line summary."""
    g = summary.get("geometry")
    if not isinstance(g, dict):
        return "geometry=skipped"
    hit = "n/a" if g.get("hit") is None else f"{g['hit']:.2f}"
    over = "n/a" if g.get("computed_over_ideal") is None else f"{g['computed_over_ideal']:.2f}"
    return (f"geometry={g.get('image_tokens')} img tok, hit2={hit}, "
            f"computed/ideal={over} (block {g.get('block_size') or '?'})")
