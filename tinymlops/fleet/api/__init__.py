"""The fleet server's HTTP API: the only FastAPI importer of the fleet. An app factory, one router
per resource (devices, releases, rollouts, admin), the credential dependencies, and the one place
that maps domain errors (tinymlops.errors) to HTTP status codes (tinymlops.fleet.api.errors)."""

from tinymlops.fleet.api.app import create_app

__all__ = ["create_app"]
