"""Batch judging on Ray Data (`judge batch`): actors each holding one `Judge`, over
files, folders, manifests and Parquet, into resumable Parquet output."""

from judge.batch.actor import ActorSpec, JudgeActor
from judge.batch.output import read_done
from judge.batch.run import (
    RETRY_DEFAULT,
    BatchOptions,
    BatchReport,
    Interrupted,
    parse_retry,
    run_batch,
)

__all__ = [
    "RETRY_DEFAULT",
    "ActorSpec",
    "BatchOptions",
    "BatchReport",
    "Interrupted",
    "JudgeActor",
    "parse_retry",
    "read_done",
    "run_batch",
]
