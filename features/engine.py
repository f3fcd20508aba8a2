"""Streaming feature extraction: image store in, feature file out, bounded memory.

Three threads share the work so the accelerator never waits for the disk:

- a reader thread pulls uint8 batches from the image store into a short
  queue (:func:`iter_image_batches`);
- the calling thread feeds each batch to one compiled Keras model that
  resizes, rescales and runs the backbone on the device
  (:class:`FeatureExtractor`; Keras' cached ``predict_on_batch`` function on
  TensorFlow, a ``jax.jit`` dispatched a batch ahead on JAX);
- a writer thread appends the rows to the ``.partial`` feature file
  (:class:`features.feature_store.FeatureWriter`), so compression overlaps
  the next forward pass.

Only Keras 3 APIs are used, so the same code runs on any Keras backend.

Public API (also the building blocks of ``features.distributed``):
:class:`FeatureExtractor`, :func:`iter_feature_batches` and
:func:`extract_features`.
"""

import contextlib
import logging
import queue
import sys
import threading
import time

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin

from features.backbones import PREPROCESSING_MODES, get_backbone, is_model_file, load_model_file
from features.backend import load_keras
from features.errors import FeatpipeError, first_line
from features.feature_store import FeatureWriter
from features.image_store import ROWS_PER_CHUNK, SPLITS, ImageStore
from features.versions import library_versions
from features.weights import build_with_weights, file_sha256, resolve_weights, seeded_initialisation, strict_weight_loading

log = logging.getLogger(__name__)

PRECISIONS = ("float32", "bfloat16", "mixed_float16")
PREFETCH_BATCHES = 3


class FeatureExtractor(TransformerMixin, BaseEstimator):
    """A pretrained CNN as a scikit-learn transformer: images in, feature rows out.

    Parameters
    ----------
    backbone : str
        A registry name (``featpipe backbones``) or the path of a ``.keras`` model file.
    layer : str or None
        The layer whose output is the feature; ``None`` takes the backbone's default.
    weights : str
        ``"imagenet"``, ``"none"`` (random, seeded) or a path to a weights file.
        With a model file, ``"imagenet"`` means the file's own weights.
    batch_size : int
        Images per forward pass; the last batch is padded to it, so the
        compiled function is traced once.
    precision : {"float32", "bfloat16", "mixed_float16"}
        The Keras dtype policy of the backbone. Features come out as float32.
    device : str or None
        E.g. ``"gpu:0"`` or ``"cpu:0"``; ``None`` lets the backend choose (the GPU when present).
    seed : int
        Seeds the random initialisation of ``weights="none"``.

    Attributes
    ----------
    backbone_ : Backbone
        The registry entry (or an ad-hoc one for a model file).
    layer_ : str
    feature_dim_ : int
    weights_sha256_ : str
    model_ : keras.Model
        The backbone truncated at ``layer_`` (without the resize and rescale).

    Examples
    --------
    >>> extractor = FeatureExtractor("mobilenet_v2", weights="none", batch_size=8).fit()
    >>> extractor.transform(images).shape  # images: uint8 (n, height, width, channels)
    (n, 1280)

    The extractor pickles without its model (it is rebuilt by ``fit``), so
    it can be shipped to Dask workers.
    """

    def __init__(self, backbone="vgg16", layer=None, weights="imagenet", batch_size=32, precision="float32", device=None, seed=0):
        self.backbone = backbone
        self.layer = layer
        self.weights = weights
        self.batch_size = batch_size
        self.precision = precision
        self.device = device
        self.seed = seed

    def fit(self, X=None, y=None):
        """Build the backbone and load its weights. ``X`` and ``y`` are ignored.

        Returns
        -------
        self
        """
        self._check_params()
        keras = load_keras()
        self.device_ = resolve_device(keras, self.device)
        started = time.perf_counter()
        with device_scope(keras, self.device_):
            if is_model_file(self.backbone):
                full_model = self._load_model_file(keras)
            else:
                full_model = self._build_registry_backbone(keras)
            self.model_ = truncate(keras, full_model, self.backbone_.layers[self.layer_], self.precision)
        self.feature_dim_ = self.backbone_.layers[self.layer_].dim
        self.build_seconds_ = time.perf_counter() - started
        self._forwards = {}
        log.info("built %s/%s (%s weights) in %.1f s", self.backbone_.name, self.layer_, self.weights_label_, self.build_seconds_)
        return self

    def _check_params(self):
        if self.precision not in PRECISIONS:
            raise FeatpipeError(f"unknown precision {self.precision!r}; expected one of: {', '.join(PRECISIONS)}")
        if not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise FeatpipeError(f"batch_size: expected an integer >= 1, got {self.batch_size!r}")

    def _build_registry_backbone(self, keras):
        self.backbone_ = get_backbone(self.backbone)
        self.layer_ = self.backbone_.resolve_layer(self.layer)
        choice = resolve_weights(self.weights)
        seeding = seeded_initialisation(keras, self.seed) if choice.is_random else contextlib.nullcontext()
        with seeding, dtype_policy(keras, self.precision):
            model, self.weights_sha256_ = build_with_weights(self.backbone_, keras, choice)
        self.weights_label_ = choice.label
        return model

    def _load_model_file(self, keras):
        if self.precision != "float32":
            raise FeatpipeError("--precision applies to registry backbones; a model file runs in the dtypes it was saved with")
        model, self.backbone_ = load_model_file(keras, self.backbone, self.layer)
        self.layer_ = self.backbone_.default_layer
        choice = resolve_weights(self.weights)
        if choice.is_random:
            raise FeatpipeError("--weights none does not apply to a model file; it brings its own weights (or pass --weights PATH)")
        if choice.path is None:
            self.weights_label_, self.weights_sha256_ = "model file", file_sha256(self.backbone)
        else:
            try:
                with strict_weight_loading():
                    model.load_weights(choice.path)
            except Exception as error:  # Keras raises ValueError or others for mismatched files
                raise FeatpipeError(f"cannot load {choice.path} into {self.backbone}: {first_line(error)}") from None
            self.weights_label_, self.weights_sha256_ = choice.label, file_sha256(choice.path)
        return model

    def transform(self, X):
        """Feature rows of ``X``.

        Parameters
        ----------
        X : ndarray of shape (n_samples, height, width, channels), uint8
            Images at any one size (they are resized to the backbone's
            input); channels 1 (grayscale) or 3 (RGB).

        Returns
        -------
        ndarray of shape (n_samples, feature_dim_), float32
        """
        self._check_fitted()
        X = np.asarray(X)
        batches = ((start, X[start : start + self.batch_size]) for start in range(0, len(X), self.batch_size))
        rows = [batch_rows for _, batch_rows in self.transform_batches(batches)]
        return np.concatenate(rows) if rows else np.empty((0, self.feature_dim_), np.float32)

    def transform_batches(self, batches):
        """Feature rows of each batch, in order, with the device kept one batch ahead.

        Parameters
        ----------
        batches : iterable of (key, images)
            ``images`` as in :meth:`transform`, at most ``batch_size`` of them.

        Yields
        ------
        key
        rows : ndarray of shape (len(images), feature_dim_), float32

        On JAX each batch is dispatched before the previous one's rows are
        fetched, so the device computes while the host hands rows over; on
        TensorFlow ``predict_on_batch`` runs each batch in turn.
        """
        self._check_fitted()
        ahead = None
        for key, images in batches:
            launched = (key,) + self._launch(images)
            if ahead is not None:
                yield ahead[0], self._fetch(*ahead[1:])
            ahead = launched
        if ahead is not None:
            yield ahead[0], self._fetch(*ahead[1:])

    def _check_fitted(self):
        if not hasattr(self, "model_"):
            raise RuntimeError("FeatureExtractor is not fitted yet; call fit() first")

    def _launch(self, images):
        """Start the forward pass of one batch; ``(count, result)`` for :meth:`_fetch`."""
        images = np.asarray(images)
        if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] not in (1, 3):
            raise ValueError(f"X must be uint8 of shape (n_samples, height, width, 1|3); got {images.dtype} {images.shape}")
        count = len(images)
        if count < self.batch_size:
            # A constant batch shape means one trace of the compiled function.
            padding = np.zeros((self.batch_size - count,) + images.shape[1:], images.dtype)
            images = np.concatenate([images, padding])
        forward = self._forward_for(images.shape[1:])
        with device_scope(load_keras(), self.device_):
            return count, forward(images)

    def _fetch(self, count, result):
        # np.asarray waits for the device; the padding rows are dropped.
        return np.asarray(result, dtype=np.float32)[:count]

    def _forward_for(self, image_shape):
        # One wrapper model per stored image shape; all share the backbone's weights.
        image_shape = tuple(int(v) for v in image_shape)
        if image_shape not in self._forwards:
            keras = load_keras()
            with device_scope(keras, self.device_):
                model = assemble(keras, self.model_, self.backbone_, image_shape)
            self._forwards[image_shape] = compiled_forward(keras, model)
        return self._forwards[image_shape]

    def file_attributes(self, image_store, splits=SPLITS):
        """Root attributes of a feature file made from ``image_store`` by this extractor.

        Parameters
        ----------
        image_store : ImageStore
        splits : sequence of str
            The splits the file holds.
        """
        self._check_fitted()
        return {
            "backbone": self.backbone_.name,
            "layer": self.layer_,
            "feature_dim": int(self.feature_dim_),
            "input_size": [int(v) for v in self.backbone_.input_size],
            "preprocessing": PREPROCESSING_MODES[self.backbone_.preprocessing],
            "color": _color_note(image_store.image_shape()[-1], self.backbone_.channels),
            "resize_method": resize_description(),
            "weights": self.weights_label_,
            "weights_sha256": self.weights_sha256_,
            "precision": self.precision,
            "seed": int(self.seed),
            "versions": library_versions(),
            "image_store_fingerprint": image_store.fingerprint,
            "class_names": image_store.class_names,
            "splits": list(splits),
        }

    def __getstate__(self):
        # The Keras model doesn't pickle and needn't: a worker calls fit() again.
        state = super().__getstate__()
        return {key: value for key, value in state.items() if not (key.endswith("_") or key == "_forwards")}


def compiled_forward(keras, model):
    """``images -> rows`` through ``model``, compiled once per input shape.

    On JAX: a ``jax.jit`` of ``model.stateless_call`` that returns without
    waiting for the device (``predict_on_batch`` would wait, and donates the
    weights' buffers to each call). Elsewhere: ``predict_on_batch``, whose
    compiled function Keras caches (a ``tf.function`` on TensorFlow).
    On JAX the weight values are taken now: set weights before the first
    ``transform``, not after.
    """
    if keras.backend.backend() != "jax":
        return model.predict_on_batch
    import jax

    trainable = [variable.value for variable in model.trainable_variables]
    non_trainable = [variable.value for variable in model.non_trainable_variables]

    @jax.jit
    def forward(trainable, non_trainable, images):
        return model.stateless_call(trainable, non_trainable, images, training=False)[0]

    return lambda images: forward(trainable, non_trainable, images)


def resize_description():
    from features.preprocessing import RESIZE_DESCRIPTION

    return RESIZE_DESCRIPTION


def _color_note(stored_channels, backbone_channels):
    if stored_channels == backbone_channels:
        return "as stored"
    if stored_channels == 1:
        return "grayscale repeated to 3 channels"
    return "RGB to grayscale (ITU-R 601 weights)"


def truncate(keras, full_model, tap, precision):
    """``full_model`` cut at ``tap``'s layer (globally averaged when ``tap.pool``)."""
    features = full_model.get_layer(tap.source).output
    if tap.pool:
        with dtype_policy(keras, precision):
            features = keras.layers.GlobalAveragePooling2D(name=f"{tap.source}_avg")(features)
    return keras.Model(full_model.inputs, features, name=f"{full_model.name}_to_{tap.source}")


def assemble(keras, truncated, backbone, image_shape):
    """The one model extraction runs: uint8 images → resize and rescale → backbone → float32 rows.

    Parameters
    ----------
    image_shape : tuple of (height, width, channels)
        The stored image shape.
    """
    from features.preprocessing import ResizeAndRescale

    images = keras.Input(shape=image_shape, dtype="uint8", name="images")
    prepared = ResizeAndRescale(
        backbone.input_size,
        in_channels=image_shape[-1],
        out_channels=backbone.channels,
        preprocessing=backbone.preprocessing,
        name="resize_and_rescale",
    )(images)
    features = truncated(prepared)
    # Rows leave the device as float32 whatever the compute precision.
    rows = keras.layers.Activation("linear", dtype="float32", name="as_float32")(features)
    return keras.Model(images, rows, name=f"featpipe_{truncated.name}")


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


# --- streaming: store → batches → rows → file -------------------------------------------


class _Failed:
    """A worker thread's exception, carried through a queue to the consumer."""

    def __init__(self, error):
        self.error = error


_DONE = object()


def _put(items, item, stop):
    """Put ``item`` into ``items``, giving up once ``stop`` is set (the consumer left)."""
    while not stop.is_set():
        try:
            items.put(item, timeout=0.1)
            return True
        except queue.Full:
            continue
    return False


def iter_image_batches(store, split, start=0, stop=None, batch_size=32, prefetch=PREFETCH_BATCHES):
    """Yield ``(start_row, images)`` for rows ``start:stop`` of ``split``, read ahead by a thread.

    The reader thread keeps at most ``prefetch`` batches waiting, so memory
    stays bounded however large the store. It reads whole store chunks at a
    time (each chunk is decompressed once) and cuts them into batches.

    Yields
    ------
    start_row : int
    images : ndarray of shape (batch, height, width, channels), uint8
        ``batch`` is ``batch_size`` except for the last one.
    """
    stop = store.num_rows(split) if stop is None else min(stop, store.num_rows(split))
    block = max(batch_size, -(-ROWS_PER_CHUNK // batch_size) * batch_size)
    batches = queue.Queue(maxsize=prefetch)
    leave = threading.Event()

    def read():
        try:
            for block_start in range(start, stop, block):
                block_images = store.images(split, block_start, min(block_start + block, stop))
                for offset in range(0, len(block_images), batch_size):
                    if not _put(batches, (block_start + offset, block_images[offset : offset + batch_size]), leave):
                        return
            _put(batches, _DONE, leave)
        except BaseException as error:  # handed to the consumer, which re-raises it
            _put(batches, _Failed(error), leave)

    reader = threading.Thread(target=read, name=f"featpipe-reader-{split}", daemon=True)
    reader.start()
    try:
        while (item := batches.get()) is not _DONE:
            if isinstance(item, _Failed):
                raise item.error
            yield item
    finally:
        leave.set()
        reader.join()


def iter_feature_batches(extractor, store, split, start=0, stop=None, prefetch=PREFETCH_BATCHES):
    """Yield ``(start_row, rows)`` of features for rows ``start:stop`` of ``split``.

    Reading overlaps the forward pass (:func:`iter_image_batches`), and the
    device is kept a batch ahead (:meth:`FeatureExtractor.transform_batches`).
    The extractor must be fitted.
    This is the unit of work a Dask worker runs on its shard.

    Parameters
    ----------
    extractor : FeatureExtractor
    store : ImageStore
    split : {"train", "test"}
    start, stop : int
        Row range; ``stop=None`` means the end of the split.

    Yields
    ------
    start_row : int
    rows : ndarray of shape (batch, feature_dim), float32
    """
    batches = iter_image_batches(store, split, start, stop, extractor.batch_size, prefetch)
    try:
        yield from extractor.transform_batches(batches)
    finally:
        batches.close()


class RowSink:
    """Append rows to a :class:`FeatureWriter` from a thread of its own.

    Compression and flushing then overlap the next forward pass. Rows are
    handed on in whole HDF5 chunks (HDF5 compresses each chunk once, with
    no read-back of a half-written one); the few rows of an unfinished
    chunk wait in memory, and a kill loses only them. The queue is short,
    so memory stays bounded; a write error surfaces in the caller on its
    next :meth:`put` or on :meth:`close`.
    """

    def __init__(self, writer, depth=PREFETCH_BATCHES):
        self._writer = writer
        self._next_row = {name: writer.rows_done(name) for name in writer.splits}
        self._total = {name: len(labels) for name, (labels, _) in writer.splits.items()}
        self._per_chunk = {name: writer.rows_per_chunk(name) for name in writer.splits}
        self._pending = {name: [] for name in writer.splits}
        self._rows = queue.Queue(maxsize=depth)
        self._leave = threading.Event()
        self._error = None
        self._thread = threading.Thread(target=self._write, name="featpipe-writer", daemon=True)
        self._thread.start()

    def _write(self):
        while (item := self._rows.get()) is not _DONE:
            split, rows = item
            blocks = [rows]
            # When the writer lags, take what else waits for this split into the
            # same append: one flush for several chunks.
            # (Only this thread takes items, so the head of the queue stays put.)
            while self._rows.queue and self._rows.queue[0] is not _DONE and self._rows.queue[0][0] == split:
                blocks.append(self._rows.get_nowait()[1])
            if not self._write_block(split, np.concatenate(blocks) if len(blocks) > 1 else rows):
                return

    def _write_block(self, split, rows):
        try:
            self._writer.append(split, rows)
            return True
        except BaseException as error:  # re-raised in the caller's thread
            self._error = error
            self._leave.set()
            return False

    def put(self, split, rows):
        """Queue ``rows`` (ndarray of shape (n, feature_dim)) of ``split``, in row order."""
        self._raise_if_failed()
        self._pending[split].append(rows)
        end = self._next_row[split] + sum(map(len, self._pending[split]))
        if end < self._total[split]:
            end -= end % self._per_chunk[split]
        ready = end - self._next_row[split]
        if ready > 0:  # join the waiting batches only when a whole chunk is there
            waiting = np.concatenate(self._pending[split])
            self._send(split, waiting[:ready])
            self._pending[split] = [waiting[ready:]] if ready < len(waiting) else []

    def _send(self, split, rows, check=True):
        _put(self._rows, (split, rows), self._leave)
        self._next_row[split] += len(rows)
        if check:
            self._raise_if_failed()

    def close(self, check=True):
        """Write every row handed over, then stop the thread.

        Also after an interruption: rows already computed are worth keeping
        for the resume. ``check=False`` leaves a write error unraised (when
        another error is on its way up already).
        """
        for split, pending in self._pending.items():
            if pending:
                self._send(split, np.concatenate(pending), check)
        self._pending = {split: [] for split in self._pending}
        _put(self._rows, _DONE, self._leave)
        self._thread.join()
        if check:
            self._raise_if_failed()

    def _raise_if_failed(self):
        if self._error is not None:
            raise self._error


def extract_features(image_store_path, out_path, extractor, *, overwrite=False, progress=True, splits=None):
    """Extract features of every image in a store into a self-contained feature file.

    Resumes a ``<out_path>.partial`` left by an interrupted run with the same
    settings, returns at once when a complete file with the same settings
    exists, and refuses one made with other settings unless ``overwrite``.
    An interruption (Ctrl-C, a crash, ``kill -9``) leaves the ``.partial``
    with every row flushed so far.

    Parameters
    ----------
    image_store_path : path-like
        ``images.h5`` written by ``featpipe prepare``.
    out_path : path-like
        The feature file, e.g. ``data/features/vgg16-fc2.h5``.
    extractor : FeatureExtractor
        Fitted here if it isn't yet.
    overwrite : bool
    progress : bool
        Show a progress bar with images per second on stderr.
    splits : sequence of str or None
        The splits to extract (the file holds only these); ``None`` means all.

    Returns
    -------
    dict
        ``rows`` (``{split: rows in the file}``), ``rows_computed`` (this run), ``feature_dim``,
        ``seconds``, ``images_per_second``, ``path``, ``weights``,
        ``random_weights``, ``skipped_because_complete``.
    """
    splits = tuple(splits or SPLITS)
    with ImageStore(image_store_path) as store:
        if not hasattr(extractor, "model_"):
            extractor.fit()
        attrs = extractor.file_attributes(store, splits)
        split_rows = {name: (store.labels(name), store.ids(name)) for name in splits}
        rows = {name: len(labels) for name, (labels, _) in split_rows.items()}
        writer = FeatureWriter(out_path, attrs=attrs, splits=split_rows, overwrite=overwrite)
        if writer.already_complete:
            return run_summary(attrs, out_path, rows, computed=0, seconds=0.0, skipped=True)
        with writer:
            started = time.perf_counter()
            computed = _extract_into(writer, extractor, store, splits, progress)
            writer.finish()
            seconds = time.perf_counter() - started
    return run_summary(attrs, out_path, rows, computed, seconds)


def _extract_into(writer, extractor, store, splits, progress):
    """Compute and write every row ``writer`` lacks; the number of rows computed."""
    from tqdm.auto import tqdm

    todo = {name: writer.rows_done(name) for name in splits}
    total = sum(store.num_rows(name) for name in splits)
    done = sum(todo.values())
    label = f"{extractor.backbone_.name}-{extractor.layer_}"
    with tqdm(total=total, initial=done, unit="img", desc=label, disable=not progress, file=sys.stderr, smoothing=0.1) as bar:
        sink = RowSink(writer)
        try:
            for name, first_row in todo.items():
                for _, rows in iter_feature_batches(extractor, store, name, start=first_row):
                    sink.put(name, rows)
                    bar.update(len(rows))
        except BaseException:
            sink.close(check=False)
            raise
        sink.close()
    return total - done


def run_summary(attrs, path, rows, computed, seconds, skipped=False, **extra):
    """What an extraction run did, for the CLI and for callers: the same keys however it ran.

    Parameters
    ----------
    attrs : dict
        The feature file's root attributes.
    rows : dict
        ``{split: rows in the file}``.
    computed : int
        Rows computed by this run (the rest were on disk already).
    seconds : float
        Time spent extracting.
    skipped : bool
        The file was complete already; nothing was done.
    **extra
        Further entries, e.g. the Dask run's shard counts.
    """
    return {
        "rows": rows,
        "rows_computed": computed,
        "feature_dim": int(attrs["feature_dim"]),
        "seconds": round(seconds, 3),
        "images_per_second": round(computed / seconds, 2) if seconds > 0 else None,
        "path": str(path),
        "weights": attrs["weights"],
        "random_weights": attrs["weights"] == "none",
        "skipped_because_complete": skipped,
        **extra,
    }
