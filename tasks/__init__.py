"""Prefect tasks: thin wrappers that call the library, log to MLflow and make Prefect artifacts."""
