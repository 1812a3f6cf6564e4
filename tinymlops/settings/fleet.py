"""The fleet server's machine-local settings, from the environment (TINYMLOPS_FLEET_*).

Only what a machine decides lives here: where the fleet database is, whom the server trusts and
its secrets. The rollout policy and the project's vendor come from config files
(tinymlops.fleet.config.FleetSettings puts the two together).
"""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import SecretStr

from tinymlops.errors import ConfigError
from tinymlops.settings.files import Strict

ADMIN_TOKENS = "TINYMLOPS_FLEET_ADMIN_TOKENS"
PROVISIONING_TOKEN = "TINYMLOPS_FLEET_PROVISIONING_TOKEN"


class FleetEnv(Strict):
    """TINYMLOPS_FLEET_DB_URL, TINYMLOPS_FLEET_ADMIN_TOKENS ("name:token,…"),
    TINYMLOPS_FLEET_PROVISIONING_TOKEN, TINYMLOPS_FLEET_TRUST (root public key file),
    TINYMLOPS_FLEET_REVOCATIONS (root-signed revocation list file), TINYMLOPS_FLEET_VENDOR,
    TINYMLOPS_FLEET_EVENTS_URL (a Prefect API URL for drift alarms), TINYMLOPS_FLEET_PUBLIC_URL."""

    db_url: str
    bundle_dir: Path
    admin_tokens: dict[str, SecretStr]
    provisioning_token: SecretStr | None = None
    trust_anchor: Path | None = None
    revocations: Path | None = None
    vendor: str | None = None  # None: configs/devices.yaml's
    events_url: str | None = None  # a Prefect API that receives drift alarms as events
    public_url: str | None = None  # the server as people reach it, for links in alarms

    @classmethod
    def from_env(cls, home: Path) -> FleetEnv:
        tokens: dict[str, SecretStr] = {}
        for item in filter(None, os.environ.get(ADMIN_TOKENS, "").split(",")):
            name, sep, token = item.partition(":")
            if not sep or not name.strip() or not token.strip():
                raise ConfigError(f"{ADMIN_TOKENS}: expected 'name:token[,name:token…]'")
            tokens[name.strip()] = SecretStr(token.strip())
        provisioning = os.environ.get(PROVISIONING_TOKEN)
        trust = os.environ.get("TINYMLOPS_FLEET_TRUST")
        revocations = os.environ.get("TINYMLOPS_FLEET_REVOCATIONS")
        return cls(
            db_url=os.environ.get("TINYMLOPS_FLEET_DB_URL") or f"sqlite:///{Path(home) / 'fleet' / 'fleet.db'}",
            bundle_dir=Path(home) / "fleet" / "bundles",
            admin_tokens=tokens,
            provisioning_token=SecretStr(provisioning) if provisioning else None,
            trust_anchor=Path(trust) if trust else None,
            revocations=Path(revocations) if revocations else None,
            vendor=os.environ.get("TINYMLOPS_FLEET_VENDOR") or None,
            events_url=os.environ.get("TINYMLOPS_FLEET_EVENTS_URL") or None,
            public_url=os.environ.get("TINYMLOPS_FLEET_PUBLIC_URL") or None,
        )
