"""What the fleet server does, over the store: the API's routes call this and nothing else.

RolloutService drives rollouts (verbs and ticks, each one transaction: load → observe → engine →
carry out the actions → save), and is the seam a Prefect flow can use directly, without HTTP.
FleetService adds devices (enrolment, credentials, polls, reports, telemetry), releases (verified
uploads), lists and the audit log. Everything raises domain errors (tinymlops.errors); which HTTP
status each becomes is decided in tinymlops.fleet.api, nowhere else.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from tinymlops.errors import Conflict, Forbidden, NotFound, Refused, RolloutError, Unavailable
from tinymlops.fleet import auth
from tinymlops.fleet.config import FleetSettings
from tinymlops.fleet.engine import (
    Action,
    Observations,
    RolloutReport,
    RolloutState,
    StepResult,
    Verb,
    apply,
    report_for,
    select_devices,
    step,
)
from tinymlops.fleet.events import PrefectEvents
from tinymlops.fleet.identity import IdentityService
from tinymlops.fleet.monitor import MonitorService
from tinymlops.fleet.policy import RolloutPolicy
from tinymlops.fleet.store import IdentityStore, Store
from tinymlops.fleet.telemetry import TelemetryAggregate, Window, robust_side

Clock = Callable[[], datetime]
SLOT_STATES = ("unknown", "confirmed", "trial", "reverted", "empty")
REVOCATIONS_KEY = "revocations"


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class RolloutService:
    def __init__(
        self,
        store: Store,
        clock: Clock = utcnow,
        min_latency_ms: Callable[[str], float] | None = None,
        skew_seconds: float | None = None,
        attested_only: bool = False,
    ) -> None:
        defaults = FleetSettings.model_fields
        self.store = store
        self.attested_only = attested_only  # attestation on: only device-signed telemetry counts
        self.clock = clock
        self.min_latency_ms = min_latency_ms or (lambda _cls: defaults["default_min_latency_ms"].default)
        # A device's clock may run this far ahead: its windows are accepted (and counted) up to now + skew.
        self.skew = timedelta(seconds=defaults["clock_skew_seconds"].default if skew_seconds is None else skew_seconds)

    def create(
        self,
        rollout_id: str,
        release_id: str,
        rollback_release_id: str | None,
        policy: RolloutPolicy,
        actor: str,
        supersedes: str | None = None,
    ) -> RolloutState:
        """A new rollout. Refused while another rollout of any of the same device classes is open
        (created, running or paused), unless it names that one in `supersedes`: that one is then
        aborted, in the same transaction."""
        release, bundles = self.store.release(release_id)
        if not bundles:
            raise Conflict(f"release {release_id} has no bundles")
        classes = {b.device_class for b in bundles}
        rollback_sequence = None
        if rollback_release_id is not None:
            back, back_bundles = self.store.release(rollback_release_id)
            if back.sequence <= release.sequence:
                raise Conflict(
                    f"rollback release {rollback_release_id} has sequence {back.sequence}, it must exceed "
                    f"{release.sequence} (devices refuse lower sequences)"
                )
            missing = classes - {b.device_class for b in back_bundles}
            if missing:
                raise Conflict(f"rollback release {rollback_release_id} lacks classes {sorted(missing)}")
            rollback_sequence = back.sequence
        state = RolloutState(
            rollout_id=rollout_id,
            release=release_id,
            release_sequence=release.sequence,
            rollback_release=rollback_release_id,
            rollback_sequence=rollback_sequence,
            policy=policy,
            supersedes=supersedes,
        )
        now = self.clock()
        with self.store.write() as c:
            found_superseded = False
            for other, other_release, _ in self.store.open_rollouts(c):
                if other == rollout_id:
                    continue  # create_rollout refuses the duplicate id below
                shared = classes & set(self.store.bundles_of(c, other_release))
                if not shared:
                    continue
                if other != supersedes:
                    raise RolloutError(
                        f"rollout {other} of release {other_release} is still open for classes {sorted(shared)}: "
                        f"finish or abort it, or create this one with supersedes={other}"
                    )
                found_superseded = True
                old, version = self.store.load_rollout(c, other)
                result = apply(old, "abort", now, actor, f"superseded by {rollout_id}")
                self._carry_out(c, result.state, result.actions, now)
                self.store.save_rollout(c, result.state, version, now)
                self.store.audit(c, actor, "abort", other, f"superseded by {rollout_id}", now)
            if supersedes is not None and not found_superseded:
                raise NotFound(f"rollout {supersedes} to supersede is not open")
            self.store.create_rollout(c, state, actor, now)
            IdentityStore.set_rollout_nonce(c, rollout_id, secrets.token_bytes(16).hex())  # evidence freshness
        return state

    def verb(self, rollout_id: str, verb: Verb, actor: str, reason: str = "") -> StepResult:
        now = self.clock()
        with self.store.write() as c:
            state, version = self.store.load_rollout(c, rollout_id)
            result = apply(state, verb, now, actor, reason)
            self._carry_out(c, result.state, result.actions, now)
            self.store.save_rollout(c, result.state, version, now)
            self.store.audit(c, actor, verb, rollout_id, reason or result.report.reason, now)
        return result

    def tick(self, rollout_id: str) -> RolloutReport:
        """Observe, judge, act, save — atomically. Safe to repeat and safe after a crash."""
        now = self.clock()
        with self.store.write() as c:
            state, version = self.store.load_rollout(c, rollout_id)
            result = step(state, self.observe(c, state, now), now)
            if result.state != state:
                self._carry_out(c, result.state, result.actions, now)
                self.store.save_rollout(c, result.state, version, now)
                self.store.audit(c, "engine", result.report.decision, rollout_id, result.report.reason, now)
        return result.report

    def status(self, rollout_id: str) -> tuple[RolloutState, RolloutReport]:
        now = self.clock()
        with self.store.read() as c:
            state, _ = self.store.load_rollout(c, rollout_id)
            counts = self.store.counts(c, state.rollout_id)
        return state, report_for(state, now, "idle", f"status {state.status}", counts)

    def live(self, rollout_id: str) -> tuple[RolloutState, Observations, RolloutReport]:
        """What a tick would see now, judged but not acted on: the dashboard's view of a rollout
        (state, both sides' telemetry, and the gates with their numbers and device counts)."""
        now = self.clock()
        with self.store.read() as c:
            state, _ = self.store.load_rollout(c, rollout_id)
            observations = self.observe(c, state, now)
        if state.status == "running":
            report = step(state, observations, now).report
        else:
            report = report_for(state, now, "idle", f"status {state.status}", observations.counts)
        return state, observations, report

    def tick_running(self) -> list[RolloutReport]:
        reports = []
        for rollout_id in self.store.rollout_ids(["running"]):
            try:
                reports.append(self.tick(rollout_id))
            except (Conflict, NotFound):
                continue  # another replica stepped it first
        return reports

    # -- observing and acting ----------------------------------------------------------------------
    def observe(self, c: Any, state: RolloutState, now: datetime) -> Observations:
        """Install outcomes, and both sides' telemetry aggregated robustly (tinymlops.fleet.telemetry
        .robust_side): members only for the canary, windows inside the rollout's period only."""
        counts = self.store.counts(c, state.rollout_id)
        since = next((t.at for t in state.history if t.event == "start"), None)
        if since is None:
            return Observations(counts=counts)
        canary, control, population = self.store.telemetry_windows(
            c, state, since, now + self.skew, attested_only=self.attested_only
        )
        period = max((now + self.skew - since).total_seconds(), 0.0)  # the windows' span counted
        return Observations(
            counts=counts,
            canary=robust_side(self._windows(canary), period),
            control=robust_side(self._windows(control), period),
            control_population=population,
        )

    def _windows(self, rows: Sequence[tuple[str, str, bytes, datetime, datetime]]) -> list[Window]:
        latency: dict[str, float] = {}
        out = []
        for device_id, device_class, packed, start, end in rows:
            if device_class not in latency:
                latency[device_class] = self.min_latency_ms(device_class)
            seconds = (end - start).total_seconds()
            out.append(
                Window(device_id=device_id, packed=packed, seconds=seconds, min_latency_ms=latency[device_class])
            )
        return out

    def _carry_out(self, c: Any, state: RolloutState, actions: Sequence[Action], now: datetime) -> None:
        """What the engine decided, in the store: assign a group, reassign the previous model,
        withdraw what nobody acted on. "promote" changes nothing here: the rollout's status says
        succeeded, and moving the MLflow alias is the flow's job."""
        for action in actions:
            if action.kind == "assign_group":
                bundles = self.store.bundles_of(c, state.release)
                already = {d for d, _ in self.store.members_of(c, state.rollout_id)}
                # Devices already past this sequence would refuse it (anti-rollback); members stay in
                # the ranking whatever they run now, so the shares stay shares of the same population.
                eligible = [
                    (d, k)
                    for d, k, seq in self.store.fleet_of(c, list(bundles))
                    if d in already or seq < state.release_sequence
                ]
                chosen = select_devices(state.rollout_id, eligible, action.percent, already)
                self.store.add_members(c, state.rollout_id, chosen, action.group_index, now)
                self.store.set_assignments(
                    c, chosen, state.release, state.release_sequence, bundles, state.rollout_id, now
                )
            elif action.kind == "rollback":
                assert state.rollback_release is not None and state.rollback_sequence is not None
                bundles = self.store.bundles_of(c, state.rollback_release)
                targets = [(d, k) for d, k in self.store.members_of(c, state.rollout_id) if k in bundles]
                self.store.set_assignments(
                    c, targets, state.rollback_release, state.rollback_sequence, bundles, state.rollout_id, now
                )
            elif action.kind == "cancel_pending":
                self.store.cancel_pending(c, state.rollout_id, state.release)


@dataclass(frozen=True)
class BundleFile:
    path: Path
    sha256: str


class FleetService:
    """Devices, releases, lists and the audit log; rollouts through `rollouts`."""

    def __init__(self, store: Store, settings: FleetSettings, clock: Clock = utcnow) -> None:
        self.store, self.settings, self.clock = store, settings, clock
        self.rollouts = RolloutService(
            store, clock, settings.min_latency_for, settings.clock_skew_seconds, attested_only=settings.attestation
        )
        self.identity = IdentityService(store, settings, clock)
        self.admins = auth.AdminTokens({n: t.get_secret_value() for n, t in settings.admin_tokens.items()})
        token = settings.provisioning_token
        self._provisioning = auth.digest(token.get_secret_value()) if token else None
        self.monitor = MonitorService(
            store,
            settings.monitoring,
            clock,
            settings.min_latency_for,
            timedelta(seconds=settings.clock_skew_seconds),
            emit=PrefectEvents(settings.events_url, settings.monitoring.event) if settings.events_url else None,
            alarm_url=lambda alarm_id: (
                f"{settings.public_url.rstrip('/')}/ui/monitoring#{alarm_id}" if settings.public_url else None
            ),
        )

    # -- credentials (checked before any body is read) -------------------------------------------
    def admin(self, authorization: str | None) -> str:
        """The admin's name (for the audit log)."""
        if not self.admins:
            raise Forbidden("admin API disabled: no admin tokens configured")
        return self.admins.who(authorization)

    def check_provisioning(self, authorization: str | None) -> None:
        token = auth.bearer(authorization)
        if self._provisioning is None or not auth.matches(token, self._provisioning):
            raise Forbidden("not a valid provisioning token")

    def device(self, device_id: str, authorization: str | None) -> Any:
        """The device's poll row (its class, state and assignment), once its credential checks out."""
        token = auth.bearer(authorization)
        row = self.store.poll_row(device_id)
        # Unknown device and someone else's credential look the same from outside.
        if row is None or not auth.matches(token, row.credential_hash):
            raise Forbidden(f"credential not valid for device {device_id}")
        return row

    # -- devices -----------------------------------------------------------------------------------
    def enrol(self, device_id: str, device_class: str) -> str:
        """A new per-device credential (returned once; only its digest is stored)."""
        credential = auth.new_credential()
        self.store.enrol(device_id, device_class, auth.digest(credential), self.clock())
        return credential

    def note_states(self, states: Sequence[tuple[str, int, str]]) -> None:
        """What devices said they run, as their polls carried it (group-committed)."""
        self.store.set_device_states(states)

    def bundle_file(self, release_id: str, device_class: str) -> BundleFile:
        bundle = self.store.bundle(release_id, device_class)
        if bundle is None:
            raise NotFound(f"release {release_id} has no bundle for class {device_class}")
        return BundleFile(self.settings.bundle_dir / bundle.path, bundle.sha256)

    def report_logs(self, logs: Sequence[tuple[str, Sequence[tuple[str, str, str, str | None]]]]) -> list[list[bool]]:
        """report_many for several devices at once, one transaction (group-committed)."""
        return self.store.record_reports_of_many(logs, self.clock())

    def check_window(self, window: TelemetryAggregate) -> datetime:
        """A window that ends in the future is refused (a clock a little ahead is tolerated); → now."""
        now = self.clock()
        if window.window_end > now + timedelta(seconds=self.settings.clock_skew_seconds):
            raise Refused("window_end is in the future")
        return now

    def store_windows(self, windows: Sequence[tuple]) -> None:
        self.store.add_telemetry_many(windows)

    # -- releases ----------------------------------------------------------------------------------
    def accept_bundle(self, tmp: Path, sha: str, size: int, release_id: str, device_class: str, actor: str) -> Any:
        """Verify an uploaded bundle (trust anchor, revocations, class), keep it, record it; → manifest."""
        now = self.clock()
        manifest = self._verify(tmp, device_class, now)
        target = Path(release_id) / f"{device_class}.bundle"
        _place(tmp, self.settings.bundle_dir / target)
        try:
            self.store.add_bundle(
                release_id,
                device_class,
                sequence=manifest.sequence,
                model_name=manifest.model_name,
                model_version=manifest.model_version,
                sha256=sha,
                size=size,
                path=str(target),
                manifest=manifest.model_dump(mode="json", exclude={"selftest"}),
                actor=actor,
                now=now,
            )
        except BaseException:
            (self.settings.bundle_dir / target).unlink(missing_ok=True)
            raise
        return manifest

    def _verify(self, path: Path, device_class: str, now: datetime) -> Any:
        from tinymlops.bundle import BundleError, class_uuid, load_revocations, load_trust, verify_bundle

        settings = self.settings
        if settings.trust_anchor is None:
            raise Unavailable("no trust anchor configured (TINYMLOPS_FLEET_TRUST): cannot verify uploads")
        trust = load_trust(settings.trust_anchor)
        revoked = None
        if settings.revocations is not None:
            try:  # re-read per upload: a newly revoked key is refused without a restart
                revoked = load_revocations(settings.revocations, trust)
            except BundleError as exc:
                raise Unavailable(f"revocation list unusable, refusing uploads: {exc}") from None
            # The highest list seen is kept: an older one (a revocation rolled back) is refused.
            highest = self.store.raise_state_version(REVOCATIONS_KEY, revoked.sequence, now)
            if revoked.sequence < highest:
                raise Unavailable(
                    f"revocation list version {revoked.sequence} is older than version {highest} already "
                    "seen: refusing uploads until the newest list is back"
                )
        target = class_uuid(settings.vendor, device_class)
        result = verify_bundle(path, trust, device_class=target, now=now, revocations=revoked)
        if not result.ok or result.manifest is None:
            reason = getattr(result.reason, "value", result.reason)
            raise Refused(f"bundle refused: {reason}: {result.detail}")
        return result.manifest

    def releases(
        self, *, model_version: str | None = None, limit: int = 1000, offset: int = 0
    ) -> tuple[int, list[dict]]:
        return self.store.releases(model_version=model_version, limit=limit, offset=offset)

    # -- lists and audit -------------------------------------------------------------------------------
    def list_rollouts(
        self, *, status: str | None, release_id: str | None, limit: int, offset: int
    ) -> tuple[int, list[dict]]:
        return self.store.list_rollouts(status=status, release_id=release_id, limit=limit, offset=offset)

    def list_devices(
        self, *, device_class: str | None, sequence: int | None, limit: int, offset: int
    ) -> tuple[int, list[dict]]:
        return self.store.list_devices(device_class=device_class, sequence=sequence, limit=limit, offset=offset)

    def audit_log(self, limit: int, target: str | None) -> list[dict]:
        return self.store.audit_log(limit, target)


def _place(tmp: Path, target: Path) -> None:
    """Hard-link into place: atomic like a rename, but never replaces a stored bundle."""
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(tmp, target)
    except FileExistsError:
        raise Conflict(f"release {target.parent.name} already has a bundle for class {target.stem}") from None
    fd = os.open(target.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
