"""Fleet: the rollout engine, health gates, policy and telemetry (pure domain modules), the store
(persistence), the service (what the API does, over the store), the API (tinymlops.fleet.api, the
only FastAPI importer) and the clients.

Import the pieces from their modules, so importing the engine stays light.
"""

from tinymlops.errors import FleetError

__all__ = ["FleetError"]
