"""Grad-CAM and guided backpropagation, on TensorFlow or JAX.

Keras 3 has no backend-neutral gradient call, so :func:`input_gradients`
has one implementation per backend, chosen by ``keras.backend.backend()``:
``tf.GradientTape`` inside a ``tf.function`` on TensorFlow, ``jax.grad`` of
``model.stateless_call`` under ``jax.jit`` on JAX. Any other backend is
refused with a :class:`~plumbing.errors.FeatpipeError` naming these two.

Both methods explain the class given for each image (the true class, as
occlusion and LIME do) through its score before the softmax
(:mod:`explanations.graphs`).
"""

import weakref

import numpy as np

from classifiers.image_model import padded_batch
from explanations.caveats import CAVEAT_ATTRIBUTE
from plumbing.errors import FeatpipeError
from storage.image_store import check_images

SUPPORTED_BACKENDS = ("tensorflow", "jax")
GRADIENT_METHODS = ("grad_cam", "guided_backprop", "guided_grad_cam")


class GradientCache:
    """What the gradient methods build for one model, built once: its graphs per image shape, compiled gradients."""

    def __init__(self):
        self.graphs = {}  # image shape -> GradientGraphs
        self.gradients = {}  # id(keras model) -> (model, its compiled gradient function)


# One cache per model object, gone with the model.
_CACHES = weakref.WeakKeyDictionary()


def _cache(model):
    if model not in _CACHES:
        _CACHES[model] = GradientCache()
    return _CACHES[model]


def model_gradient_graphs(model, image_shape):
    """:class:`~explanations.graphs.GradientGraphs` of ``model`` (a KerasImageClassifier) for images of ``image_shape``."""
    from explanations.graphs import gradient_graphs

    image_shape = tuple(int(size) for size in image_shape)
    graphs = _cache(model).graphs
    if image_shape not in graphs:
        graphs[image_shape] = gradient_graphs(model.graph(image_shape), model.conv_layer)
    return graphs[image_shape]


def model_input_gradients(model, keras_model, inputs, columns):
    """:func:`input_gradients` of one of ``model``'s graphs, through a gradient function compiled once per graph."""
    compiled = _cache(model).gradients
    if id(keras_model) not in compiled:
        compiled[id(keras_model)] = (keras_model, gradient_function(keras_model))  # the graph kept, so its id stays its own
    return input_gradients(keras_model, inputs, columns, model.batch_size, compiled[id(keras_model)][1])


def grad_cam_maps(model, images, labels):
    """Grad-CAM (Selvaraju et al. 2017) of each image for its class.

    The last convolutional block's activations ``A`` (n, h, w, k) are
    weighted by the spatial mean of the class score's gradient with respect
    to them; the map is ``ReLU(sum_k weight_k * A_k)``, upsampled
    (bilinear) from (h, w) to the stored image size. Values are not
    normalised, so maps of one model compare across images.

    Parameters
    ----------
    model : classifiers.KerasImageClassifier
    images : ndarray of shape (n_samples, height, width, channels), uint8
    labels : array-like of shape (n_samples,), the class to explain for each image

    Returns
    -------
    maps : ndarray of shape (n_samples, height, width), float32, >= 0
    settings : dict, what the output file records about the method
    """
    from skimage.transform import resize

    graphs, columns = _prepare(model, images, labels, "grad_cam")
    if graphs.to_conv is None:
        raise FeatpipeError(f"grad_cam: model {model.name} has no convolutional layer; use occlusion, lime or guided_backprop")
    maps = np.empty(images.shape[:3], np.float32)
    for start, batch, batch_columns in _batches(images, columns, model.batch_size):
        activations = model.run(graphs.to_conv, batch.astype(np.float32))
        gradients = model_input_gradients(model, graphs.from_conv, activations, batch_columns)
        weights = gradients.mean(axis=(1, 2))
        cams = np.maximum(np.einsum("nhwk,nk->nhw", activations, weights), 0.0)
        for offset, cam in enumerate(cams):
            maps[start + offset] = resize(cam, images.shape[1:3], order=1, mode="edge")
    settings = {
        "conv_layer": graphs.conv_layer,
        "class_score": graphs.class_score,
        "upsampling": "bilinear, from the conv layer's grid to the stored image size",
        "values": "ReLU of the gradient-weighted sum of the conv layer's activations (not normalised)",
    }
    if graphs.caveat:
        settings[CAVEAT_ATTRIBUTE] = graphs.caveat
    return maps, settings


def guided_backprop_maps(model, images, labels):
    """Guided backpropagation (Springenberg et al. 2015) of each image for its class.

    The gradient of the class score with respect to the stored pixels, where
    every ReLU passes back only positive gradients at positive inputs, is
    reduced over channels by the maximum of its absolute value (as Simonyan
    et al. 2014 do for saliency maps), so one map serves gray and RGB images.

    Parameters
    ----------
    model : classifiers.KerasImageClassifier
    images : ndarray of shape (n_samples, height, width, channels), uint8
    labels : array-like of shape (n_samples,)

    Returns
    -------
    maps : ndarray of shape (n_samples, height, width), float32, >= 0
    settings : dict
    """
    graphs, columns = _prepare(model, images, labels, "guided_backprop")
    maps = np.empty(images.shape[:3], np.float32)
    for start, batch, batch_columns in _batches(images, columns, model.batch_size):
        gradients = model_input_gradients(model, graphs.guided, batch.astype(np.float32), batch_columns)
        maps[start : start + len(batch)] = np.abs(gradients).max(axis=-1)
    settings = {
        "class_score": graphs.class_score,
        "reduction": "max over channels of |gradient|",
        "values": "guided gradient of the class score with respect to the stored pixels (0-255 scale)",
    }
    return maps, settings


def guided_grad_cam_maps(model, images, labels):
    """Guided Grad-CAM (Selvaraju et al. 2017): guided backpropagation times the Grad-CAM map.

    Guided backpropagation alone is sharp but hardly depends on the class or
    the layers above (Adebayo et al. 2018: it redraws the image); Grad-CAM is
    class-discriminative but coarse. Their product, pixel by pixel, keeps the
    detail where Grad-CAM says the class is: the course's recipe.

    Returns
    -------
    maps : ndarray of shape (n_samples, height, width), float32, >= 0
    settings : dict
    """
    cams, cam_settings = grad_cam_maps(model, images, labels)
    guided, guided_settings = guided_backprop_maps(model, images, labels)
    settings = {
        "conv_layer": cam_settings["conv_layer"],
        "class_score": cam_settings["class_score"],
        "values": "guided backpropagation map x Grad-CAM map, pixel by pixel",
    }
    if CAVEAT_ATTRIBUTE in cam_settings:
        settings[CAVEAT_ATTRIBUTE] = cam_settings[CAVEAT_ATTRIBUTE]
    return (guided * cams).astype(np.float32), settings


def _prepare(model, images, labels, method):
    if not model.differentiable:
        raise FeatpipeError(
            f"{method} needs a model that is differentiable end to end (a Keras graph); "
            f"{model.name} is not: use occlusion or lime"
        )
    images = check_images(images)
    return model_gradient_graphs(model, images.shape[1:]), model.columns(labels, len(images))


def _batches(images, columns, batch_size):
    for start in range(0, len(images), batch_size):
        yield start, images[start : start + batch_size], columns[start : start + batch_size]


def input_gradients(model, inputs, columns, batch_size, gradient=None):
    """Gradient of each row's class score with respect to that row of the input.

    Parameters
    ----------
    model : keras.Model
        float32 inputs → class scores (n, n_classes); every row's scores must
        depend on that row only (inference mode), so one gradient of the sum
        gives every row's own.
    inputs : ndarray of shape (n, ...), at most ``batch_size`` rows
    columns : ndarray of shape (n,), int, the class score to differentiate for each row
    batch_size : int, the most rows; fewer are padded as ``classifiers.image_model.padded_batch`` says
    gradient : callable or None
        ``gradient_function(model)``, when the caller keeps one; else one is made.

    Returns
    -------
    ndarray shaped like ``inputs``, float32
    """
    gradient = gradient or gradient_function(model)
    padded, count = padded_batch(np.asarray(inputs, np.float32), batch_size)
    n_classes = int(model.outputs[0].shape[-1])
    selection = np.zeros((len(padded), n_classes), np.float32)
    selection[np.arange(count), columns] = 1.0  # padding rows select nothing
    return np.asarray(gradient(padded, selection), dtype=np.float32)[:count]


def gradient_function(model):
    """``(inputs, selection) -> d sum(scores * selection) / d inputs`` for ``model``, compiled for this backend."""
    from plumbing.backend import load_keras

    backend = load_keras().backend.backend()
    if backend not in SUPPORTED_BACKENDS:
        raise FeatpipeError(
            f"grad_cam and guided_backprop need the Keras backend {' or '.join(SUPPORTED_BACKENDS)}; "
            f"this one is {backend!r} (set KERAS_BACKEND)"
        )
    return _tensorflow_gradient(model) if backend == "tensorflow" else _jax_gradient(model)


def _tensorflow_gradient(model):
    import tensorflow as tf

    @tf.function
    def gradient(inputs, selection):
        with tf.GradientTape() as tape:
            tape.watch(inputs)
            scores = model(inputs, training=False)
            objective = tf.reduce_sum(scores * selection)
        return tape.gradient(objective, inputs)

    return lambda inputs, selection: gradient(tf.constant(inputs), tf.constant(selection)).numpy()


def _jax_gradient(model):
    import jax

    def objective(inputs, selection, trainable, non_trainable):
        scores, _ = model.stateless_call(trainable, non_trainable, inputs, training=False)
        return (scores * selection).sum()

    # The weights go in as arguments, read at each call (see features.engine.compiled_forward for why).
    gradient = jax.jit(jax.grad(objective))
    return lambda inputs, selection: gradient(inputs, selection, *variable_values(model))


def variable_values(model):
    """The current values of ``model``'s trainable and non-trainable variables, as two lists."""
    return [v.value for v in model.trainable_variables], [v.value for v in model.non_trainable_variables]
