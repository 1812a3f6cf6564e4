"""The crypto sources the C agent builds from: registry sdists, pinned by version and SHA-256,
fetched at build time into a cache outside git (never committed, never vendored).

  pycryptodome  SHA-256, SHA-512 (hash_SHA2_template.c), AES (Rijndael reference), GHASH
                (ghash_portable.c). BSD-2-Clause / public domain.
  pymonocypher  monocypher.c: the Ed25519 check equation (crypto_eddsa_check_equation), fed a
                SHA-512 challenge from the pycryptodome SHA-512. BSD-2-Clause or CC0.

`pip download --no-binary <name>` fetches the sdist through the ordinary client; the archive's
digest must equal the pin before a single member is extracted. Only the package itself is held to
its sdist: with `:all:` pip would also build setuptools and wheel from source just to read the
sdist's metadata (141 s against 6.5 s, cold, on a 2-core machine).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import shutil
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tinymlops.errors import TinyMLOpsError


class SourceError(TinyMLOpsError):
    """A crypto source could not be fetched, or its digest is not the pinned one."""


@dataclass(frozen=True)
class Sdist:
    name: str
    version: str
    sha256: str
    members: tuple[str, ...]  # paths inside <name>-<version>/ that the build needs

    @property
    def archive(self) -> str:
        return f"{self.name}-{self.version}.tar.gz"

    @property
    def root(self) -> str:
        return f"{self.name}-{self.version}"


PYCRYPTODOME = Sdist(
    "pycryptodome",
    "4.4.0",
    "eab7620c60c85f3fa251d026ec06e094f036d96187bebb9752e46fbcebabbb55",
    (
        "LICENSE.rst",
        "src/common.h",
        "src/errors.h",
        "src/endianess.h",
        "src/block_base.h",
        "src/block_common.c",
        "src/SHA256.c",
        "src/SHA512.c",
        "src/hash_SHA2_template.c",
        "src/hash_SHA2_compress_portable.c",
        "src/hash_SHA2_compress_shani.c",
        "src/hash_SHA2_compress_armv8.c",
        "src/AES.c",
        "src/ghash_portable.c",
    ),
)
PYMONOCYPHER = Sdist(
    "pymonocypher",
    "4.0.3.4",
    "5e56e3d3eb770a53e0b9f6274146663c11a11f3d0de5cd48e3be0428d1b07a4a",
    ("LICENSE.txt", "monocypher.c", "monocypher.h"),
)
PINNED = (PYCRYPTODOME, PYMONOCYPHER)


def default_cache() -> Path:
    """Per-user cache, outside any checkout (so nothing fetched can be committed by accident)."""
    return Path.home() / ".cache" / "tinymlops" / "agent"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fp:
        for block in iter(lambda: fp.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _download(sdist: Sdist, into: Path) -> Path:
    into.mkdir(parents=True, exist_ok=True)
    archive = into / sdist.archive
    if archive.is_file() and _sha256(archive) == sdist.sha256:
        return archive
    cmd = [
        sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--no-binary", sdist.name,
        "--dest", str(into), f"{sdist.name}=={sdist.version}",
    ]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0 or not archive.is_file():
        tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
        raise SourceError(f"pip download {sdist.name}=={sdist.version} failed: {tail[0]}")
    got = _sha256(archive)
    if got != sdist.sha256:
        archive.unlink(missing_ok=True)
        raise SourceError(f"{sdist.archive}: sha256 {got}, pinned {sdist.sha256}; refusing to build from it")
    return archive


def _extract(sdist: Sdist, archive: Path, dest: Path) -> None:
    wanted = {f"{sdist.root}/{m}" for m in sdist.members}
    with tempfile.TemporaryDirectory(dir=dest.parent) as tmp, tarfile.open(archive, "r:gz") as tar:
        members = [m for m in tar.getmembers() if m.name in wanted and m.isfile()]
        missing = wanted - {m.name for m in members}
        if missing:
            raise SourceError(f"{sdist.archive} lacks {sorted(missing)}")
        tar.extractall(tmp, members=members, filter="data")
        shutil.rmtree(dest, ignore_errors=True)
        Path(tmp, sdist.root).rename(dest)


@contextlib.contextmanager
def cache_lock(cache: Path) -> Iterator[None]:
    """Exclusive use of `cache` across processes (parallel test workers, two CLIs at once): one
    fetches or builds while the others wait, then find the result. Not re-entrant."""
    cache.mkdir(parents=True, exist_ok=True)
    with open(cache / ".lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def fetch(cache: Path | None = None) -> dict[str, Path]:
    """{sdist name: extracted root} for every pinned source, fetched and checked once per cache."""
    cache = cache or default_cache()
    roots = {sdist.name: cache / "src" / f"{sdist.root}-{sdist.sha256[:12]}" for sdist in PINNED}
    if all((roots[s.name] / s.members[-1]).is_file() for s in PINNED):
        return roots
    with cache_lock(cache):
        for sdist in PINNED:
            dest = roots[sdist.name]
            if not (dest / sdist.members[-1]).is_file():
                dest.parent.mkdir(parents=True, exist_ok=True)
                _extract(sdist, _download(sdist, cache / "sdist"), dest)
    return roots
