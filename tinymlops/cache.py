"""Content-addressed stage outputs: unchanged data, params and code → reuse, don't recompute."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path

import tinymlops
from tinymlops.io import atomic_dir

_PACKAGE = Path(tinymlops.__file__).parent


# The code that decides a stage's output bytes; editing anything else (logging, CLI, flows) must
# not throw away a trained model.
TRAIN_CODE = ("model", "settings.py")
QUANTIZE_CODE = ("model", "quantize.py", "settings.py")


def code_fingerprint(parts: tuple[str, ...]) -> str:
    """Digest of the given library modules/packages and of the TensorFlow version."""
    import tensorflow as tf

    h = hashlib.sha256(tf.__version__.encode())
    for part in parts:
        root = _PACKAGE / part
        for path in sorted(root.rglob("*.py")) if root.is_dir() else [root]:
            h.update(path.relative_to(_PACKAGE).as_posix().encode())
            h.update(path.read_bytes())
    return h.hexdigest()


def key(**parts: object) -> str:
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def cached_dir(cache_root: Path, stage: str, cache_key: str, build: Callable[[Path], None]) -> tuple[Path, bool]:
    """Return (directory, hit). On a miss, `build(tmp)` fills a temp dir that is then renamed in,
    so a crash mid-build never leaves a half-filled entry that a later run would trust."""
    target = Path(cache_root) / stage / cache_key
    if (target / ".complete").is_file():
        return target, True
    with atomic_dir(target) as tmp:
        build(tmp)
        (tmp / ".complete").write_text(cache_key)
    return target, False
