"""Prefect flows of the compliance deletion pipeline."""
