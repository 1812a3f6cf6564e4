"""A deliberately broken copy of an int8 model: what a bad release looks like to the fleet's gates."""

from __future__ import annotations

import numpy as np

from tinymlops.errors import ModelError


def degrade_model(model: bytes, seed: int = 0) -> bytes:
    """The int8 model with its last FULLY_CONNECTED weights replaced by seeded int8 noise."""
    from tensorflow.lite.tools import flatbuffer_utils as fb

    import tinymlops.ml.tf  # noqa: F401  (TensorFlow through its one door)

    tree = fb.read_model_from_bytearray(bytearray(model))
    graph = tree.subgraphs[0]
    names = [fb.opcode_to_name(tree, op.opcodeIndex) for op in graph.operators]
    fcs = [op for op, name in zip(graph.operators, names, strict=True) if name == "FULLY_CONNECTED"]
    if not fcs:
        raise ModelError("degrade_model: the model has no FULLY_CONNECTED layer to degrade")
    weights = graph.tensors[fcs[-1].inputs[1]]
    buffer = tree.buffers[weights.buffer]
    if buffer.data is None or buffer.data.size == 0:
        raise ModelError("degrade_model: the last FULLY_CONNECTED layer has no constant weights")
    rng = np.random.default_rng(seed)
    buffer.data = rng.integers(-127, 128, buffer.data.size, dtype=np.int8).view(np.uint8)
    return bytes(fb.convert_object_to_bytearray(tree))
