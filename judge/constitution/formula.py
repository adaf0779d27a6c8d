"""A compiled rule as the formula the judge evaluates, in words an author can check:

    violated iff [a person is visible] AND ([the chest is bare] OR [the chest is covered
    only by a transparent fabric])

Each bracket is one statement exactly as the model will be asked about it, so a statement
that a comma split in two, or that asserts an absence, shows at a glance.
"""

from __future__ import annotations

from collections.abc import Sequence

from judge.constitution.schema import PreconditionSpec


def precondition_formula(pre: PreconditionSpec) -> str:
    """`[a]`, or `([a] OR [b])` for alternatives."""
    parts = [f"[{statement}]" for statement in pre.any_of]
    return parts[0] if len(parts) == 1 else "(" + " OR ".join(parts) + ")"


def formula(chain: Sequence[PreconditionSpec]) -> str:
    """`violated iff P1 AND P2 ...` for a precondition chain."""
    return "violated iff " + " AND ".join(precondition_formula(p) for p in chain)
