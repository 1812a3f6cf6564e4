"""`tinymlops fleet …`: the fleet server (uvicorn) and its schema migrations."""

from __future__ import annotations

import os
from pathlib import Path

import typer

app = typer.Typer(help="Fleet server and staged, ML-gated rollouts.", no_args_is_help=True)
RootOpt = typer.Option(Path("."), "--root", help="project directory (configs/rollout.yaml)")
DbOpt = typer.Option(None, "--db-url", help="SQLAlchemy URL; default TINYMLOPS_FLEET_DB_URL or SQLite under home")


def _settings(root: Path, db_url: str | None, **overrides: object):  # type: ignore[no-untyped-def]
    from tinymlops.fleet.server import FleetSettings, project_defaults
    from tinymlops.settings import Environment

    env = Environment.from_env(root)
    extra = {**project_defaults(env.root), **{k: v for k, v in overrides.items() if v is not None}}
    if db_url:
        extra["db_url"] = db_url
    return FleetSettings.from_env(env.home, **extra)


def _safe_url(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


@app.command("migrate")
def migrate(root: Path = RootOpt, db_url: str | None = DbOpt) -> None:
    """Create or upgrade the fleet database schema (Alembic) and print the revision."""
    from tinymlops.fleet.store import make_engine
    from tinymlops.fleet.store import migrate as run

    settings = _settings(root, db_url)
    engine = make_engine(settings.db_url)
    try:
        revision = run(engine)
    finally:
        engine.dispose()
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
    from tinymlops.fleet.server import create_app
    from tinymlops.fleet.store import make_engine
    from tinymlops.fleet.store import migrate as run

    settings = _settings(
        root, db_url, trust_anchor=trust, revocations=revocations, vendor=vendor, tick_seconds=tick_seconds or None
    )
    if settings.trust_anchor is not None and not settings.trust_anchor.is_file():
        raise ConfigError(f"{settings.trust_anchor}: trust anchor file not found")
    if settings.revocations is not None and not settings.revocations.is_file():
        raise ConfigError(f"{settings.revocations}: revocation list file not found")
    if not settings.admin_tokens:
        typer.echo("warning: TINYMLOPS_FLEET_ADMIN_TOKENS is not set: the admin API refuses everyone", err=True)
    engine = make_engine(settings.db_url)
    try:
        run(engine)
    finally:
        engine.dispose()
    typer.echo(f"fleet server on http://{host}:{port} (OpenAPI: /docs), database {_safe_url(settings.db_url)}")
    if workers == 1:
        uvicorn.run(create_app(settings), host=host, port=port, log_level="warning")
        return
    # Worker processes rebuild the app from the environment: pass the resolved options through it.
    os.environ["TINYMLOPS_FLEET_DB_URL"] = settings.db_url
    os.environ["TINYMLOPS_FLEET_TICK_SECONDS"] = str(tick_seconds)
    os.environ["TINYMLOPS_ROOT"] = str(Path(root).resolve())
    if trust is not None:
        os.environ["TINYMLOPS_FLEET_TRUST"] = str(trust.resolve())
    if revocations is not None:
        os.environ["TINYMLOPS_FLEET_REVOCATIONS"] = str(revocations.resolve())
    os.environ["TINYMLOPS_FLEET_VENDOR"] = settings.vendor
    uvicorn.run(
        "tinymlops.fleet.server:app_from_env", factory=True, host=host, port=port, workers=workers, log_level="warning"
    )


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
    from tinymlops.fleet.simulation import plot_states, simulate_rollout
    from tinymlops.fleet.simulator import Faults, SimulationConfig
    from tinymlops.io import write_json

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

        def show(index: int, stats, rep) -> None:  # type: ignore[no-untyped-def]
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
            on_round=show,  # type: ignore[arg-type]
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
    from tinymlops.fleet.farm import DeviceFarm
    from tinymlops.fleet.simulator import SimulationConfig

    token = os.environ.get("TINYMLOPS_FLEET_PROVISIONING_TOKEN")
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


def _quick_release(root: Path, work: Path, bad: bool, console):  # type: ignore[no-untyped-def]
    """Train and quantize the default model (params.yaml), sign a release per fitting class with
    throwaway dev keys: the old model re-signed (sequence 3) is the rollback."""
    from datetime import datetime, timedelta, timezone

    from tinymlops import stages
    from tinymlops.bundle import init_keys, load_signer
    from tinymlops.data.split import load_split
    from tinymlops.device.firmware import fit_problems
    from tinymlops.device.profiles import load_profiles
    from tinymlops.fleet.behaviour import degrade_model
    from tinymlops.fleet.simulation import build_release
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


COMMANDS = [("fleet", app)]
