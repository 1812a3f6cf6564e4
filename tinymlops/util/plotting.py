"""One way to draw a PNG: a headless backend, a tight layout, an atomic write, the figure freed."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tinymlops.util.io import atomic_path


@contextmanager
def png(
    path: Path | str, nrows: int = 1, ncols: int = 1, *, figsize: tuple[float, float], dpi: int = 110
) -> Iterator[Any]:
    """`with png(path, 1, 2, figsize=(8, 3)) as (fig, axes):` draw; the file appears only when the
    drawing finished (a half-drawn plot never replaces a good one)."""
    import matplotlib

    matplotlib.use("Agg")  # no display on servers and CI
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(nrows, ncols, figsize=figsize, dpi=dpi)
    try:
        yield fig, axes
        fig.tight_layout()
        with atomic_path(Path(path)) as tmp:
            fig.savefig(tmp, format="png")
    finally:
        plt.close(fig)
