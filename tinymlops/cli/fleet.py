"""`tinymlops fleet …`: the fleet server (uvicorn) and its schema migrations."""

from __future__ import annotations

from pathlib import Path

import typer

app = typer.Typer(help="Fleet server and staged, ML-gated rollouts.", no_args_is_help=True)
RootOpt = typer.Option(Path("."), "--root", help="project directory (configs/rollout.yaml)")
DbOpt = typer.Option(None, "--db-url", help="SQLAlchemy URL; default TINYMLOPS_FLEET_DB_URL or SQLite under home")


def _settings(root: Path, db_url: str | None, **overrides: object):
    from tinymlops.fleet.config import FleetSettings

    settings = FleetSettings.for_project(root, db_url=db_url or None, **overrides)
    _check_url(settings.db_url)
    return settings


def _check_url(url: str) -> None:
    """A database URL SQLAlchemy can use, or one line saying why not."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError

    from tinymlops.errors import ConfigError

    try:
        parsed = make_url(url)
        parsed.get_dialect()
    except (ArgumentError, NoSuchModuleError, ValueError):
        raise ConfigError(
            "fleet database URL is not a usable SQLAlchemy URL (e.g. sqlite:///path or postgresql://…)"
        ) from None


def _safe_url(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


def _migrate(url: str) -> str:
    """Bring the schema up to date; a database that cannot be reached is one line."""
    from sqlalchemy.exc import SQLAlchemyError

    from tinymlops.errors import ConfigError
    from tinymlops.fleet.store import make_engine
    from tinymlops.fleet.store import migrate as run

    try:
        engine = make_engine(url)
    except (SQLAlchemyError, ValueError, ImportError) as exc:
        raise ConfigError(f"fleet database {_safe_url(url)}: {type(exc).__name__}") from None
    try:
        return run(engine)
    except SQLAlchemyError as exc:
        why = " ".join(str(getattr(exc, "orig", exc) or type(exc).__name__).split())[:200]
        raise ConfigError(f"fleet database {_safe_url(url)} unusable: {why}") from None
    finally:
        engine.dispose()


@app.command("migrate")
def migrate(root: Path = RootOpt, db_url: str | None = DbOpt) -> None:
    """Create or upgrade the fleet database schema (Alembic) and print the revision."""
    settings = _settings(root, db_url)
    revision = _migrate(settings.db_url)
    typer.echo(f"fleet database {_safe_url(settings.db_url)} at revision {revision}")


@app.command("serve")
def serve(
    host: str = typer.Option("127.0.0.1", "--host", help="interface to listen on (0.0.0.0 in a container)"),
    port: int = typer.Option(8090, "--port", help="TCP port"),
    root: Path = RootOpt,
    db_url: str | None = DbOpt,
    trust: Path | None = typer.Option(None, "--trust", help="root public key bundles must chain to"),
    revocations: Path | None = typer.Option(None, "--revocations", help="root-signed revocation list file"),
    vendor: str | None = typer.Option(None, "--vendor", help="class ids' vendor; default: configs/devices.yaml's"),
    workers: int = typer.Option(1, "--workers", min=1, help="uvicorn worker processes"),
    tick_seconds: float = typer.Option(5.0, "--tick-seconds", help="rollout judging interval; 0 turns it off"),
) -> None:
    """Serve the device and admin APIs (OpenAPI at /docs and /openapi.json).

    Admin tokens: TINYMLOPS_FLEET_ADMIN_TOKENS="name:token,…"; devices enrol with
    TINYMLOPS_FLEET_PROVISIONING_TOKEN."""
    import uvicorn

    from tinymlops.errors import ConfigError
    from tinymlops.fleet.api import create_app

    settings = _settings(root, db_url, trust_anchor=trust, revocations=revocations, vendor=vendor)
    settings = settings.model_copy(update={"tick_seconds": tick_seconds if tick_seconds > 0 else None})
    if settings.trust_anchor is not None and not settings.trust_anchor.is_file():
        raise ConfigError(f"{settings.trust_anchor}: trust anchor file not found")
    if settings.revocations is not None and not settings.revocations.is_file():
        raise ConfigError(f"{settings.revocations}: revocation list file not found")
    if not settings.admin_tokens:
        typer.echo("warning: TINYMLOPS_FLEET_ADMIN_TOKENS is not set: the admin API refuses everyone", err=True)
    _migrate(settings.db_url)
    typer.echo(f"fleet server on http://{host}:{port} (OpenAPI: /docs), database {_safe_url(settings.db_url)}")
    if workers == 1:
        uvicorn.run(create_app(settings), host=host, port=port, log_level="warning")
        return
    # Worker processes get the resolved settings on their stdin (never through the environment),
    # and share the port with SO_REUSEPORT.
    import signal
    import threading

    from tinymlops.fleet.api.serving import serve_fleet

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with serve_fleet(settings, workers=workers, threads=40, host=host, port=port):
        try:
            stop.wait()
        except KeyboardInterrupt:
            pass


@app.command("simulate")
def simulate(
    devices: int = typer.Option(200, "--devices", min=1, help="simulated fleet size"),
    bad_model: bool = typer.Option(False, "--bad-model", help="release a degraded model (last layer scrambled)"),
    fail_install: float = typer.Option(0.0, "--fail-install", min=0, max=1, help="share whose new image won't boot"),
    power_loss: float = typer.Option(0.0, "--power-loss", min=0, max=1, help="share losing power mid-download"),
    slow: float = typer.Option(0.0, "--slow", min=0, max=1, help="share running 1.5x slower"),
    drift: float = typer.Option(0.0, "--drift", min=0, max=1, help="share seeing drifted inputs"),
    bundles: Path | None = typer.Option(None, "--bundles", help="release dir of <class>.bundle files (needs --trust)"),
    rollback_bundles: Path | None = typer.Option(None, "--rollback-bundles", help="previous model, higher sequence"),
    trust: Path | None = typer.Option(None, "--trust", help="root public key the bundles chain to"),
    firmware_share: float = typer.Option(0.02, "--firmware-share", min=0, max=1, help="devices on the real firmware"),
    seed: int = typer.Option(0, "--seed"),
    root: Path = RootOpt,
    report: Path | None = typer.Option(None, "--report", help="write the final report JSON and a PNG next to it"),
) -> None:
    """A staged rollout on a simulated fleet against a real fleet server (loopback, accelerated clock).

    Without --bundles a quick signed release of the default model is built in a temp dir (params.yaml,
    throwaway dev keys). Exit 1 unless the rollout succeeds."""
    import tempfile

    from rich.console import Console
    from rich.table import Table

    from tinymlops.errors import ConfigError
    from tinymlops.fleet.policy import RolloutPolicy
    from tinymlops.fleetsim.simulation import plot_states, simulate_rollout
    from tinymlops.fleetsim.simulator import Faults, SimulationConfig
    from tinymlops.util.io import write_json

    console = Console()
    faults = Faults(fail_install=fail_install, power_loss=power_loss, slow=slow, drift=drift)
    policy = RolloutPolicy.load_from(root)
    with tempfile.TemporaryDirectory(prefix="tinymlops-simulate-") as tmp:
        work = Path(tmp)
        if bundles is None:
            release, back, trust, profiles, field = _quick_release(root, work, bad_model, console)
            rollback_id: str | None = "previous"
        else:
            if trust is None or not trust.is_file():
                raise ConfigError("--trust: the root public key file is required with --bundles")
            if bad_model:
                raise ConfigError("--bad-model builds its own release: leave out --bundles")
            release = {p.stem: p for p in sorted(bundles.glob("*.bundle"))}
            if not release:
                raise ConfigError(f"--bundles {bundles}: no *.bundle files")
            back = {p.stem: p for p in sorted(rollback_bundles.glob("*.bundle"))} if rollback_bundles else None
            rollback_id = "previous" if back else None
            from tinymlops.device.profiles import load_profiles

            profiles = [p for p in load_profiles(root) if p.device_class in release]
            field = None
        config = SimulationConfig(
            devices=devices,
            classes=sorted(release),
            seed=seed,
            faults=faults,
            firmware_share=firmware_share,
            profiles=profiles,
            field_data=field,
        )

        def show(index: int, stats, rep) -> None:
            table = Table(title=f"round {index + 1}: {rep.decision} → {rep.status}", title_justify="left")
            for col in ("group", "assigned", "confirmed", "failed", "reverted", "installed now", "by sequence"):
                table.add_column(col)
            c = rep.counts
            table.add_row(
                str(rep.group_name),
                str(c.assigned),
                str(c.confirmed),
                str(c.failed),
                str(c.reverted),
                str(stats.installed),
                ", ".join(f"{k}: {v}" for k, v in sorted(stats.by_sequence.items())),
            )
            console.print(table)
            console.print(f"  {rep.reason}")

        result = simulate_rollout(
            "release",
            release,
            rollback_id,
            back,
            trust,
            config,
            policy,
            work / "fleet",
            on_round=show,
        )
    console.print(
        f"rollout {result.status} ({result.decision}) on {result.devices:,} devices "
        f"({result.firmware_devices:,} on the real firmware) in {result.seconds:.1f} s; "
        f"final states {result.states[-1]}"
    )
    if report is not None:
        write_json(report, result.model_dump(mode="json"))
        plot_states(result, report.with_suffix(".png"))
        console.print(f"report: {report}, plot: {report.with_suffix('.png')}")
    if result.status != "succeeded":
        raise typer.Exit(1)


@app.command("devices")
def devices(
    url: str = typer.Option(..., "--url", help="fleet server base URL, e.g. http://127.0.0.1:8090"),
    count: int = typer.Option(100, "--devices", min=1, help="simulated devices, spread over the device classes"),
    trust: Path = typer.Option(..., "--trust", help="root public key the devices verify bundles against"),
    interval: float = typer.Option(5.0, "--interval", min=0.05, help="seconds between polls"),
    seconds: float | None = typer.Option(None, "--seconds", min=0, help="stop after this long (default: Ctrl-C)"),
    prefix: str = typer.Option("sim", "--prefix", help="device ids' prefix: one per process sharing a server"),
    seed: int = typer.Option(0, "--seed"),
    root: Path = RootOpt,
) -> None:
    """Simulated devices for a fleet server running on its own, on the real clock: they enrol with
    TINYMLOPS_FLEET_PROVISIONING_TOKEN, then poll, install (download, verify, report) and send
    telemetry every --interval — devices to roll out to with the rollout flow's `fleet_url`."""
    import time

    from rich.console import Console

    from tinymlops.device.profiles import load_profiles
    from tinymlops.errors import ConfigError
    from tinymlops.fleetsim.farm import DeviceFarm
    from tinymlops.fleetsim.simulator import SimulationConfig
    from tinymlops.settings import Environment, FleetEnv

    secret = FleetEnv.from_env(Environment.from_env(root).home).provisioning_token
    token = secret.get_secret_value() if secret else None
    if not token:
        raise ConfigError("TINYMLOPS_FLEET_PROVISIONING_TOKEN is not set: devices need it to enrol")
    if not trust.is_file():
        raise ConfigError(f"{trust}: trust anchor file not found")
    profiles = load_profiles(root)
    classes = sorted({p.device_class for p in profiles})
    config = SimulationConfig(devices=count, device_prefix=prefix, classes=classes, seed=seed, window_seconds=interval)
    console = Console()
    with DeviceFarm(url, token, config, trust, vendor=profiles[0].vendor, interval_seconds=interval) as farm:
        console.print(f"{count:,} devices of {len(classes)} classes enrolled at {url}; Ctrl-C stops them")
        deadline = None if seconds is None else time.monotonic() + seconds
        try:
            with console.status("polling…") as status:
                while deadline is None or time.monotonic() < deadline:
                    time.sleep(min(interval, 1.0))
                    if farm.rounds:
                        on = ", ".join(f"seq {k}: {v}" for k, v in sorted(farm.rounds[-1].by_sequence.items()))
                        status.update(f"round {len(farm.rounds)}: {on}; server away {farm.interrupted}×")
        except KeyboardInterrupt:
            pass
    console.print(f"stopped after {len(farm.rounds)} rounds")


def _quick_release(root: Path, work: Path, bad: bool, console):
    """Train and quantize the default model (params.yaml), sign a release per fitting class with
    throwaway dev keys: the old model re-signed (sequence 3) is the rollback."""
    from datetime import datetime, timedelta, timezone

    from tinymlops.bundle import init_keys, load_signer
    from tinymlops.device.firmware import fit_problems
    from tinymlops.device.profiles import load_profiles
    from tinymlops.fleetsim.simulation import build_release
    from tinymlops.ml.data.split import load_split
    from tinymlops.ml.degrade import degrade_model
    from tinymlops.pipeline import stages
    from tinymlops.settings import load_params

    params = load_params(Path(root) / "params.yaml")
    with console.status("building a quick release of the default model (data, train, int8)…"):
        stages.ingest(params, Path(root), work / "raw")
        stages.prepare(params, work / "raw", work / "prepared")
        stages.train(params, work / "prepared", work / "keras")
        stages.quantize(params, work / "prepared", work / "keras", work / "tflite")
    model = (work / "tflite" / stages.INT8_TFLITE).read_bytes()
    profiles = [p for p in load_profiles(root) if p.target and not fit_problems(model, p)]
    keys = init_keys(work / "keys", None, now=datetime.now(timezone.utc) - timedelta(days=1))
    signer = load_signer(work / "keys", None)
    field = load_split(work / "prepared", "test").x
    new = degrade_model(model, seed=1) if bad else model
    release = build_release(new, profiles, signer, work / "release", sequence=2, model_version="new", field_x=field)
    back = build_release(model, profiles, signer, work / "previous", sequence=3, model_version="old", field_x=field)
    return release, back, keys.root_public, profiles, work / "prepared"


@app.command("alarms")
def alarms(
    root: Path = RootOpt,
    fleet_url: str | None = typer.Option(
        None, "--fleet-url", help="fleet server base URL (default TINYMLOPS_FLEET_URL)"
    ),
    status: str | None = typer.Option(None, "--status", help="open, acknowledged or resolved (default: all)"),
    device_class: str | None = typer.Option(None, "--class", help="only this device class"),
    limit: int = typer.Option(50, "--limit", min=1, max=1000),
    check: bool = typer.Option(False, "--check", help="score production against the baselines first"),
    as_json: bool = typer.Option(False, "--json", help="the alarms as JSON (DriftAlarm objects)"),
) -> None:
    """Drift alarms of production monitoring, newest first: which class and model drifted, how
    (classes, confidence, latency, errors), by how much against its limit, and whether Prefect got
    the event that starts retraining. Exit status 3 when an alarm is open."""
    import json

    from rich.table import Table

    from tinymlops.cli.common import out
    from tinymlops.cli.rollout import _fleet
    from tinymlops.fleet.client import FleetAdmin

    env, url = _fleet(root, fleet_url)
    assert env.fleet_admin_token is not None
    with FleetAdmin(url, env.fleet_admin_token.get_secret_value()) as admin:
        if check:
            admin.check_drift()
        rows = admin.alarms(status=status, device_class=device_class, limit=limit)
    if as_json:
        out.print_json(json.dumps(rows, default=str))
    elif not rows:
        out.print("no drift alarms", highlight=False)
    else:
        table = Table("raised", "class", "seq", "kind", "value / limit", "status", "event", "id")
        for a in rows:
            event = "sent" if a.get("emitted_at") else ("pending" if a.get("event_error") else "-")
            table.add_row(
                str(a["raised_at"])[5:16].replace("T", " "),
                a["device_class"],
                str(a["sequence"]),
                a["kind"],
                f"{a['value']:.3g} / {a['threshold']:.3g}",
                a["status"],
                event,
                a["id"],
            )
        out.print(table)
    if any(a["status"] == "open" for a in rows):
        raise typer.Exit(3)


# -- identity and usage (admin API) -------------------------------------------------------------------
tokens_app = typer.Typer(help="Per-batch provisioning tokens: create, list, revoke.", no_args_is_help=True)
app.add_typer(tokens_app, name="tokens")
UrlOpt = typer.Option(None, "--url", help="fleet server base URL; default TINYMLOPS_FLEET_URL")


def _admin(root: Path, url: str | None):
    """A FleetAdmin for --url (or TINYMLOPS_FLEET_URL) with TINYMLOPS_FLEET_ADMIN_TOKEN."""
    from tinymlops.errors import ConfigError
    from tinymlops.fleet.client import FleetAdmin
    from tinymlops.settings import Environment

    env = Environment.from_env(root)
    url = url or env.fleet_url
    if not url:
        raise ConfigError("no fleet server: give --url or set TINYMLOPS_FLEET_URL")
    if env.fleet_admin_token is None:
        raise ConfigError("TINYMLOPS_FLEET_ADMIN_TOKEN is not set: the admin API needs it")
    return FleetAdmin(url, env.fleet_admin_token.get_secret_value())


@tokens_app.command("create")
def tokens_create(
    batch: str = typer.Option(..., "--batch", help="the batch name (one token per batch)"),
    classes: list[str] = typer.Option(..., "--class", help="a device class it may enrol (repeat)"),
    max_uses: int = typer.Option(..., "--max-uses", min=1, help="devices it may enrol"),
    hours: float = typer.Option(24.0, "--hours", min=0.01, help="valid for this long"),
    customer: str | None = typer.Option(None, "--customer", help="the customer its devices belong to"),
    url: str | None = UrlOpt,
    root: Path = RootOpt,
) -> None:
    """Create a provisioning token; it is printed once (the server keeps its digest only)."""
    from datetime import datetime, timedelta, timezone

    with _admin(root, url) as admin:
        token = admin.create_token(
            batch, classes, datetime.now(timezone.utc) + timedelta(hours=hours), max_uses, customer
        )
    typer.echo(token)


@tokens_app.command("list")
def tokens_list(url: str | None = UrlOpt, root: Path = RootOpt) -> None:
    """Batches with their classes, expiry, uses and revocation (never the tokens)."""
    with _admin(root, url) as admin:
        for t in admin.tokens():
            state = "revoked" if t["revoked_at"] else f"{t['uses']}/{t['max_uses']} used"
            typer.echo(f"{t['batch']}\t{','.join(t['classes'])}\t{t['customer'] or '-'}\t{t['expires_at']}\t{state}")


@tokens_app.command("revoke")
def tokens_revoke(batch: str = typer.Argument(...), url: str | None = UrlOpt, root: Path = RootOpt) -> None:
    with _admin(root, url) as admin:
        admin.revoke_token(batch)
    typer.echo(f"revoked {batch}")


@app.command("usage")
def usage(
    customer: str | None = typer.Option(None, "--customer"),
    url: str | None = UrlOpt,
    root: Path = RootOpt,
) -> None:
    """Inferences per customer and per device, reconciled from verified evidence; devices whose
    counter went backwards are flagged."""
    with _admin(root, url) as admin:
        got = admin.usage(customer)
    for name, total in sorted(got["customers"].items()):
        typer.echo(f"customer {name}\t{total}")
    for d in got["devices"]:
        flag = f"\tALARM {d['counter_alarm']}" if d["counter_alarm"] else ""
        count = "-" if d["inference_count"] is None else d["inference_count"]
        typer.echo(f"{d['id']}\t{d['customer'] or '-'}\t{count}{flag}")
