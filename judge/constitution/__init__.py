"""Constitutions: the authored policy (YAML), its validation, the compiler, and locks.

>>> from judge.constitution import Constitution
>>> policy = Constitution.load("constitutions/clue.yaml")
>>> lock = policy.lock                      # LockError if missing or stale
>>> lock = policy.compile(backend)          # re-compiles only changed rules
"""

from __future__ import annotations

from judge.constitution.compiler import (
    CompileOptions,
    CompileReport,
    RuleReport,
    compile_benchmark,
    compile_spec,
)
from judge.constitution.constitution import Constitution
from judge.constitution.loader import load_spec, parse_spec
from judge.constitution.lockfile import dump_lock, load_lock, lock_path_for, write_lock
from judge.constitution.schema import (
    CompiledRule,
    ConstitutionSpec,
    Lock,
    Objectiveness,
    PreconditionSpec,
    RuleSpec,
)

__all__ = [
    "CompileOptions",
    "CompileReport",
    "CompiledRule",
    "Constitution",
    "ConstitutionSpec",
    "Lock",
    "Objectiveness",
    "PreconditionSpec",
    "RuleReport",
    "RuleSpec",
    "compile_benchmark",
    "compile_spec",
    "dump_lock",
    "load_lock",
    "load_spec",
    "lock_path_for",
    "parse_spec",
    "write_lock",
]
