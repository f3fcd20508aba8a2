"""Fine-tuning a pretrained backbone on the stored images, in the two phases people use.

The model: uint8 images as stored → augmentation → resize and the
backbone's own preprocessing, exactly as ``extract`` does it
(:class:`features.preprocessing.ResizeAndRescale`) → the backbone without
its top → global average pooling → dropout → dense softmax (float32).

1. The head alone: the backbone frozen, Adam at ``learning_rate``.
2. The last ``unfreeze`` blocks of the backbone (``Backbone.blocks``) trained
   too, at the lower ``finetune_learning_rate``, so the new head's first large
   gradients can't wreck the pretrained features (the course: "first retrain
   only the fully connected layer, only then add convolutional layers").

Both phases stop early on the validation loss and keep their best epoch
(on the training loss when the validation split would give a class fewer
than ``min_validation_per_class`` images).

Batch normalisation: every batch-norm layer of the backbone stays frozen,
in unfrozen blocks too (as Keras' EfficientNet fine-tuning example does), so
it always normalises with its pretrained moving statistics and keeps its
scale and offset: a few thousand images give noisy batch statistics that
would overwrite the ImageNet ones, and the first epochs after unfreezing
would lose accuracy. In Keras 3 a frozen batch-norm layer runs in inference
mode, and that is what holds it there: the transfer-learning guide's
``base_model(x, training=False)`` does not, because ``fit`` calls the
functional model with ``training=True``, which overrides the ``training``
given to its inner layers (keras-team/keras#20285).

Weights are those ``extract`` uses (``imagenet``, ``none``, a file) with the
same identity: the full application is built with them, then its
convolutional layers' weights are copied into the backbone built without its
top at the wanted input size (convolution weights don't depend on it). A
weights file for the full application therefore works, and ``input_size``
can go down to the application's minimum (32x32 for VGG16) for CPU tests.
"""

import dataclasses
import re

from classifiers.cnn.training import (
    TrainingSettings,
    augmented,
    check_augment,
    check_fraction,
    check_labelled_images,
    fit_with_early_stopping,
    split_for_validation,
)
from classifiers.dense import MIN_VALIDATION_PER_CLASS
from features.backbones import get_backbone, is_model_file, list_backbones
from features.weights import build_with_weights, resolve_weights
from plumbing.backend import dtype_policy, load_keras
from plumbing.errors import FeatpipeError, first_line

PRECISIONS = ("float32", "mixed_float16", "mixed_bfloat16")


@dataclasses.dataclass
class FinetuneModel:
    """A backbone with a new head, and where its weights came from.

    Attributes
    ----------
    model : keras.Model
        uint8 images (n_samples, *image_shape) in, class probabilities
        (n_samples, n_classes) float32 out.
    backbone_model : keras.Model
        The backbone without its top, a layer of ``model`` (named ``backbone``).
    backbone : features.backbones.Backbone
    input_size : tuple of (height, width), what images are resized to
    weights : str, ``imagenet``, ``none`` or the weights file's path
    weights_sha256 : str, the same identity ``extract`` records
    precision : str
    """

    model: object
    backbone_model: object
    backbone: object
    input_size: tuple
    weights: str
    weights_sha256: str
    precision: str

    @property
    def random_weights(self):
        return self.weights == "none"


def finetunable_backbone(name):
    """The registry entry ``name``; a model file or an unknown name is a one-line error."""
    if is_model_file(name):
        raise FeatpipeError(
            f"cannot fine-tune {name}: a model file has no known blocks to unfreeze; "
            f"expected a registry backbone: {', '.join(list_backbones())}"
        )
    return get_backbone(name)


def finetune_backbone(name, unfreeze):
    """The registry entry ``name``, checked for ``unfreeze`` blocks; one-line errors for both."""
    backbone = finetunable_backbone(name)
    if isinstance(unfreeze, bool) or not isinstance(unfreeze, int) or unfreeze < 0:
        raise FeatpipeError(f"unfreeze: expected an integer >= 0 (blocks to train in phase two), got {unfreeze!r}")
    if unfreeze and not backbone.blocks:
        raise FeatpipeError(f"backbone {name} has no blocks to unfreeze; expected unfreeze: 0, got {unfreeze}")
    if unfreeze > len(backbone.blocks):
        raise FeatpipeError(
            f"unfreeze: backbone {name} has {len(backbone.blocks)} blocks "
            f"({backbone.blocks[0]} .. {backbone.blocks[-1]}); expected 0 to {len(backbone.blocks)}, got {unfreeze}"
        )
    return backbone


def build_finetune_model(
    backbone, image_shape, n_classes, *, weights="imagenet", input_size=None, dropout=0.3, augment=(),
    precision="float32", seed=0,
):  # fmt: skip
    """The backbone without its top, with a new head, all frozen but the head.

    Parameters
    ----------
    backbone : str, a registry name
    image_shape : tuple of (height, width, channels), the stored images' shape
    n_classes : int
    weights : str, ``"imagenet"``, ``"none"`` (random, seeded) or a weights file of the full application
    input_size : tuple of (height, width) or None
        What images are resized to; ``None`` takes the backbone's (224x224 for VGG16).
    dropout : float in [0, 1), before the dense softmax
    augment : sequence of str, see :data:`classifiers.cnn.training.AUGMENTATIONS`
    precision : {"float32", "mixed_float16", "mixed_bfloat16"}
        Keras' dtype policy for the backbone and head; the softmax stays float32.
    seed : int, seeds random backbone weights, the head and the augmentation

    Returns
    -------
    FinetuneModel
    """
    keras = load_keras()
    entry = finetune_backbone(backbone, 0)
    augment = check_augment(augment)
    check_fraction("dropout", dropout)
    if precision not in PRECISIONS:
        raise FeatpipeError(f"unknown precision {precision!r}; expected one of: {', '.join(PRECISIONS)}")
    size = check_input_size(input_size) if input_size is not None else tuple(entry.input_size)
    topless, label, sha256 = topless_backbone(keras, entry, weights, size, precision, seed)
    topless.trainable = False
    keras.utils.set_random_seed(seed)
    with dtype_policy(keras, precision):
        model = attach_head(keras, topless, entry, tuple(image_shape), size, n_classes, dropout, augment, seed)
    return FinetuneModel(model, topless, entry, size, label, sha256, precision)


def check_input_size(input_size):
    """``input_size`` as ``(height, width)``, or a one-line error."""
    is_size = not isinstance(input_size, str) and hasattr(input_size, "__len__") and len(input_size) == 2
    if not is_size or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in input_size):
        raise FeatpipeError(f"input_size: expected [height, width] in pixels, got {input_size!r}")
    return tuple(input_size)


def topless_backbone(keras, entry, weights, input_size, precision, seed):
    """``entry``'s application without its top at ``input_size``, with the weights of the full one.

    Returns ``(model, weights label, weights SHA-256)``.
    """
    choice = resolve_weights(weights)
    module = getattr(keras.applications, entry.module_name)
    builder = getattr(module, entry.application.split(".")[1])
    try:
        with dtype_policy(keras, precision):
            topless = builder(weights=None, include_top=False, input_shape=input_size + (3,), name="backbone")
    except ValueError as error:  # Keras refuses sizes below the application's minimum
        raise FeatpipeError(f"input_size {list(input_size)} for {entry.name}: {first_line(error)}") from None
    full, sha256 = build_with_weights(entry, keras, choice, seed)
    copy_weights(full, topless)
    return topless, choice.label, sha256


def copy_weights(full, topless):
    """Give each layer of ``topless`` the weights of its counterpart in ``full``.

    The application builds its layers in the same order with or without its
    top, so counterparts are matched by position (Keras numbers unnamed
    layers per process, so names can differ) and checked by type and shapes.
    """
    for mine, theirs in zip(topless.layers, full.layers):
        shapes = [tuple(w.shape) for w in mine.weights]
        if type(mine) is not type(theirs) or shapes != [tuple(w.shape) for w in theirs.weights]:
            raise RuntimeError(
                f"{topless.name}: layer {mine.name} has no counterpart in the full model ({theirs.name})"
            )
        if shapes:
            mine.set_weights(theirs.get_weights())


def attach_head(keras, topless, entry, image_shape, input_size, n_classes, dropout, augment, seed):
    """uint8 images → augmentation → resize and rescale → backbone → new head."""
    from features.preprocessing import ResizeAndRescale

    layers = keras.layers
    images = keras.Input(shape=image_shape, dtype="uint8", name="images")
    x = augmented(keras, images, augment, seed)
    x = ResizeAndRescale(input_size, image_shape[-1], entry.channels, entry.preprocessing, name="resize_and_rescale")(x)
    x = topless(x)
    x = layers.GlobalAveragePooling2D(name="average")(x)
    if dropout > 0:
        x = layers.Dropout(dropout, seed=seed, name="head_dropout")(x)
    x = layers.Dense(n_classes, name="classes")(x)
    # A float32 softmax: float16 probabilities round small ones to 0 and the loss to inf.
    outputs = layers.Activation("softmax", dtype="float32", name="probabilities")(x)
    return keras.Model(images, outputs, name=f"{entry.name}_finetune")


def unfreeze_blocks(finetune_model, unfreeze):
    """Make the last ``unfreeze`` blocks of the backbone trainable, batch norm excepted.

    ``unfreeze`` equal to the number of blocks trains the whole backbone,
    stem included. Returns the names of the layers made trainable.
    """
    keras = load_keras()
    backbone = finetune_backbone(finetune_model.backbone.name, unfreeze)
    layers = finetune_model.backbone_model.layers
    start = first_unfrozen_layer([layer.name for layer in layers], backbone.blocks, unfreeze)
    finetune_model.backbone_model.trainable = True
    trained = []
    for index, layer in enumerate(layers):
        layer.trainable = index >= start and not isinstance(layer, keras.layers.BatchNormalization)
        if layer.trainable and layer.weights:
            trained.append(layer.name)
    return trained


def first_unfrozen_layer(names, blocks, unfreeze):
    """Index into ``names`` (the backbone's layers, in order) of the first layer of the last ``unfreeze`` blocks.

    The blocks run from after the last layer of the block before them; all
    blocks means every layer. ``len(names)`` when ``unfreeze`` is 0.
    """
    if unfreeze == 0:
        return len(names)
    if unfreeze == len(blocks):
        return 0
    previous = re.compile(blocks[len(blocks) - unfreeze - 1])
    matches = [index for index, name in enumerate(names) if previous.match(name)]
    if not matches:
        raise RuntimeError(f"no layer of the backbone matches its block {previous.pattern!r}")
    return matches[-1] + 1


def fit_finetune(
    images, labels, n_classes, backbone="vgg16", *, weights="imagenet", input_size=None, unfreeze=1,
    dropout=0.3, augment=(), learning_rate=1e-3, finetune_learning_rate=1e-5, lr_schedule="plateau",
    epochs=20, batch_size=32, validation_fraction=0.1, min_validation_per_class=MIN_VALIDATION_PER_CLASS,
    patience=3, precision="float32", seed=0, verbose=0, callbacks=(),
):  # fmt: skip
    """Fine-tune ``backbone`` on ``images``: the head first, then the last ``unfreeze`` blocks too.

    Parameters
    ----------
    images : ndarray of shape (n_samples, height, width, channels), uint8, as stored
    labels : ndarray of shape (n_samples,), class indices in ``range(n_classes)``
    n_classes : int
    backbone, weights, input_size, dropout, augment, precision
        See :func:`build_finetune_model`.
    unfreeze : int
        Blocks trained in phase two, counted from the top; 0 skips phase two.
    learning_rate, finetune_learning_rate : float
        Adam's initial rate in phase one and in phase two.
    lr_schedule, epochs, batch_size, patience
        Per phase: see :class:`classifiers.cnn.training.TrainingSettings`.
    validation_fraction : float in [0, 1), held out (stratified) for early stopping, the same in both phases
    min_validation_per_class : int >= 0
        Hold that share out only when it gives every class this many images; else watch the
        training loss (:func:`classifiers.cnn.training.split_for_validation`)
    seed : int
    verbose : {0, 1, 2}, Keras' ``fit`` verbosity
    callbacks : sequence of keras.callbacks.Callback, called at each epoch of both phases (e.g. the stage's DVCLive logger)

    Returns
    -------
    finetuned : FinetuneModel, its ``model`` holding each phase's best epoch's weights
    history : classifiers.cnn.training.TrainingHistory over both phases
    """
    finetune_backbone(backbone, unfreeze)
    head = TrainingSettings(learning_rate, lr_schedule, epochs, batch_size, patience)
    blocks = TrainingSettings(finetune_learning_rate, lr_schedule, epochs, batch_size, patience)
    images, labels = check_labelled_images(images, labels, n_classes)
    images_fit, labels_fit, validation = split_for_validation(
        images, labels, validation_fraction, seed, min_validation_per_class
    )
    finetuned = build_finetune_model(
        backbone, images.shape[1:], n_classes, weights=weights, input_size=input_size, dropout=dropout,
        augment=augment, precision=precision, seed=seed,
    )  # fmt: skip
    data = (images_fit, labels_fit, validation)
    history = fit_head(finetuned, *data, head, verbose=verbose, callbacks=callbacks)
    if unfreeze:
        history = history.then(fit_unfrozen_blocks(finetuned, unfreeze, *data, blocks, verbose=verbose, callbacks=callbacks))
    return finetuned, history


def fit_head(finetuned, images, labels, validation, settings, *, verbose=0, callbacks=()):
    """Phase one: train the head, the backbone frozen. Returns the phase's TrainingHistory."""
    finetuned.backbone_model.trainable = False
    details = {"trained": "head"}
    return fit_with_early_stopping(
        finetuned.model, images, labels, validation, settings, phase=1, verbose=verbose, details=details, callbacks=callbacks
    )


def fit_unfrozen_blocks(finetuned, unfreeze, images, labels, validation, settings, *, verbose=0, callbacks=()):
    """Phase two: train the head and the last ``unfreeze`` blocks. Returns the phase's TrainingHistory."""
    trained = unfreeze_blocks(finetuned, unfreeze)
    blocks = finetuned.backbone.blocks[len(finetuned.backbone.blocks) - unfreeze :]
    details = {"trained": "head and blocks", "blocks": list(blocks), "layers": trained}
    return fit_with_early_stopping(
        finetuned.model, images, labels, validation, settings, phase=2, verbose=verbose, details=details, callbacks=callbacks
    )
