"""judge: a zero-shot image-safety judge (CLUE) over a multimodal LLM.

The public API. Everything else in the package is internal and may change.

    from judge import Constitution, Judge
    with Judge(Constitution.load("policy.yaml"), server="http://127.0.0.1:8000/v1") as j:
        verdict = j.judge("photo.png")
        report = run_cases(j, "policy.tests.yaml")     # a policy's cases (judge.policy)
    changes = diff_policies("old/policy.yaml", "policy.yaml")
"""

from __future__ import annotations

__version__ = "0.1.0"

from judge.constitution import Constitution, Lock, load_lock, write_lock
from judge.engine import (
    AlternativeEvidence,
    Box,
    Judge,
    JudgeOptions,
    PreconditionEvidence,
    RuleVerdict,
    RunInfo,
    Verdict,
)
from judge.errors import (
    BackendError,
    ConstitutionError,
    DatasetError,
    ImageError,
    InputError,
    JudgeError,
    LockError,
    ModelCapabilityError,
    ReviewError,
)
from judge.models import Backend, YesNoQuery, YesNoResult, load_backend
from judge.policy import (
    CaseResult,
    CasesReport,
    Coverage,
    PolicyDiff,
    Relation,
    RuleDiff,
    SetDiff,
    diff_on,
    diff_policies,
    load_cases,
    run_cases,
)
from judge.store import Store
from judge.thresholds import ThresholdOverrides, Thresholds

__all__ = [
    "AlternativeEvidence",
    "Backend",
    "BackendError",
    "Box",
    "CaseResult",
    "CasesReport",
    "Constitution",
    "ConstitutionError",
    "Coverage",
    "DatasetError",
    "ImageError",
    "InputError",
    "Judge",
    "JudgeError",
    "JudgeOptions",
    "Lock",
    "LockError",
    "ModelCapabilityError",
    "PolicyDiff",
    "PreconditionEvidence",
    "Relation",
    "ReviewError",
    "RuleDiff",
    "RuleVerdict",
    "RunInfo",
    "SetDiff",
    "Store",
    "ThresholdOverrides",
    "Thresholds",
    "Verdict",
    "YesNoQuery",
    "YesNoResult",
    "__version__",
    "diff_on",
    "diff_policies",
    "load_backend",
    "load_cases",
    "load_lock",
    "run_cases",
    "write_lock",
]
