"""Datasets: a registry of named sources, validation, seeded splits and DVC versioning."""
