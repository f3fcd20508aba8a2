"""How featpipe reaches Keras: a quiet import, its home folder, seeded random weights, devices and precision.

Import Keras quietly, once, whichever backend the environment selects.

TensorFlow prints start-up noise (oneDNN notices, absl's "before
InitializeLog" lines, CUDA probing) that would bury featpipe's own output.
Since TensorFlow 2.20 some of it comes from C++ at import time and ignores
``TF_CPP_MIN_LOG_LEVEL`` (even ``3``), so the import runs with the process's
stderr pointed at /dev/null, whatever the environment says, unless
:func:`show_tensorflow_logs` asked for them (``featpipe -v``); after the
import, ``TF_CPP_MIN_LOG_LEVEL`` is 2 (errors only) unless the user set it.
Keras 3 picks its backend from ``KERAS_BACKEND``
(tensorflow by default; jax and torch work too, since featpipe only uses
backend-neutral Keras APIs). On JAX, compiled kernels are kept on disk
(:func:`keep_jax_compilations`), so that only the first process compiles.

This is also the one module that touches a private Keras name
(:func:`seeded_initialisation`), for a reason given there.
"""

import contextlib
import functools
import logging
import os
import random
import sys
from pathlib import Path

from plumbing.errors import FeatpipeError

log = logging.getLogger(__name__)

# Whether TensorFlow's own start-up and log lines reach stderr; `featpipe -v` turns them on.
_tensorflow_logs = {"shown": False}


def show_tensorflow_logs(shown=True):
    """Let TensorFlow print its start-up lines and logs (or not): call before :func:`load_keras`.

    ``featpipe -v`` calls it; without it, the import is silent and
    ``TF_CPP_MIN_LOG_LEVEL`` defaults to 2, in this process and in those it
    starts (Dask and joblib workers inherit the environment).
    """
    _tensorflow_logs["shown"] = bool(shown)


@functools.cache
def load_keras():
    """Return the ``keras`` module, imported with TensorFlow's logging turned down (see :func:`show_tensorflow_logs`)."""
    shown = _tensorflow_logs["shown"]
    if not shown:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        with native_stderr_silenced(not shown):
            import keras

            if keras.backend.backend() == "tensorflow":
                import tensorflow as tf
    except ImportError as error:
        from plumbing.errors import FeatpipeError

        raise FeatpipeError(
            f"Keras with a backend is needed ({error}); install one: pip install -e '.[cpu]' (or on a GPU box '.[gpu-jax]' with KERAS_BACKEND=jax, or '.[gpu]')"
        ) from None
    if not shown:
        logging.getLogger("absl").setLevel(logging.ERROR)
        if keras.backend.backend() == "tensorflow":
            tf.get_logger().setLevel(logging.ERROR)
            tf.autograph.set_verbosity(0)
    if keras.backend.backend() == "jax":
        keep_jax_compilations(keras_home() / "jax_cache")
    return keras


def keep_jax_compilations(folder):
    """Turn on JAX's persistent compilation cache, in ``folder`` unless the user chose one.

    On JAX every process compiles a random-initialisation kernel per weight
    shape when it builds a backbone (whatever the weights: Keras initialises
    before it loads), then the forward pass: 9 s of MobileNetV2's start on 2
    CPU cores, against 1.3 s when the next process (a rerun, a Dask worker)
    finds them on disk. Most of those kernels compile in less than JAX's
    default minimum for caching (1 s), so the minimum is 0 unless the user
    set one.
    ``JAX_COMPILATION_CACHE_DIR`` chooses another folder (empty: no cache).
    """
    import jax

    if "JAX_COMPILATION_CACHE_DIR" not in os.environ and not jax.config.jax_compilation_cache_dir:
        jax.config.update("jax_compilation_cache_dir", str(folder))
    if "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS" not in os.environ:
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)


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


def keras_home():
    """Keras' home folder: ``$KERAS_HOME``, else ``~/.keras`` (``/tmp/.keras`` when home is read-only).

    Keras' own documented rule, which it applies once, when imported: that is
    why a test fakes an empty cache with ``KERAS_HOME`` in a subprocess.
    Application weights live in ``<home>/models``, datasets in ``<home>/datasets``
    and the backend choice in ``<home>/keras.json``.
    """
    if os.environ.get("KERAS_HOME"):
        return Path(os.environ["KERAS_HOME"]).expanduser()
    home = Path.home()
    return (home if os.access(home, os.W_OK) else Path("/tmp")) / ".keras"


@contextlib.contextmanager
def seeded_initialisation(keras, seed):
    """Make Keras' random initial weights a function of ``seed`` alone, in any process.

    ``keras.utils.set_random_seed`` seeds Python's global ``random``, from
    which Keras draws the seed of every unseeded initializer; but other
    threads draw from it too (a Dask worker's heartbeat jitter), so on a
    worker the weights would differ from a plain run's. While the block runs,
    Keras gets a ``random.Random(seed)`` of its own, which gives the same
    draws as the freshly seeded global one. Keras has no public way to do
    this, so this is featpipe's one use of a private Keras name
    (``keras.src.random.seed_generator.python_random``); should a Keras
    release move it, the global generator is used as is (same numbers in a
    plain process; a Dask worker may then differ, and says so in its
    identity check).
    """
    keras.utils.set_random_seed(seed)
    try:
        from keras.src.random import seed_generator
    except ImportError:
        seed_generator = None
    if seed_generator is None or not hasattr(seed_generator, "python_random"):
        log.debug("Keras has no seed_generator.python_random; random weights come from the global generator")
        yield
        return
    shared = seed_generator.python_random
    seed_generator.python_random = random.Random(seed)
    try:
        yield
    finally:
        seed_generator.python_random = shared


@contextlib.contextmanager
def dtype_policy(keras, precision):
    """Build layers under the Keras dtype policy ``precision``, then restore the old one."""
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(precision)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


def resolve_device(keras, device):
    """``device`` normalised to Keras' ``"gpu:0"`` form, checked against this machine's devices."""
    if device is None:
        return None
    # Every backend can run on the CPU, but Keras on JAX lists only the accelerators when it has one.
    available = list(dict.fromkeys(["cpu:0", *(_normal_device(name) for name in keras.distribution.list_devices())]))
    wanted = _normal_device(device)
    if wanted not in available:
        raise FeatpipeError(f"unknown device {device!r}; this machine has: {', '.join(available)}")
    return wanted


def _normal_device(name):
    name = str(name).strip().lower().lstrip("/")
    name = name.removeprefix("device:").replace("cuda", "gpu")
    return name if ":" in name else name + ":0"


def device_scope(keras, device):
    """``keras.device(device)``, or no scope at all when ``device`` is ``None``."""
    return keras.device(device) if device else contextlib.nullcontext()


def device_description(device):
    """Where the forward pass runs, for people: ``gpu:0 (NVIDIA H100 80GB HBM3)`` or ``cpu:0``."""
    keras = load_keras()
    names = [_normal_device(name) for name in keras.distribution.list_devices()]
    device = device or next((name for name in names if not name.startswith("cpu")), "cpu:0")
    kind = ""
    if keras.backend.backend() == "jax" and not device.startswith("cpu"):
        import jax

        kind = jax.devices(device.split(":")[0])[int(device.split(":")[1])].device_kind
    return f"{device} ({kind})" if kind else device
