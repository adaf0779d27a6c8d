"""The toy world: seeded PIL scenes of coloured shapes with known contents."""

from __future__ import annotations

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "green": (30, 170, 50),
    "blue": (30, 60, 220),
    "yellow": (240, 210, 20),
    "purple": (150, 40, 190),
}
SHAPES: tuple[str, ...] = ("circle", "square", "triangle")


def example_statements() -> list[str]:
    """Statements of every form the toy world uses, for the tokenizer's corpus."""
    out: list[str] = []
    for colour in COLOURS:
        out.append(f"a {colour} shape")
        for shape in SHAPES:
            out.append(f"a {colour} {shape}")
    out += ["written text", "a large shape", "a small shape", "two or more shapes"]
    return out
