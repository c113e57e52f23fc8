"""Prefect tasks: thin wrappers that call :mod:`delete` and do the I/O.

DVC, MLflow, Evidently and files live here, never in the core library.
"""
