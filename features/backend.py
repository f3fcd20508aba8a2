"""Import Keras quietly, once, whichever backend the environment selects.

TensorFlow prints start-up noise (oneDNN notices, absl's "before
InitializeLog" lines, CUDA probing) that would bury featpipe's own output.
Since TensorFlow 2.20 some of it comes from C++ at import time and ignores
``TF_CPP_MIN_LOG_LEVEL``, so the import runs with the process's stderr
pointed at /dev/null, unless the user set ``TF_CPP_MIN_LOG_LEVEL`` to ask
for TensorFlow's logs. Keras 3 picks its backend from ``KERAS_BACKEND``
(tensorflow by default; jax and torch work too, since featpipe only uses
backend-neutral Keras APIs).
"""

import contextlib
import functools
import logging
import os
import sys


@functools.cache
def load_keras():
    """Return the ``keras`` module, imported with TensorFlow's logging turned down."""
    quiet = "TF_CPP_MIN_LOG_LEVEL" not in os.environ
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        with native_stderr_silenced(quiet):
            import keras

            if keras.backend.backend() == "tensorflow":
                import tensorflow as tf
    except ImportError as error:
        from features.errors import FeatpipeError

        raise FeatpipeError(
            f"Keras with a backend is needed ({error}); install one: pip install -e '.[cpu]' (or '.[gpu]')"
        ) from None
    logging.getLogger("absl").setLevel(logging.ERROR)
    if keras.backend.backend() == "tensorflow":
        tf.get_logger().setLevel(logging.ERROR)
        tf.autograph.set_verbosity(0)
    return keras


@contextlib.contextmanager
def native_stderr_silenced(enabled=True):
    """Point file descriptor 2 at /dev/null for the block: C++ libraries write there directly."""
    if not enabled:
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)
