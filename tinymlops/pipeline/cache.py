"""Content-addressed stage outputs: unchanged data, params and code → reuse, don't recompute."""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
from collections.abc import Callable
from pathlib import Path

import tinymlops
from tinymlops.util.io import atomic_dir

_PACKAGE = Path(tinymlops.__file__).parent


# The code that decides a stage's output bytes; editing anything else (logging, CLI, flows) must
# not throw away a trained model.
TRAIN_CODE = ("ml/model", "settings/params.py")
QUANTIZE_CODE = ("ml/model", "ml/quantize.py", "settings/params.py")


def code_fingerprint(parts: tuple[str, ...]) -> str:
    """Digest of the given library modules/packages and of the TensorFlow version."""
    # the installed version, read without importing TensorFlow
    h = hashlib.sha256(importlib.metadata.version("tensorflow").encode())
    for part in parts:
        root = _PACKAGE / part
        if not root.exists():  # a moved module must not silently drop out of the key
            raise FileNotFoundError(f"cache key names {root}, which does not exist")
        for path in sorted(root.rglob("*.py")) if root.is_dir() else [root]:
            h.update(path.relative_to(_PACKAGE).as_posix().encode())
            h.update(path.read_bytes())
    return h.hexdigest()


def builder_fingerprint(architecture: str, root: Path | None = None) -> str:
    """Digest of a `module:function` builder's source (its module file, or its package), so
    editing a user's architecture retrains; "" for the built-in names (inside TRAIN_CODE)."""
    import importlib.util
    import sys

    if ":" not in architecture:
        return ""
    module = architecture.partition(":")[0]
    added = root is not None and str(root) not in sys.path
    if added:
        sys.path.insert(0, str(root))
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        spec = None
    finally:
        if added:
            sys.path.remove(str(root))
    if spec is None or not spec.origin or not Path(spec.origin).is_file():
        return f"unresolved:{module}"  # training will fail with the import error, naming the module
    origin = Path(spec.origin)
    files = sorted(origin.parent.rglob("*.py")) if origin.name == "__init__.py" else [origin]
    h = hashlib.sha256()
    for path in files:
        h.update(path.name.encode())
        h.update(path.read_bytes())
    return h.hexdigest()


def key(**parts: object) -> str:
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def cached_dir(cache_root: Path, stage: str, cache_key: str, build: Callable[[Path], object]) -> tuple[Path, bool]:
    """Return (directory, hit). On a miss, `build(tmp)` fills a temp dir that is then renamed in,
    so a crash mid-build never leaves a half-filled entry that a later run would trust."""
    target = Path(cache_root) / stage / cache_key
    if (target / ".complete").is_file():
        return target, True
    with atomic_dir(target) as tmp:
        build(tmp)
        (tmp / ".complete").write_text(cache_key)
    return target, False
