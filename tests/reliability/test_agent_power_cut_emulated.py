"""Power cuts on the emulated core: the real firmware (update agent + C runtime, cross-compiled
for the nRF52840's Cortex-M4F) in the part's flash, with the emulated flash controller cutting
power at a chosen erase or row program (devices.py: the operation is torn, the core stops, RAM
is lost; the next call is a reset through the startup code).

Exhaustive: a cut at every erase and every program of an install (encrypted bundle), and of the
boot that confirms it. Then 60 randomized trials mixing cuts with corruption (bit flips in the
inactive slot, torn and garbage state-log records, bundles damaged in transit): the loop is
tests/reliability/emulated_trials.py, which bench/agent.py runs 1,000 times. After every trial
the device is reset and must run one of the genuinely signed images or nothing, and must still
take a fresh, higher release (not bricked). Figures are printed with pytest -s.

Cost: every boot verifies its active slot (two Ed25519 verifies, ≈ 5.8 M cycles) on the emulated
core.
"""

from __future__ import annotations

import time

import pytest

from tests.reliability.emulated_trials import NEW, OLD, check, make_rig, run_trials
from tests.unit.device.agent import rig
from tests.unit.device.agent.rig import NOW

RANDOM_TRIALS = 60  # the fast run; bench/agent.py runs 1,000 (python bench/agent.py power-cuts)
FIGURES: dict[str, float] = {}


@pytest.fixture(scope="module")
def rig_():
    rig.use(rig.EMULATED)
    try:
        yield make_rig()
    finally:
        rig.use("host")


def test_cut_at_every_write_and_erase_of_an_install_on_the_emulated_core(rig_) -> None:
    r = rig_
    base, bundles = r.base, r.bundles
    started = time.perf_counter()
    whole = base.clone()
    assert whole.boot(NOW).running_sequence == OLD
    before = whole.ops
    assert whole.install(bundles[NEW], NOW).reason == "pending"
    n = whole.ops - before
    assert n >= 20
    outcomes: dict[int | None, int] = {}
    for k in range(1, n + 1):
        dev = base.clone()
        assert dev.boot(NOW).running_sequence == OLD
        assert dev.install(bundles[NEW], NOW, cut_at=k).cut
        bricked, unverified, running = check(r, dev)
        assert not bricked and not unverified, (k, running)
        assert running in (OLD, NEW)
        outcomes[running] = outcomes.get(running, 0) + 1
        assert dev.counters()["prov_touches"] == 0
    assert outcomes.get(OLD, 0) >= n - 1  # only a cut after the pending record leaves NEW to confirm
    FIGURES["install_cut_points"] = n
    FIGURES["install_cut_seconds"] = round(time.perf_counter() - started, 1)


def test_cut_at_every_write_and_erase_of_the_boot_that_confirms_on_the_emulated_core(rig_) -> None:
    r = rig_
    base, bundles = r.base, r.bundles
    pending = base.clone()
    assert pending.install(bundles[NEW], NOW).reason == "pending"
    whole = pending.clone()
    assert whole.boot(NOW).event == "confirmed"
    n = whole.ops
    assert n >= 2
    for k in range(1, n + 1):
        dev = pending.clone()
        assert dev.boot(NOW, cut_at=k).cut
        bricked, unverified, running = check(r, dev)
        assert not bricked and not unverified and running in (OLD, NEW), (k, running)
    FIGURES["boot_cut_points"] = n


def test_randomized_cuts_and_corruption_on_the_emulated_core(rig_) -> None:
    tally, kinds = run_trials(rig_, RANDOM_TRIALS, seed=20260601 + RANDOM_TRIALS)
    FIGURES.update({f"random{RANDOM_TRIALS}_{k}": v for k, v in tally.items()})
    print(f"\npower cuts on the emulated {rig.EMULATED}: {FIGURES}\ntrial kinds: {kinds}")
    assert tally["bricked"] == 0 and tally["unverified"] == 0 and tally["bad_reason"] == 0, tally
