"""Git-push webhooks: verify the delivery, filter it, de-duplicate it, then hand it to a trigger.

The trigger is a plain callable (`PushEvent -> run id`) injected by the caller, so this package
never imports Prefect; `flows/webhook.py` supplies the one that calls `run_deployment`.
"""

from tinymlops.triggers.app import Trigger, create_app
from tinymlops.triggers.config import WebhookConfig, WebhookEnv
from tinymlops.triggers.events import PushEvent
from tinymlops.triggers.store import DeliveryStore

__all__ = ["DeliveryStore", "PushEvent", "Trigger", "WebhookConfig", "WebhookEnv", "create_app"]
