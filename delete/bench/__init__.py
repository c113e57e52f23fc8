"""Benchmark: DELETE against every registered method, with Retrain as the reference.

``python -m delete.bench [--quick] [--dataset mnist5k|digits] [--out DIR] [--seeds N]
[--methods ...] [--device auto]`` writes ``results.csv``, ``summary.csv``, ``summary.md`` and
``per_class_accuracy.png``; :func:`run_benchmark` is the same from Python.

Example:
    >>> from delete.bench import BenchConfig
    >>> BenchConfig().seeds
    (0, 1, 2)
"""

from __future__ import annotations

from delete.bench.cli import main
from delete.bench.config import BenchConfig, BenchResult
from delete.bench.runner import RESULT_COLUMNS, method_hparams, run_benchmark
from delete.bench.summary import SUMMARY_METRICS

__all__ = [
    "RESULT_COLUMNS",
    "SUMMARY_METRICS",
    "BenchConfig",
    "BenchResult",
    "main",
    "method_hparams",
    "run_benchmark",
]
