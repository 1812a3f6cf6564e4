"""The one door to TensorFlow: every module in tinymlops.ml imports it from here.

TensorFlow's native libraries print start-up notes (oneDNN, CUDA probing) straight to file
descriptor 2 while they load, whatever the Python log level. They are silenced here, once, for
the import and the first device probe only: errors raised afterwards still reach the user.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Iterator

import tinymlops  # noqa: F401  (sets TF_USE_LEGACY_KERAS before the import below)


@contextlib.contextmanager
def _native_stderr_silenced() -> Iterator[None]:
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


with _native_stderr_silenced():
    import tensorflow as tf

    tf.config.set_visible_devices([], "GPU")  # probes CUDA now, inside the silence; CPU only
    import tf_keras  # noqa: F401

tf.get_logger().setLevel(logging.ERROR)
logging.getLogger("absl").setLevel(logging.ERROR)

__all__ = ["tf"]
