"""Offline memory plan: tensor lifetimes -> arena offsets, greedy by size.

Tensors are placed largest first, each at the lowest aligned offset where it overlaps no placed
tensor whose lifetime (first op that writes it .. last op that reads it) overlaps its own. This is
the classic offline greedy-by-size planner (also what TFLM's GreedyMemoryPlanner does for tensor
data); the arena holds only tensor data, because everything else (shapes, quantisation, weights,
multipliers) stays in the flash image.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Buffer:
    key: int
    size: int
    first: int  # first op index that needs it (-1: live at entry)
    last: int  # last op index that needs it
    offset: int = -1


def align(n: int, a: int = 8) -> int:
    return (n + a - 1) // a * a


def plan(buffers: list[Buffer], alignment: int = 8) -> int:
    """Assign offsets in place; returns the arena size in bytes."""
    placed: list[Buffer] = []
    for buf in sorted(buffers, key=lambda b: (-b.size, b.first, b.key)):
        live = sorted((p for p in placed if not (p.last < buf.first or buf.last < p.first)), key=lambda p: p.offset)
        offset = 0
        for p in live:
            if offset + buf.size <= p.offset:
                break
            offset = max(offset, align(p.offset + p.size, alignment))
        buf.offset = offset
        placed.append(buf)
    return align(max((b.offset + b.size for b in buffers), default=0), alignment)
