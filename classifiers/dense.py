"""The ``dense`` classifier: a small Keras head on feature vectors.

The tricks of the trade from the course: standardised inputs (a
``Normalization`` layer holding the training mean and variance, so the saved
model takes raw features), batch normalisation, dropout, Adam, and early
stopping on a validation split taken from the training set, keeping the best
epoch's weights. Keras is imported only when a head is fitted or saved.

With a few labels per class a validation split is a handful of rows whose
loss stops the fit at random, and it takes labels the head needs: below
``min_validation_per_class`` held-out rows of every class nothing is held out
and early stopping watches the training loss (dropout and batch norm do the
regularising).
"""

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.model_selection import train_test_split

from classifiers.registry import register
from plumbing.atomic import atomic_output
from plumbing.backend import load_keras

PREDICT_BATCH = 4096
# Held-out rows of every class below which early stopping watches the training loss instead (docs/learners.md).
MIN_VALIDATION_PER_CLASS = 20


class DenseHead(ClassifierMixin, BaseEstimator):
    """Standardise → [Dense → BatchNorm → ReLU → Dropout] × layers → softmax.

    Parameters
    ----------
    hidden_units : sequence of int
        Units of each hidden layer; empty means a linear softmax classifier.
    dropout : float in [0, 1)
    batch_norm : bool
    learning_rate : float, Adam's step size
    epochs : int, at most this many passes
    batch_size : int
    validation_fraction : float in [0, 1)
        Share of the training rows held out (stratified) for early stopping;
        0 stops on the training loss instead.
    min_validation_per_class : int >= 0
        Hold out that share only when it gives every class at least this many
        rows; else stop on the training loss. 0: always hold it out.
    patience : int, epochs without improvement before stopping
    seed : int, seeds Python, NumPy and the Keras backend before each fit

    Attributes
    ----------
    model_ : keras.Model, input (n_features,), output (n_classes,) probabilities
    classes_ : ndarray of shape (n_classes,), the label of each output unit
    epochs_run_ : int
    best_epoch_ : int, the epoch whose weights were kept
    monitor_ : str, what early stopping watched: ``"val_loss"`` or ``"loss"``
    """

    # Fitted in this process, one at a time (classifiers.cores.fits_in_this_process).
    fits_in_this_process = True

    def __init__(
        self,
        hidden_units=(256,),
        dropout=0.5,
        batch_norm=True,
        learning_rate=1e-3,
        epochs=50,
        batch_size=64,
        validation_fraction=0.1,
        min_validation_per_class=MIN_VALIDATION_PER_CLASS,
        patience=5,
        seed=0,
    ):
        self.hidden_units = hidden_units
        self.dropout = dropout
        self.batch_norm = batch_norm
        self.learning_rate = learning_rate
        self.epochs = epochs
        self.batch_size = batch_size
        self.validation_fraction = validation_fraction
        self.min_validation_per_class = min_validation_per_class
        self.patience = patience
        self.seed = seed

    def fit(self, X, y):
        """Fit on ``X`` (ndarray of shape (n_samples, n_features)) and labels ``y``."""
        keras = load_keras()
        X = np.asarray(X, dtype=np.float32)
        self.classes_, encoded = np.unique(y, return_inverse=True)
        keras.utils.set_random_seed(self.seed)
        X_fit, y_fit, validation = early_stopping_split(
            X, encoded, self.validation_fraction, self.min_validation_per_class, self.seed)
        self.model_ = build_head(keras, X_fit, len(self.classes_), self.hidden_units, self.dropout, self.batch_norm)
        self.model_.compile(
            optimizer=keras.optimizers.Adam(learning_rate=self.learning_rate),
            loss="sparse_categorical_crossentropy",
            metrics=["accuracy"],
        )
        monitor = "val_loss" if validation else "loss"
        stop = keras.callbacks.EarlyStopping(monitor=monitor, patience=self.patience, restore_best_weights=True)
        history = self.model_.fit(
            X_fit, y_fit, epochs=self.epochs, batch_size=self.batch_size,
            validation_data=validation, callbacks=[stop], shuffle=True, verbose=0,
        )
        losses = history.history[monitor]
        self.monitor_ = monitor
        self.epochs_run_ = len(losses)
        self.best_epoch_ = int(np.argmin(losses)) + 1
        return self

    def predict_proba(self, X):
        """Class probabilities, ndarray of shape (n_samples, n_classes)."""
        X = np.asarray(X, dtype=np.float32)
        return self.model_.predict(X, batch_size=PREDICT_BATCH, verbose=0)

    def predict(self, X):
        """Labels for ``X``, ndarray of shape (n_samples,)."""
        return self.classes_[self.predict_proba(X).argmax(axis=1)]


def early_stopping_split(X, y, fraction, min_per_class, seed):
    """What the head holds out for early stopping: :func:`validation_split`, or nothing when classes are short.

    Parameters
    ----------
    X : ndarray of shape (n_samples, n_features)
    y : ndarray of shape (n_samples,), class indices from 0
    fraction : float, the share to hold out
    min_per_class : int, rows of every class the held-out share must have (``fraction`` of the smallest class)
    seed : int

    Returns
    -------
    ``(X_fit, y_fit, validation)`` as :func:`validation_split` returns them; ``validation`` is None
    when ``fraction`` of the smallest class is fewer than ``min_per_class`` rows.
    """
    if int(fraction * np.bincount(y).min()) < min_per_class:
        return X, y, None
    return validation_split(X, y, fraction, seed)


def validation_split(X, y, fraction, seed):
    """Hold out ``fraction`` of the rows, stratified when every class can spare one.

    Returns ``(X_fit, y_fit, validation)`` where ``validation`` is
    ``(X_val, y_val)`` or ``None`` when nothing is held out.
    """
    n_val = int(round(fraction * len(y)))
    if n_val < 1 or n_val >= len(y):
        return X, y, None
    counts = np.bincount(y)
    stratify = y if counts.min() >= 2 and n_val >= len(counts) and len(y) - n_val >= len(counts) else None
    X_fit, X_val, y_fit, y_val = train_test_split(X, y, test_size=n_val, random_state=seed, stratify=stratify)
    return X_fit, y_fit, (X_val, y_val)


def standardising_variance(X_fit):
    """Each feature's variance, 1 where it is (about) constant on the training rows.

    A ReLU feature that is 0 on every training row (common with a few labels
    per class) would otherwise be divided by Keras' epsilon: a test row where
    it is not 0 gets inputs of a million and a prediction at random.
    StandardScaler keeps such a feature's scale at 1 for the same reason.

    Parameters
    ----------
    X_fit : ndarray of shape (n_samples, n_features)

    Returns
    -------
    ndarray of shape (n_features,), float64
    """
    mean = X_fit.mean(axis=0, dtype=np.float64)
    variance = X_fit.var(axis=0, dtype=np.float64)
    # scikit-learn's bound on the rounding error of a constant feature's variance (StandardScaler's test).
    eps, n = np.finfo(np.float64).eps, len(X_fit)
    constant = variance <= n * eps * variance + (n * mean * eps) ** 2
    return np.where(constant, 1.0, variance)


def build_head(keras, X_fit, n_classes, hidden_units, dropout, batch_norm):
    """The uncompiled Keras model; standardisation statistics come from ``X_fit``.

    Parameters
    ----------
    X_fit : ndarray of shape (n_samples, n_features), float32
    """
    layers = keras.layers
    mean = X_fit.mean(axis=0, dtype=np.float64)
    variance = standardising_variance(X_fit)
    inputs = keras.Input(shape=(X_fit.shape[1],), name="features")
    x = layers.Normalization(mean=mean.astype(np.float32), variance=variance.astype(np.float32), name="standardise")(inputs)
    for i, units in enumerate(hidden_units):
        # With batch norm after it, the dense layer's bias is redundant.
        x = layers.Dense(units, use_bias=not batch_norm, name=f"dense_{i}")(x)
        if batch_norm:
            x = layers.BatchNormalization(name=f"batch_norm_{i}")(x)
        x = layers.Activation("relu", name=f"relu_{i}")(x)
        if dropout > 0:
            x = layers.Dropout(dropout, name=f"dropout_{i}")(x)
    outputs = layers.Dense(n_classes, activation="softmax", name="classes")(x)
    return keras.Model(inputs, outputs, name="dense_head")


def save_dense(model, path):
    """Save the fitted head's Keras model to ``path`` (``.keras``), atomically."""
    with atomic_output(path, suffix=".keras") as aside:  # Keras saves only to .keras names
        model.model_.save(aside)


@register("dense", suffix=".keras", save=save_dense)
def dense_head(seed, **options):
    """Small Keras head: batch norm, dropout, Adam, early stopping (defaults: :class:`DenseHead`)."""
    if "hidden_units" in options:
        options["hidden_units"] = tuple(options["hidden_units"])
    return DenseHead(seed=seed, **options)
