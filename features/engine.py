"""Streaming feature extraction: image store in, feature file out, bounded memory.

Three threads share the work so the accelerator never waits for the disk:

- a reader thread pulls uint8 batches from the image store into a short
  queue (:func:`iter_image_batches`);
- the calling thread feeds each batch to one compiled Keras model that
  resizes, rescales and runs the backbone on the device
  (:class:`FeatureExtractor`; Keras' cached ``predict_on_batch`` function on
  TensorFlow, a ``jax.jit`` dispatched a batch ahead on JAX);
- a writer thread appends the rows to the ``.partial`` feature file
  (:class:`storage.feature_store.FeatureWriter`), so compression overlaps
  the next forward pass.

Only Keras 3 APIs are used, so the same code runs on any Keras backend.

Public API (also the building blocks of ``features.distributed``):
:class:`FeatureExtractor`, :func:`iter_feature_batches` and
:func:`extract_features`.
"""

import dataclasses
import logging
import sys
import time

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin

from features.backbones import PREPROCESSING_MODES, get_backbone, is_model_file, load_model_file
from features.weights import build_with_weights, resolve_weights, strict_weight_loading
from plumbing.backend import device_description, device_scope, dtype_policy, load_keras, resolve_device
from plumbing.errors import FeatpipeError, first_line
from plumbing.hashing import file_sha256
from plumbing.versions import library_versions
from storage.chunkio import CodecPool
from storage.feature_store import FeatureWriter
from storage.image_store import SPLITS, ImageStore
from storage.streaming import PREFETCH_BATCHES, RowSink, iter_image_batches

log = logging.getLogger(__name__)

PRECISIONS = ("float32", "bfloat16", "mixed_float16")
# The weights label of a user's model file, which brings its own.
MODEL_FILE_WEIGHTS = "model file"


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
        with dtype_policy(keras, self.precision):
            model, self.weights_sha256_ = build_with_weights(self.backbone_, keras, choice, self.seed)
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
            self.weights_label_, self.weights_sha256_ = MODEL_FILE_WEIGHTS, file_sha256(self.backbone)
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

    def stage(self, images):
        """A batch made ready for :meth:`transform_batches`: checked, padded, and on its way to the device.

        Safe to call from another thread (the reader's), so that on JAX the
        copy to the accelerator overlaps the forward pass of the batch before.

        Parameters
        ----------
        images : ndarray of shape (n <= batch_size, height, width, channels), uint8
        """
        images = np.asarray(images)
        if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] not in (1, 3):
            raise ValueError(f"X must be uint8 of shape (n_samples, height, width, 1|3); got {images.dtype} {images.shape}")
        count = len(images)
        if count < self.batch_size:
            # A constant batch shape means one trace of the compiled function.
            padding = np.zeros((self.batch_size - count,) + images.shape[1:], images.dtype)
            images = np.concatenate([images, padding])
        return StagedBatch(count, _to_device(images, self.device_))

    def _launch(self, images):
        """Start the forward pass of one batch; ``(count, result)`` for :meth:`_fetch`."""
        staged = images if isinstance(images, StagedBatch) else self.stage(images)
        forward = self._forward_for(tuple(staged.images.shape[1:]))
        with device_scope(load_keras(), self.device_):
            return staged.count, forward(staged.images)

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
        settings = self.settings()
        return {
            **{key: settings[key] for key in ("backbone", "layer", "feature_dim", "input_size", "preprocessing")},
            "color": _color_note(image_store.image_shape()[-1], self.backbone_.channels),
            **{key: settings[key] for key in ("resize_method", "weights", "weights_sha256", "precision", "seed")},
            "versions": library_versions(),
            "image_store_fingerprint": image_store.fingerprint,
            "class_names": image_store.class_names,
            "splits": list(splits),
        }

    def settings(self):
        """What makes this extractor's numbers, as a feature file records them (:data:`~storage.feature_store.EXTRACTOR_KEYS`).

        :meth:`from_settings` builds the same extractor again from them.
        """
        self._check_fitted()
        return {
            "backbone": self.backbone_.name,
            "layer": self.layer_,
            "feature_dim": int(self.feature_dim_),
            "input_size": [int(v) for v in self.backbone_.input_size],
            "preprocessing": PREPROCESSING_MODES[self.backbone_.preprocessing],
            "resize_method": resize_description(),
            "weights": self.weights_label_,
            "weights_sha256": self.weights_sha256_,
            "precision": self.precision,
            "seed": int(self.seed),
        }

    @classmethod
    def from_settings(cls, settings, *, batch_size=32, device=None, precision=None):
        """An unfitted extractor that makes the numbers ``settings`` describe (:meth:`settings`, or a feature file's attributes).

        ``weights`` is taken as recorded (a model file's own weights are
        recorded as ``"model file"``: asked for as ``"imagenet"``, which
        means them); ``precision`` replaces the recorded one when given.
        Fitting it rebuilds the backbone; :func:`storage.feature_store.settings_mismatch`
        then says whether it makes the same numbers.
        """
        weights = "imagenet" if settings["weights"] == MODEL_FILE_WEIGHTS else settings["weights"]
        return cls(
            backbone=settings["backbone"], layer=settings["layer"], weights=weights, batch_size=batch_size,
            precision=precision or settings["precision"], device=device, seed=int(settings.get("seed", 0)),
        )  # fmt: skip

    def __getstate__(self):
        # The Keras model doesn't pickle and needn't: a worker calls fit() again.
        state = super().__getstate__()
        return {key: value for key, value in state.items() if not (key.endswith("_") or key == "_forwards")}


@dataclasses.dataclass(frozen=True)
class StagedBatch:
    """A batch padded to the batch size; ``count`` rows of it are real."""

    count: int
    images: object


def _to_device(images, device):
    """On JAX, start copying ``images`` to the device now (asynchronously); elsewhere keep the array."""
    keras = load_keras()
    if keras.backend.backend() != "jax":
        return images
    import jax

    target = jax.devices(device.split(":")[0])[int(device.split(":")[1])] if device else None
    return jax.device_put(images, target)


def compiled_forward(keras, model):
    """``inputs -> outputs`` through ``model`` in inference mode, compiled once per input shape.

    On JAX: a ``jax.jit`` of ``model.stateless_call`` that returns without
    waiting for the device (``predict_on_batch`` would wait). The weight
    values are read at each call: Keras' ``predict`` donates the weights'
    buffers on JAX, so values captured once would die when anyone calls
    ``predict`` on a model sharing them. Elsewhere: ``predict_on_batch``,
    whose compiled function Keras caches (a ``tf.function`` on TensorFlow).
    """
    if keras.backend.backend() != "jax":
        return model.predict_on_batch
    import jax

    @jax.jit
    def forward(trainable, non_trainable, inputs):
        return model.stateless_call(trainable, non_trainable, inputs, training=False)[0]

    def call(inputs):
        trainable = [variable.value for variable in model.trainable_variables]
        non_trainable = [variable.value for variable in model.non_trainable_variables]
        return forward(trainable, non_trainable, inputs)

    return call


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


def iter_feature_batches(extractor, store, split, start=0, stop=None, *, pool, prefetch=PREFETCH_BATCHES):
    """Yield ``(start_row, rows)`` of features for rows ``start:stop`` of ``split``.

    Reading overlaps the forward pass (:func:`storage.streaming.iter_image_batches`,
    which also starts each batch's copy to the device), and the device is
    kept a batch ahead (:meth:`FeatureExtractor.transform_batches`). The
    extractor must be fitted. This is the unit of work a Dask worker runs on its shard.

    Parameters
    ----------
    extractor : FeatureExtractor
    store : ImageStore
    split : {"train", "test"}
    start, stop : int
        Row range; ``stop=None`` means the end of the split.
    pool : CodecPool
        Decompresses the image store's chunks.

    Yields
    ------
    start_row : int
    rows : ndarray of shape (batch, feature_dim), float32
    """
    batches = iter_image_batches(
        store, split, start, stop, extractor.batch_size, pool=pool, prefetch=prefetch, stage=extractor.stage
    )
    try:
        yield from extractor.transform_batches(batches)
    finally:
        batches.close()


def extract_features(image_store_path, out_path, extractor, *, overwrite=False, progress=True, splits=None, io_threads=None):
    """Extract features of every image in a store into a self-contained feature file.

    Resumes a ``<out_path>.partial`` left by an interrupted run with the same
    settings (rows on disk are read back first: only those that decode count),
    returns at once when a complete file with the same settings exists, and
    refuses one made with other settings unless ``overwrite``. An
    interruption (Ctrl-C, a crash, ``kill -9``, a full disk) leaves the
    ``.partial`` with every row flushed so far; another process writing the
    same file at the same time is refused.

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
    io_threads : int or None
        Threads that decompress the image store and compress the features
        (:class:`~storage.chunkio.CodecPool`); ``None``: one per core, at most 16.

    Returns
    -------
    dict
        :func:`run_summary`'s keys, with ``backend``, ``device``, ``io_threads``
        and ``first_batch_seconds`` (from the process's start to the first
        batch of features: the start-up a command-line run pays).
    """
    splits = tuple(splits or SPLITS)
    with ImageStore(image_store_path) as store, CodecPool(io_threads) as pool:
        if not hasattr(extractor, "model_"):
            extractor.fit()
        attrs = extractor.file_attributes(store, splits)
        split_rows = {name: (store.labels(name), store.ids(name)) for name in splits}
        rows = {name: len(labels) for name, (labels, _) in split_rows.items()}
        where = {"backend": library_versions()["backend"], "device": device_description(extractor.device_), "io_threads": pool.threads}
        writer = FeatureWriter(out_path, attrs=attrs, splits=split_rows, overwrite=overwrite, pool=pool)
        if writer.already_complete:
            return run_summary(attrs, out_path, rows, computed=0, seconds=0.0, skipped=True, **where)
        with writer:
            started = time.perf_counter()
            computed, first_batch_at = _extract_into(writer, extractor, store, splits, pool, progress)
            writer.finish()
            seconds = time.perf_counter() - started
    return run_summary(attrs, out_path, rows, computed, seconds, **where, first_batch_seconds=_since_launch(first_batch_at))


def _extract_into(writer, extractor, store, splits, pool, progress):
    """Compute and write every row ``writer`` lacks; the rows computed, and when the first batch came (epoch s)."""
    from tqdm.auto import tqdm

    todo = {name: writer.rows_done(name) for name in splits}
    total = sum(store.num_rows(name) for name in splits)
    done = sum(todo.values())
    label = f"{extractor.backbone_.name}-{extractor.layer_}"
    first_batch_at = None
    with tqdm(total=total, initial=done, unit="img", desc=label, disable=not progress, file=sys.stderr, smoothing=0.1) as bar:
        sink = RowSink(writer)
        try:
            for name, first_row in todo.items():
                # A resume recomputes from where an uninterrupted run's batch began: the same images in each
                # forward pass give the same float32 bits (some CPUs round a row differently in another batch).
                skip = first_row % extractor.batch_size
                for _, rows in iter_feature_batches(extractor, store, name, start=first_row - skip, pool=pool):
                    first_batch_at = first_batch_at or time.time()
                    rows, skip = rows[skip:], 0
                    sink.put(name, rows)
                    bar.update(len(rows))
        except BaseException:
            sink.close(check=False)
            raise
        sink.close()
    return total - done, first_batch_at


def _since_launch(moment):
    """Seconds from this process's start to ``moment`` (epoch seconds), or None."""
    if moment is None:
        return None
    import psutil

    return round(moment - psutil.Process().create_time(), 2)


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
