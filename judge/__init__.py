"""judge: a zero-shot image-safety judge (CLUE) over a multimodal LLM.

The public API. Everything else in the package is internal and may change.

    from judge import Constitution, Judge
    with Judge(Constitution.load("policy.yaml"), server="http://127.0.0.1:8000/v1") as j:
        verdict = j.judge("photo.png")
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
from judge.store import Store
from judge.thresholds import ThresholdOverrides, Thresholds

__all__ = [
    "AlternativeEvidence",
    "Backend",
    "BackendError",
    "Box",
    "Constitution",
    "ConstitutionError",
    "DatasetError",
    "ImageError",
    "InputError",
    "Judge",
    "JudgeError",
    "JudgeOptions",
    "Lock",
    "LockError",
    "ModelCapabilityError",
    "PreconditionEvidence",
    "ReviewError",
    "RuleVerdict",
    "RunInfo",
    "Store",
    "ThresholdOverrides",
    "Thresholds",
    "Verdict",
    "YesNoQuery",
    "YesNoResult",
    "__version__",
    "load_backend",
    "load_lock",
    "write_lock",
]
