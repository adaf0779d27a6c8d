"""Evaluation against labelled sets: `judge eval` and `judge calibrate` as a library.

    >>> from judge.evaluate import load_dataset, EvalSpec, run_evaluation
    >>> data = load_dataset("eval/toy/manifest.jsonl").select(split="test")

Modules: `datasets` (the four set formats, category mapping, hashing), `metrics` (pure
functions), `baselines` and `ablations` (what runs beside the method), `runs` (resumable
runs in the SQLite store), `report` (JSON, Markdown, HTML, progress), `calibrate`.
"""

from judge.evaluate.ablations import ABLATIONS, METHODS, JudgeMethod
from judge.evaluate.baselines import BASELINES, Baseline, Judged
from judge.evaluate.calibrate import CalibrationResult, CalibrationSpec, run_calibration
from judge.evaluate.datasets import CategoryMapping, Example, LabelledSet, load_dataset
from judge.evaluate.evaluation import EvalSpec, run_evaluation, write_reports
from judge.evaluate.metrics import Counts, Scored, verdict_score

__all__ = [
    "ABLATIONS",
    "BASELINES",
    "METHODS",
    "Baseline",
    "CalibrationResult",
    "CalibrationSpec",
    "CategoryMapping",
    "Counts",
    "EvalSpec",
    "Example",
    "JudgeMethod",
    "Judged",
    "LabelledSet",
    "Scored",
    "load_dataset",
    "run_calibration",
    "run_evaluation",
    "verdict_score",
    "write_reports",
]
