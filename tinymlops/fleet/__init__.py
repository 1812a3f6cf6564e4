"""Fleet: the rollout engine (pure), ML-aware health gates, telemetry aggregates, and the fleet
server (FastAPI + SQLAlchemy) that devices poll and admins drive.

Import the server pieces from their modules (`tinymlops.fleet.server`), so importing the engine
stays light.
"""

from tinymlops.errors import TinyMLOpsError


class FleetError(TinyMLOpsError):
    """A rollout, a policy or a fleet request is invalid."""
