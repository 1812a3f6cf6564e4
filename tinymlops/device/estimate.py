"""Latency and energy of one inference on a profile, from the model's own per-op work.

cycles = Σ_op (MACs × cycles_per_mac) + elements × cycles_per_mac + ops × overhead_cycles_per_op
latency = cycles / clock;  energy = cycles × energy_pj_per_cycle.

MACs per op come from the .tflite through the TFLite interpreter's op and tensor details; ops
without multiply-accumulates (pooling, softmax, reshape…) count one unit per element they touch.
The per-MAC figure is calibrated on ONE published MLPerf Tiny result: v0.5 closed, reference
submission (TFLM + CMSIS-NN) on NUCLEO-L4R5ZI (Cortex-M4 @ 120 MHz), keyword spotting DS-CNN,
5.497 inf/s. `calibration_check()` reports the error on the other MLPerf Tiny networks of that
submission whose MAC counts we rebuilt (configs/devices.yaml has the derivation of each figure).
"""

from __future__ import annotations

import numpy as np
from pydantic import BaseModel

from tinymlops.device.profiles import DeviceProfile

_MAC_OPS = {"CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "TRANSPOSE_CONV", "BATCH_MATMUL"}


class OpCost(BaseModel):
    index: int
    op: str
    macs: int
    elements: int  # for ops without MACs: elements read


class Estimate(BaseModel):
    profile: str
    macs: int
    elements: int
    n_ops: int
    cycles: int
    latency_ms: float
    energy_uj: float


class Reference(BaseModel):
    """A published MLPerf Tiny latency, and the network's work as we rebuilt it."""

    benchmark: str
    network: str
    macs: int
    n_ops: int
    inferences_per_s: float

    @property
    def latency_ms(self) -> float:
        return 1000.0 / self.inferences_per_s


class CalibrationCheck(BaseModel):
    benchmark: str
    published_ms: float
    estimated_ms: float
    error_pct: float


# MLPerf Tiny v0.5, closed division, reference submission on NUCLEO-L4R5ZI, median throughput
# (github.com/mlcommons/tiny_results_v0.5, closed/reference/results/Nucleo-L4R5ZI/*/performance).
# MACs from the reference Keras architectures (v0.5/training/*/keras_model.py), counted per layer:
# DS-CNN 320,000 + 4 × (72,000 + 512,000) + 768; ResNet-8 as 9 convolutions + dense; the AD
# autoencoder 640-128×4-8-128×4-640 (also rebuilt as int8 .tflite in the tests: 264,192 MACs).
CALIBRATION = Reference(benchmark="kws", network="DS-CNN", macs=2_656_768, n_ops=13, inferences_per_s=5.497)
CALIBRATION_CLOCK_HZ = 120_000_000
CALIBRATION_OVERHEAD_CYCLES = 2000
CHECKS = [
    Reference(benchmark="ic", network="ResNet-8", macs=12_501_632, n_ops=16, inferences_per_s=1.420),
    Reference(benchmark="ad", network="FC-AutoEncoder", macs=264_192, n_ops=10, inferences_per_s=99.487),
]


def calibrated_cycles_per_mac(
    ref: Reference = CALIBRATION, clock_hz: int = CALIBRATION_CLOCK_HZ, overhead: int = CALIBRATION_OVERHEAD_CYCLES
) -> float:
    cycles = ref.latency_ms / 1000.0 * clock_hz
    return (cycles - ref.n_ops * overhead) / ref.macs


def calibration_check(
    cycles_per_mac: float | None = None,
    clock_hz: int = CALIBRATION_CLOCK_HZ,
    overhead: int = CALIBRATION_OVERHEAD_CYCLES,
) -> list[CalibrationCheck]:
    """The estimator's error on the published results it was NOT calibrated on."""
    cpm = cycles_per_mac if cycles_per_mac is not None else calibrated_cycles_per_mac()
    out = []
    for ref in CHECKS:
        est = (ref.macs * cpm + ref.n_ops * overhead) / clock_hz * 1000.0
        out.append(
            CalibrationCheck(
                benchmark=ref.benchmark,
                published_ms=round(ref.latency_ms, 3),
                estimated_ms=round(est, 3),
                error_pct=round(100.0 * (est - ref.latency_ms) / ref.latency_ms, 1),
            )
        )
    return out


def _macs(op: str, inputs: list[np.ndarray], output: np.ndarray) -> int:
    out = int(np.prod(output))
    if op == "CONV_2D":  # filter [out_c, kh, kw, in_c]
        _, kh, kw, in_c = inputs[1]
        return out * int(kh * kw * in_c)
    if op == "DEPTHWISE_CONV_2D":  # filter [1, kh, kw, out_c]: one MAC per window element per output
        _, kh, kw, _ = inputs[1]
        return out * int(kh * kw)
    if op == "FULLY_CONNECTED":  # weights [units, in]
        return out * int(inputs[1][-1])
    if op == "TRANSPOSE_CONV":  # inputs (output_shape, filter [out_c, kh, kw, in_c], x): taps per input element
        out_c, kh, kw, _ = inputs[1]
        return int(np.prod(inputs[2])) * int(kh * kw * out_c)
    if op == "BATCH_MATMUL":
        return out * int(inputs[0][-1])
    return 0


def op_costs(model: bytes) -> list[OpCost]:
    """Per-op MACs (and elements, for ops without MACs) of an int8 .tflite."""
    from tinymlops.ml.quantize import interpreter

    it = interpreter(model)
    shapes = {t["index"]: np.asarray(t["shape"]) for t in it.get_tensor_details()}
    costs = []
    for d in it._get_ops_details():  # no public per-op listing in tf.lite
        ins = [shapes[i] for i in d["inputs"] if i >= 0]
        out = shapes[d["outputs"][0]]
        macs = _macs(d["op_name"], ins, out) if d["op_name"] in _MAC_OPS else 0
        elements = 0 if macs else int(max([np.prod(s) for s in ins[:1]] + [np.prod(out)]))
        costs.append(OpCost(index=d["index"], op=d["op_name"], macs=macs, elements=elements))
    return costs


def estimate(costs: list[OpCost], profile: DeviceProfile) -> Estimate:
    macs = sum(c.macs for c in costs)
    elements = sum(c.elements for c in costs)
    cycles = round((macs + elements) * profile.cycles_per_mac + len(costs) * profile.overhead_cycles_per_op)
    return Estimate(
        profile=profile.name,
        macs=macs,
        elements=elements,
        n_ops=len(costs),
        cycles=cycles,
        latency_ms=cycles / profile.clock_hz * 1000.0,
        energy_uj=cycles * profile.energy_pj_per_cycle * 1e-6,
    )
