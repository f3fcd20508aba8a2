"""Import Keras quietly, once, whichever backend the environment selects.

TensorFlow prints start-up noise (oneDNN notices, CUDA probing, absl
warnings) that would bury featpipe's own output; it is silenced here unless
the user set ``TF_CPP_MIN_LOG_LEVEL`` themselves. Keras 3 picks its backend
from ``KERAS_BACKEND`` (tensorflow by default; jax and torch work too, since
featpipe only uses backend-neutral Keras APIs).
"""

import functools
import logging
import os


@functools.cache
def load_keras():
    """Return the ``keras`` module, imported with TensorFlow's logging turned down."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        import keras
    except ImportError:
        from features.errors import FeatpipeError

        raise FeatpipeError(
            "Keras is not installed with a backend; install one: pip install -e '.[cpu]' (or '.[gpu]')"
        ) from None
    logging.getLogger("absl").setLevel(logging.ERROR)
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        tf.get_logger().setLevel(logging.ERROR)
        tf.autograph.set_verbosity(0)
    return keras
