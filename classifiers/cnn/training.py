"""What the image models share: augmentation, the training loop, its history, saving.

Both the CNN trained from scratch (:mod:`classifiers.cnn.scratch`) and the
fine-tuned backbone (:mod:`classifiers.cnn.finetune`) take the stored uint8
images and learn with the course's tricks of the trade:

- data augmentation as Keras preprocessing layers inside the model, on the
  images as stored (0-255, before any rescaling), active only in training
  (``model.fit``; ``predict`` and ``training=False`` leave images as they
  are), each a name with a small fixed magnitude (:data:`AUGMENTATIONS`);
- Adam, with a learning-rate schedule: ``plateau`` (halve the rate when the
  monitored loss stalls for two epochs, Keras' ``ReduceLROnPlateau``),
  ``cosine`` (cosine decay over ``epochs``) or ``constant``;
- early stopping on a stratified validation split of the training images,
  with the best epoch's weights restored; only when that split gives every
  class ``min_validation_per_class`` images (else the training loss is
  watched: two validation images per class pick an epoch by luck), as the
  dense head does.

Keras is imported only inside the functions, so importing this module (and
``classifiers``) stays cheap.
"""

import dataclasses
import time

import numpy as np

from classifiers.dense import MIN_VALIDATION_PER_CLASS, early_stopping_split
from classifiers.evaluation import check_labels
from plumbing.atomic import atomic_output
from plumbing.backend import load_keras
from plumbing.errors import FeatpipeError
from storage.image_store import check_images

PREDICT_BATCH = 256
LR_SCHEDULES = ("plateau", "cosine", "constant")
# ReduceLROnPlateau's settings: halve after two epochs without improvement.
PLATEAU_FACTOR = 0.5
PLATEAU_PATIENCE = 2

# name -> (what it does, the keras.layers class, its settings). Magnitudes are
# fixed and small: shifts and zooms of 10%, rotations up to 10 degrees, so
# the image still shows what its label says. Pixels moved in from outside are
# 0 (black, Fashion-MNIST's background).
AUGMENTATIONS = {
    "horizontal_flip": ("mirror left-right, half the time", "RandomFlip", {"mode": "horizontal"}),
    "vertical_flip": ("mirror top-bottom, half the time", "RandomFlip", {"mode": "vertical"}),
    "shift": ("shift up to 10% of the height and width", "RandomTranslation", {"height_factor": 0.1, "width_factor": 0.1, "fill_mode": "constant"}),
    "zoom": ("zoom in or out up to 10%", "RandomZoom", {"height_factor": 0.1, "fill_mode": "constant"}),
    "rotation": ("rotate up to 10 degrees either way", "RandomRotation", {"factor": 10 / 360, "fill_mode": "constant"}),
}  # fmt: skip


def check_augment(names):
    """``names`` as a tuple, or a :class:`FeatpipeError` naming the first unknown one and the valid ones."""
    if isinstance(names, str):
        raise FeatpipeError(f"augment: expected a list of names, got the string {names!r}")
    for name in names:
        if name not in AUGMENTATIONS:
            raise FeatpipeError(f"unknown augmentation {name!r}; expected some of: {', '.join(AUGMENTATIONS)}")
    return tuple(names)


def augmented(keras, images, names, seed):
    """``images`` through the augmentation layers ``names``, in order (a symbolic tensor in, one out).

    The layers compute in float32 whatever the dtype policy, and are each
    seeded from ``seed``. With no names, ``images`` comes back unchanged.
    """
    x = images
    for index, name in enumerate(check_augment(names)):
        _, layer_class, options = AUGMENTATIONS[name]
        layer = getattr(keras.layers, layer_class)(
            **options, seed=seed + index, dtype="float32", name=f"augment_{name}"
        )
        x = layer(x)
    return x


def check_positive_int(name, value):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise FeatpipeError(f"{name}: expected an integer >= 1, got {value!r}")
    return int(value)


def check_fraction(name, value, upper=1.0):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < upper:
        raise FeatpipeError(f"{name}: expected a number in [0, {upper:g}), got {value!r}")
    return float(value)


@dataclasses.dataclass(frozen=True)
class TrainingSettings:
    """How a model is fitted; checked when made.

    learning_rate : float, Adam's initial step size
    lr_schedule : {"plateau", "cosine", "constant"}
    epochs : int, at most this many passes
    batch_size : int
    patience : int or None
        Epochs without a better monitored loss before stopping, the best
        epoch's weights kept; None: no early stopping (every epoch, the last one's weights).
    """

    learning_rate: float = 1e-3
    lr_schedule: str = "plateau"
    epochs: int = 30
    batch_size: int = 64
    patience: int = 5

    def __post_init__(self):
        if (
            isinstance(self.learning_rate, bool)
            or not isinstance(self.learning_rate, (int, float))
            or not self.learning_rate > 0
        ):
            raise FeatpipeError(f"learning_rate: expected a number > 0, got {self.learning_rate!r}")
        if self.lr_schedule not in LR_SCHEDULES:
            raise FeatpipeError(f"unknown lr_schedule {self.lr_schedule!r}; expected one of: {', '.join(LR_SCHEDULES)}")
        check_positive_int("epochs", self.epochs)
        check_positive_int("batch_size", self.batch_size)
        if self.patience is not None and (
            isinstance(self.patience, bool) or not isinstance(self.patience, int) or self.patience < 0
        ):
            raise FeatpipeError(f"patience: expected an integer >= 0 or null (no early stopping), got {self.patience!r}")

    def steps_per_epoch(self, n_samples):
        """Batches in one pass over ``n_samples`` images (the last one may be short)."""
        return -(-n_samples // self.batch_size)


@dataclasses.dataclass
class TrainingHistory:
    """What a fit did, for the model record.

    Attributes
    ----------
    epochs_run : int
    best_epoch : int
        The epoch (from 1, counted over all phases) whose weights the model kept
        (the last one without early stopping).
    fit_seconds : float
    monitor : {"val_loss", "loss"}
        What early stopping and the plateau schedule watched: ``loss`` when nothing was held out.
    curve : dict of str to list
        One entry per epoch: ``epoch``, ``phase`` (1, or 2 for fine-tuning's
        second phase), ``loss``, ``accuracy``, ``val_loss``, ``val_accuracy``
        (only with a validation split), ``learning_rate`` (what the epoch
        trained with; for ``cosine``, where it ended) and ``seconds``.
    phases : list of dict
        Per phase: ``phase``, ``epochs_run``, ``best_epoch`` (within the phase),
        ``learning_rate`` (initial) and, for fine-tuning, what was trained.
    """

    epochs_run: int
    best_epoch: int
    fit_seconds: float
    monitor: str
    curve: dict
    phases: list

    def to_record(self):
        """A JSON-ready dict: the model record's ``training`` field."""
        return dataclasses.asdict(self)

    def then(self, later):
        """This history followed by ``later``'s (a later phase of the same model); ``later``'s best is kept."""
        offset = self.epochs_run
        curve = {key: self.curve[key] + later.curve[key] for key in self.curve}
        curve["epoch"] = self.curve["epoch"] + [offset + epoch for epoch in later.curve["epoch"]]
        return TrainingHistory(
            epochs_run=offset + later.epochs_run,
            best_epoch=offset + later.best_epoch,
            fit_seconds=self.fit_seconds + later.fit_seconds,
            monitor=later.monitor,
            curve=curve,
            phases=self.phases + later.phases,
        )


def split_for_validation(images, labels, fraction, seed, min_per_class=MIN_VALIDATION_PER_CLASS):
    """Hold out ``fraction`` of the images (stratified) when that gives every class ``min_per_class`` of them.

    Below that, early stopping on the held-out images would choose the epoch
    by the luck of a few images (at 20 labels per class, two a class), so
    nothing is held out and the training loss is watched
    (:func:`classifiers.dense.early_stopping_split`, the dense head's rule).

    Returns ``(images_fit, labels_fit, validation)``, ``validation`` being
    ``(images, labels)`` or ``None`` when nothing is held out.
    """
    fraction = check_fraction("validation_fraction", fraction)
    if isinstance(min_per_class, bool) or not isinstance(min_per_class, (int, np.integer)) or min_per_class < 0:
        raise FeatpipeError(f"min_validation_per_class: expected an integer >= 0, got {min_per_class!r}")
    return early_stopping_split(images, labels, fraction, min_per_class, seed)


def fit_with_early_stopping(model, images, labels, validation, settings, *, phase=1, verbose=0, details=None, callbacks=()):
    """Compile ``model`` with Adam and fit it, stopping early and keeping the best epoch's weights.

    Parameters
    ----------
    model : keras.Model, uncompiled or compiled (it is compiled again)
        Takes ``images``, outputs class probabilities.
    images : ndarray of shape (n_samples, height, width, channels), uint8
    labels : ndarray of shape (n_samples,), class indices
    validation : tuple of (images, labels) or None
        Monitored for early stopping and the plateau schedule; ``None``
        monitors the training loss.
    settings : TrainingSettings
    phase : int, recorded in the history
    verbose : {0, 1, 2}, Keras' ``fit`` verbosity (2: one line per epoch)
    details : dict or None, recorded in the history's phase entry
    callbacks : sequence of keras.callbacks.Callback, called after featpipe's own (e.g. :func:`classifiers.cnn.live.epoch_logger`)

    Returns
    -------
    TrainingHistory
    """
    keras = load_keras()
    monitor = "val_loss" if validation is not None else "loss"
    steps = settings.epochs * settings.steps_per_epoch(len(images))
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate=learning_rate(keras, settings, steps)),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    clock, timing = epoch_clock(keras, model)
    own = [timing]
    if settings.patience is not None:
        own.insert(0, keras.callbacks.EarlyStopping(monitor=monitor, patience=settings.patience, restore_best_weights=True))
    if settings.lr_schedule == "plateau":
        own.append(keras.callbacks.ReduceLROnPlateau(monitor=monitor, factor=PLATEAU_FACTOR, patience=PLATEAU_PATIENCE))
    started = time.perf_counter()
    fitted = model.fit(
        images, labels, epochs=settings.epochs, batch_size=settings.batch_size, validation_data=validation,
        callbacks=[*own, *callbacks], shuffle=True, verbose=verbose,
    )  # fmt: skip
    seconds = time.perf_counter() - started
    return history_of(fitted.history, clock, monitor, phase, seconds, settings, details)


def learning_rate(keras, settings, steps):
    """Adam's learning rate: a number, or a cosine decay over all ``steps`` of the fit."""
    if settings.lr_schedule == "cosine":
        return keras.optimizers.schedules.CosineDecay(settings.learning_rate, decay_steps=max(steps, 1))
    return settings.learning_rate


def epoch_clock(keras, model):
    """A callback noting each epoch's seconds and learning rate; returns ``(clock, callback)``.

    Listed before ``ReduceLROnPlateau``, it reads the rate before a cut at the epoch's end.
    """
    clock = {"seconds": [], "learning_rate": [], "started": 0.0}

    def begin(epoch, logs=None):
        clock["started"] = time.perf_counter()

    def end(epoch, logs=None):
        clock["seconds"].append(round(time.perf_counter() - clock["started"], 3))
        # A float32 variable or tensor; 7 digits say all it holds (1e-3, not 0.0010000000474974513).
        clock["learning_rate"].append(float(f"{float(model.optimizer.learning_rate):.7g}"))

    return clock, keras.callbacks.LambdaCallback(on_epoch_begin=begin, on_epoch_end=end)


def history_of(logs, clock, monitor, phase, seconds, settings, details):
    """A :class:`TrainingHistory` from Keras' ``History.history`` and the epoch clock."""
    losses = logs[monitor]
    epochs_run = len(losses)
    # EarlyStopping keeps the first of equal minima too; without it the last epoch's weights stay.
    best_epoch = epochs_run if settings.patience is None else int(np.argmin(losses)) + 1
    curve = {"epoch": list(range(1, epochs_run + 1)), "phase": [phase] * epochs_run}
    for key in ("loss", "accuracy", "val_loss", "val_accuracy"):
        if key in logs:
            curve[key] = [float(value) for value in logs[key]]
    curve["learning_rate"] = clock["learning_rate"]
    curve["seconds"] = clock["seconds"]
    summary = {
        "phase": phase,
        "epochs_run": epochs_run,
        "best_epoch": best_epoch,
        "learning_rate": settings.learning_rate,
    }
    return TrainingHistory(epochs_run, best_epoch, round(seconds, 3), monitor, curve, [{**summary, **(details or {})}])


def evaluate(model, history, train, test, class_names):
    """Score an image model on the test split as :func:`classifiers.evaluation.fit_and_evaluate` scores the others.

    Parameters
    ----------
    model : keras.Model, uint8 images in, probabilities out
    history : TrainingHistory, the fit's (its seconds are the fit's)
    train, test : tuple ``(images, labels)``
    class_names : list of str

    Returns
    -------
    predicted : ndarray of shape (n_test,)
    metrics : dict, the model record's score fields, with ``training`` the history
    """
    from classifiers.evaluation import score

    started = time.perf_counter()
    predicted = predict_labels(model, test[0])
    predict_seconds = time.perf_counter() - started
    metrics = score(test[1], predicted, class_names)
    metrics.update(
        fit_seconds=round(history.fit_seconds, 3), predict_seconds=round(predict_seconds, 3),
        n_train=int(len(train[1])), n_test=int(len(test[1])), n_features=int(np.prod(train[0].shape[1:])),
        training=history.to_record(),
    )
    return predicted, metrics


def predict_probabilities(model, images, batch_size=PREDICT_BATCH):
    """Class probabilities of ``images`` (uint8, as stored): ndarray of shape (n_samples, n_classes), float32."""
    return np.asarray(model.predict(np.asarray(images), batch_size=batch_size, verbose=0), dtype=np.float32)


def predict_labels(model, images, batch_size=PREDICT_BATCH):
    """Predicted class indices of ``images``: ndarray of shape (n_samples,), int64."""
    return predict_probabilities(model, images, batch_size).argmax(axis=1).astype(np.int64)


def save_model(model, path):
    """Save a Keras model to ``path`` (``.keras``), atomically."""
    with atomic_output(path, suffix=".keras") as aside:  # Keras saves only to .keras names
        model.save(aside)


def load_keras_model(path):
    """Load a Keras model saved by :func:`save_model`, featpipe's layers registered first.

    Plain ``keras.saving.load_model`` works too once ``features.preprocessing``
    is imported (it registers the resize-and-rescale layer of fine-tuned models).
    """
    import features.preprocessing  # noqa: F401  (registers ResizeAndRescale with Keras)

    # safe_mode (Keras' default, stated): a Lambda layer's pickled code in the file is refused, not run.
    return load_keras().saving.load_model(path, safe_mode=True)


def check_labelled_images(images, labels, n_classes, what="training images"):
    """Refuse images a model can't take (:func:`storage.image_store.check_images`) or labels outside
    ``range(n_classes)``, with one line.

    Returns ``(images, labels)`` as ndarrays: uint8 of shape (n_samples,
    height, width, channels) and int64 of shape (n_samples,).
    """
    images = check_images(images, what)
    labels = np.asarray(labels)
    if labels.shape != (len(images),) or not np.issubdtype(labels.dtype, np.integer):
        raise FeatpipeError(f"{what}: expected {len(images)} integer labels, got {labels.dtype} {labels.shape}")
    check_labels(labels, what)
    if labels.min() < 0 or labels.max() >= n_classes:
        raise FeatpipeError(
            f"{what}: labels must be class indices 0..{n_classes - 1}, got {labels.min()}..{labels.max()}"
        )
    return images, labels.astype(np.int64)
