"""The exact relation between two precondition chains, with statements as atoms.

A rule is violated iff AND_i (OR_j s_ij): a monotone formula in conjunctive normal form,
one clause per precondition, one atom per statement. For two such formulas F and G, F
implies G iff every clause C of G contains some clause D of F (D ⊆ C):

* if D ⊆ C, every assignment that makes F true makes D, hence C, true;
* if no clause of F lies inside C, make every statement of C false and, for each clause
  of F, one of its statements outside C true: F is true and C (so G) is false.

The second case is also the counterexample (`countermodel`): the set of statements that
are true in an image one version flags and the other does not. It is built greedily to be
small (each statement chosen makes as many clauses of F true as it can).

Statements are compared after `normalise`: whitespace collapsed (and trimmed) and case
folded, so "A  blue shape" and "a blue shape" are one atom. Nothing more: "a blue shape"
and "a blue object" are two atoms, though in images one may imply the other, so the
relation is exact for the formulas, and says nothing of what statements mean.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Literal

from pydantic import BaseModel, ConfigDict

from judge.constitution.schema import PreconditionSpec

Clause = frozenset[str]
Formula = frozenset[Clause]
Chain = Sequence[PreconditionSpec] | Sequence[Sequence[str]]
RelationKind = Literal["equivalent", "stricter", "looser", "incomparable"]


def normalise(statement: str) -> str:
    """The atom a statement stands for: whitespace collapsed and trimmed, case folded."""
    return " ".join(statement.split()).casefold()


def _alternatives(pre: PreconditionSpec | Sequence[str]) -> Sequence[str]:
    return pre.any_of if isinstance(pre, PreconditionSpec) else pre


def formula(chain: Chain) -> Formula:
    """The chain as a set of clauses (preconditions), each a set of atoms (statements)."""
    return frozenset(frozenset(normalise(s) for s in _alternatives(pre)) for pre in chain)


def atoms(f: Formula) -> frozenset[str]:
    """Every atom of `f`."""
    return frozenset(a for clause in f for a in clause)


def satisfied(f: Formula, true: Iterable[str]) -> bool:
    """Whether `f` holds when exactly the atoms in `true` are true."""
    on = set(true)
    return all(clause & on for clause in f)


def _ordered(f: Formula) -> list[Clause]:
    return sorted(f, key=lambda c: (len(c), sorted(c)))


def countermodel(f: Formula, g: Formula) -> frozenset[str] | None:
    """A set of true atoms under which `f` holds and `g` does not; None iff f implies g."""
    for clause in _ordered(g):
        if any(d <= clause for d in f):
            continue  # f implies this clause of g
        true: set[str] = set()
        open_ = [d for d in _ordered(f)]
        while open_:
            # Every open clause has an atom outside `clause` (none lies inside it).
            candidates = {a for d in open_ for a in d - clause}
            best = min(candidates, key=lambda a: (-sum(a in d for d in open_), a))
            true.add(best)
            open_ = [d for d in open_ if best not in d]
        return frozenset(true)
    return None


def implies(f: Formula, g: Formula) -> bool:
    """Whether every assignment that makes `f` true makes `g` true."""
    return countermodel(f, g) is None


class Relation(BaseModel):
    """How a changed chain relates to the old one.

    `kind`: "stricter" (every image the old rule flags, the new one flags too, and it can
    flag more), "looser" (the reverse), "equivalent" or "incomparable". `new_only` is an
    example for a stricter or incomparable change: the statements true in an image that
    the new rule flags and the old does not (every other statement false); `old_only` the
    same the other way. Statements are shown as written (the first version's wording).
    """

    model_config = ConfigDict(extra="forbid")

    kind: RelationKind
    new_only: list[str] | None = None
    old_only: list[str] | None = None


def relation(old: Chain, new: Chain) -> Relation:
    """The exact relation of chain `new` to chain `old`, with examples."""
    shown: dict[str, str] = {}
    for chain in (old, new):
        for pre in chain:
            for s in _alternatives(pre):
                shown.setdefault(normalise(s), s)
    f_old, f_new = formula(old), formula(new)
    new_only = countermodel(f_new, f_old)
    old_only = countermodel(f_old, f_new)

    def words(model: frozenset[str] | None) -> list[str] | None:
        return None if model is None else [shown.get(a, a) for a in sorted(model)]

    if new_only is None and old_only is None:
        kind: RelationKind = "equivalent"
    elif old_only is None:
        kind = "stricter"
    elif new_only is None:
        kind = "looser"
    else:
        kind = "incomparable"
    return Relation(kind=kind, new_only=words(new_only), old_only=words(old_only))
