"""The scratch CNN: a small convolutional network trained on the stored images themselves.

The row the report needs beside the frozen features: what a CNN reaches
when it learns from the same few labelled images alone, with the course's
tricks of the trade, each a setting (the ``scratch`` params):

- input normalisation inside the model, so the saved model takes the uint8
  images as stored: ``rescale`` (to [0, 1]), ``standardize`` (then to zero
  mean and unit variance per channel, from the training images) or ``none``;
- convolutional blocks, conv 3x3 → batch norm → ReLU → max pool 2x2, one per
  entry of ``filters``; then flatten, a dense layer, batch norm, ReLU,
  dropout and softmax (dropout after the blocks too cost 3 points on
  Fashion-MNIST's 2,000/1,000 subset, with augmentation already there);
- batch normalisation on or off, dropout, data augmentation, Adam, a
  learning-rate schedule and early stopping: see
  :mod:`classifiers.cnn.training`.

Example::

    model, history = fit_scratch_cnn(images, labels, n_classes=10, seed=0, verbose=2)
    predicted = predict_labels(model, test_images)
"""

import numpy as np

from classifiers.cnn.training import (
    TrainingSettings,
    augmented,
    check_augment,
    check_fraction,
    check_labelled_images,
    check_positive_int,
    fit_with_early_stopping,
    split_for_validation,
)
from classifiers.dense import MIN_VALIDATION_PER_CLASS
from plumbing.backend import load_keras
from plumbing.errors import FeatpipeError

NORMALIZATIONS = ("rescale", "standardize", "none")
# The architecture when a setting is not given: its one definition (the ``scratch`` params default to it).
ARCHITECTURE = {
    "filters": (32, 64, 128),
    "dense_units": 128,
    "batch_norm": True,
    "dropout": 0.3,
    # Fashion-MNIST's: left-right mirrored clothes are still the same clothes; nothing is upside down.
    "augment": ("horizontal_flip", "shift", "zoom"),
    "normalization": "rescale",
}
# Keras' default 0.99 suits long runs; a few thousand images make ~30 steps an
# epoch, and at 0.99 the moving statistics inference uses would still be
# mostly their initial values after several epochs (PyTorch's default is 0.9 too).
BATCH_NORM_MOMENTUM = 0.9
# What the moving statistics keep of their value one epoch earlier, at most: 0.9 over
# 29 steps (2,000 images at batch 64) keeps 5%. Fewer steps an epoch get a lower
# momentum (momentum_for_steps), else they lag behind the weights: at 5 images per
# class (one step an epoch) 0.9 left the test accuracy at 0.25 after 30 epochs, 0.05 gave 0.58.
BATCH_NORM_EPOCH_MEMORY = 0.05


def momentum_for_steps(steps_per_epoch):
    """The batch-norm momentum for ``steps_per_epoch`` training steps an epoch.

    :data:`BATCH_NORM_MOMENTUM`, or lower where an epoch has too few steps
    for it: the moving statistics that inference uses keep at most
    :data:`BATCH_NORM_EPOCH_MEMORY` of what they were an epoch earlier, so
    they follow the weights at any training-set size (one step an epoch:
    0.05; three: 0.37; 29 or more: 0.9).
    """
    return round(min(BATCH_NORM_MOMENTUM, BATCH_NORM_EPOCH_MEMORY ** (1 / max(int(steps_per_epoch), 1))), 4)


def build_scratch_cnn(
    image_shape,
    n_classes,
    *,
    filters=ARCHITECTURE["filters"],
    dense_units=ARCHITECTURE["dense_units"],
    batch_norm=ARCHITECTURE["batch_norm"],
    dropout=ARCHITECTURE["dropout"],
    augment=ARCHITECTURE["augment"],
    normalization=ARCHITECTURE["normalization"],
    train_images=None,
    batch_norm_momentum=BATCH_NORM_MOMENTUM,
    seed=0,
):
    """The uncompiled scratch CNN (defaults: :data:`ARCHITECTURE`).

    Parameters
    ----------
    image_shape : tuple of (height, width, channels)
        The stored images' shape; the model takes uint8 images of it.
    n_classes : int
    filters : sequence of int
        Convolution filters of each block (each block halves the image size).
    dense_units : int, units of the dense layer before the softmax
    batch_norm : bool, batch normalisation after each convolution and the dense layer
    dropout : float in [0, 1), dropout rate after the dense layer
    augment : sequence of str, names from :data:`classifiers.cnn.training.AUGMENTATIONS`
    normalization : {"rescale", "standardize", "none"}
    train_images : ndarray of shape (n_samples, *image_shape), uint8
        Needed for ``standardize`` only: the statistics come from them.
    batch_norm_momentum : float in [0, 1), of every batch-norm layer (:func:`momentum_for_steps`
        chooses it from the steps an epoch)
    seed : int, seeds the initial weights and the augmentation

    Returns
    -------
    keras.Model, uint8 (n_samples, *image_shape) in, (n_samples, n_classes) probabilities out
    """
    keras = load_keras()
    filters, augment = _check_architecture(filters, dense_units, dropout, augment, normalization)
    keras.utils.set_random_seed(seed)
    layers = keras.layers
    images = keras.Input(shape=tuple(image_shape), dtype="uint8", name="images")
    x = augmented(keras, images, augment, seed)
    x = normalized(keras, x, normalization, train_images)
    for block, count in enumerate(filters, start=1):
        x = conv_block(layers, x, count, batch_norm, block, batch_norm_momentum)
    # Flatten, not global average pooling: where a feature sits (a collar, a
    # heel) tells clothes apart; on Fashion-MNIST 2,000/1,000 pooling lost ~8 points.
    x = layers.Flatten(name="flatten")(x)
    # With batch norm after it, the dense layer's bias is redundant.
    x = layers.Dense(dense_units, use_bias=not batch_norm, name="dense")(x)
    if batch_norm:
        x = layers.BatchNormalization(momentum=batch_norm_momentum, name="dense_batch_norm")(x)
    x = layers.Activation("relu", name="dense_relu")(x)
    if dropout > 0:
        x = layers.Dropout(dropout, seed=seed, name="dense_dropout")(x)
    outputs = layers.Dense(n_classes, activation="softmax", name="classes")(x)
    return keras.Model(images, outputs, name="scratch_cnn")


def _check_architecture(filters, dense_units, dropout, augment, normalization):
    if isinstance(filters, (int, str)) or not filters:
        raise FeatpipeError(f"filters: expected a list of filter counts, one per block, got {filters!r}")
    filters = tuple(check_positive_int("filters", count) for count in filters)
    check_positive_int("dense_units", dense_units)
    check_fraction("dropout", dropout)
    if normalization not in NORMALIZATIONS:
        raise FeatpipeError(f"unknown normalization {normalization!r}; expected one of: {', '.join(NORMALIZATIONS)}")
    return filters, check_augment(augment)


def normalized(keras, x, normalization, train_images):
    """0-255 pixels to the network's input scale (see :data:`NORMALIZATIONS`)."""
    layers = keras.layers
    if normalization == "none":
        return layers.Rescaling(1.0, name="as_float")(x)
    x = layers.Rescaling(1 / 255, name="rescale")(x)
    if normalization == "standardize":
        if train_images is None:
            raise ValueError("normalization 'standardize' needs train_images for its statistics")
        pixels = np.asarray(train_images, dtype=np.float64).reshape(-1, train_images.shape[-1]) / 255
        mean, variance = pixels.mean(axis=0), pixels.var(axis=0)
        x = layers.Normalization(
            mean=mean.astype(np.float32), variance=variance.astype(np.float32), name="standardize"
        )(x)
    return x


def conv_block(layers, x, filters, batch_norm, block, momentum=BATCH_NORM_MOMENTUM):
    """conv 3x3 → [batch norm with ``momentum``] → ReLU → max pool 2x2."""
    x = layers.Conv2D(filters, 3, padding="same", use_bias=not batch_norm, name=f"block{block}_conv")(x)
    if batch_norm:
        x = layers.BatchNormalization(momentum=momentum, name=f"block{block}_batch_norm")(x)
    x = layers.Activation("relu", name=f"block{block}_relu")(x)
    # "same" pooling: odd sizes round up, and a 1x1 map stays 1x1 however many blocks follow.
    x = layers.MaxPooling2D(2, padding="same", name=f"block{block}_pool")(x)
    return x


def fit_scratch_cnn(
    images,
    labels,
    n_classes,
    *,
    learning_rate=1e-3,
    lr_schedule="plateau",
    epochs=30,
    batch_size=64,
    validation_fraction=0.1,
    min_validation_per_class=MIN_VALIDATION_PER_CLASS,
    patience=5,
    seed=0,
    verbose=0,
    callbacks=(),
    **architecture,
):
    """Build the scratch CNN and fit it on ``images``; seeded, so one seed gives one model.

    Parameters
    ----------
    images : ndarray of shape (n_samples, height, width, channels), uint8
        The training images as stored.
    labels : ndarray of shape (n_samples,), class indices in ``range(n_classes)``
    n_classes : int
    **architecture
        ``filters``, ``dense_units``, ``batch_norm``, ``dropout``, ``augment``,
        ``normalization``: see :func:`build_scratch_cnn` (defaults: :data:`ARCHITECTURE`).
    learning_rate, lr_schedule, epochs, batch_size, patience
        The training: see :class:`classifiers.cnn.training.TrainingSettings`.
    validation_fraction : float in [0, 1)
        Share of the images held out (stratified) for early stopping and the
        schedule; 0 watches the training loss instead.
    min_validation_per_class : int >= 0
        Hold that share out only when it gives every class this many images;
        else watch the training loss (:func:`classifiers.cnn.training.split_for_validation`).
    seed : int
    verbose : {0, 1, 2}, Keras' ``fit`` verbosity (2: one line per epoch)
    callbacks : sequence of keras.callbacks.Callback, called at each epoch too (e.g. the stage's DVCLive logger)

    Returns
    -------
    model : keras.Model with the best epoch's weights; uint8 images in, probabilities out
    history : classifiers.cnn.training.TrainingHistory
    """
    settings = TrainingSettings(learning_rate, lr_schedule, epochs, batch_size, patience)
    images, labels = check_labelled_images(images, labels, n_classes)
    images_fit, labels_fit, validation = split_for_validation(
        images, labels, validation_fraction, seed, min_validation_per_class
    )
    momentum = momentum_for_steps(settings.steps_per_epoch(len(images_fit)))
    model = build_scratch_cnn(
        images.shape[1:], n_classes, **architecture, train_images=images_fit, batch_norm_momentum=momentum, seed=seed
    )
    history = fit_with_early_stopping(model, images_fit, labels_fit, validation, settings, verbose=verbose, callbacks=callbacks)
    return model, history
