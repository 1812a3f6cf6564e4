"""One router per resource: devices, releases, rollouts, admin (fleet-wide lists, audit, health)."""
