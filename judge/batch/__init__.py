"""Batch judging on Ray Data (`judge batch`): actors each holding one `Judge`, over
files, folders, manifests and Parquet, into resumable Parquet output."""

from judge.batch.actor import ActorSpec, JudgeActor
from judge.batch.output import read_done
from judge.batch.run import BatchOptions, BatchReport, run_batch

__all__ = ["ActorSpec", "BatchOptions", "BatchReport", "JudgeActor", "read_done", "run_batch"]
