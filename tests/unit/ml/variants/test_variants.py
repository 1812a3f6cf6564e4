"""The variant search: what a class's limits rule out, which candidates get trained, which one is
chosen, and the trade-off plot. One real footprint (an untrained candidate's int8 bytes)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tinymlops.ml import variants
from tinymlops.ml.variants import Footprint, Trained


@pytest.fixture(scope="module")
def targets(profiles_by_name):
    return [p for p in profiles_by_name.values() if p.target]


@pytest.fixture(scope="module")
def profiles_by_name():
    from tests.support.paths import REPO
    from tinymlops.device.profiles import load_profiles

    return {p.name: p for p in load_profiles(REPO)}


def fp(name: str, size: int, arena: int, macs: int, ops=("CONV_2D", "SOFTMAX"), latency: float = 1.0) -> Footprint:
    classes = ["nrf52840-ble-sensor", "stm32l0-lora-node"]
    return Footprint(
        name=name,
        int8_bytes=size,
        arena_bytes=arena,
        macs=macs,
        ops=list(ops),
        latency_ms=dict.fromkeys(classes, latency),
    )


def test_misses_name_each_limit_with_figures(profiles_by_name) -> None:
    m0 = profiles_by_name["stm32l072-lora"]
    big = fp("big", 20_000, 5_488, 300_000, ops=("CONV_2D", "DEPTHWISE_CONV_2D"), latency=1500)
    why = variants.misses(big, m0)
    assert [w.split(":")[0] for w in why] == ["ops", "flash", "arena", "latency"]
    assert "DEPTHWISE_CONV_2D" in why[0] and "5488 B > 4096 B" in why[2] and "1500.0 ms > 1000 ms" in why[3]
    assert variants.misses(fp("small", 3_000, 2_400, 3_000), m0) == []
    assert variants.misses(Footprint(name="x", error="refused: crashed"), m0) == ["model: refused: crashed"]


def test_largest_feasible_candidates_are_trained_and_the_most_accurate_chosen(profiles_by_name) -> None:
    m0, nrf = profiles_by_name["stm32l072-lora"], profiles_by_name["nrf52840"]
    fps = {
        "a": fp("a", 7_000, 3_700, 80_000),
        "b": fp("b", 4_800, 2_900, 22_000),
        "c": fp("c", 3_200, 2_400, 3_000),
        "too-big": fp("too-big", 9_000, 5_000, 200_000),
    }
    plan = variants.to_train(fps, {m0.device_class: m0, nrf.device_class: nrf}, per_class=2, limit=4)
    assert plan[m0.device_class] == ["a", "b"]  # too-big misses the arena; largest first
    assert plan[nrf.device_class] == ["too-big", "a"]
    capped = variants.to_train(fps, {m0.device_class: m0, nrf.device_class: nrf}, per_class=2, limit=2)
    assert capped[nrf.device_class] == ["a"]

    def trained(name: str, acc: float, **kw) -> Trained:
        return Trained(
            name=name,
            footprint=fps[name],
            accuracy_float=acc,
            accuracy_int8=acc,
            watermarked=True,
            int8_path=Path(f"/{name}"),
            **kw,
        )

    pool = [trained("a", 0.95), trained("b", 0.97, gate_failures=["watermark: not detected"]), trained("c", 0.93)]
    assert variants.choose(m0, pool).name == "a"
    assert variants.choose(m0, [pool[1]]) is None  # a gate failure never ships
    assert variants.choose(m0, [trained("too-big", 0.99)]) is None


def test_a_real_candidate_fits_the_m0plus(prepared_dir: Path, targets, tmp_path: Path) -> None:
    from tinymlops.ml.data.split import load_meta, load_split

    meta, train = load_meta(prepared_dir), load_split(prepared_dir, "train")
    grid = variants.candidates("cnn_small", ["mlp", "cnn_small"], [0.25], [2])
    assert [c.name for c in grid] == ["cnn_small-w0.25-d2", "mlp-w0.25-d2"]
    found = variants.footprint(grid[0], tuple(meta.input_shape), 10, train.x[:32], targets, seed=42)
    m0 = next(p for p in targets if p.core == "cortex-m0plus")
    assert not found.error and variants.misses(found, m0) == [], found
    assert found.arena_bytes < m0.arena_budget_bytes and set(found.ops) <= set(m0.ops)
    main = fp("main", 14_000, 5_488, 300_000)
    png = variants.plot_tradeoff(
        targets, {found.name: found}, {}, main, 0.98, {m0.device_class: found.name}, tmp_path / "tradeoff.png"
    )
    assert png.read_bytes()[:4] == b"\x89PNG"
