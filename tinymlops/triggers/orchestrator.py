"""Is there a Prefect server to queue runs on? Asked once, before the receiver (or `deploy`)
starts: without one, runs would go to a throw-away ephemeral database and be lost."""

from __future__ import annotations

from tinymlops.errors import WebhookError
from tinymlops.settings import PrefectEnv


def require_prefect(env: PrefectEnv | None = None, timeout: float = 3.0) -> str:
    """The Prefect API URL, once its /health answers; else WebhookError, one line."""
    import httpx

    url = (env or PrefectEnv.from_env()).api_url
    if not url:
        raise WebhookError(
            "PREFECT_API_URL is not set: no Prefect server to queue runs on (start one with `tinymlops serve`)"
        )
    try:
        ok = httpx.get(f"{url.rstrip('/')}/health", timeout=timeout).status_code == 200
    except httpx.HTTPError as exc:
        raise WebhookError(f"no Prefect server reachable at {url} ({type(exc).__name__})") from None
    if not ok:
        raise WebhookError(f"no Prefect server reachable at {url} (/health did not answer 200)")
    return url
