"""Keras graph surgery for the gradient methods.

Grad-CAM needs a model cut in two at its last convolutional block (images →
activations, activations → class scores); guided backpropagation needs the
whole model with a gate after every ReLU that lets only positive gradients
back. Both want the class score *before* the softmax, as Selvaraju et al.
(2017) define it: a softmax output saturates (its gradient vanishes as the
probability nears 1), so the maps of confident predictions would be noise.

Every model made here shares the layers, and so the weights, of the model it
comes from; the only copy is a linear twin of a final layer that has a
softmax activation. Nested models (a backbone inside a classifier) are
rebuilt the same way, recursively. All inputs are float32: the stored uint8
pixel values go in as float32 0-255, since a gradient needs a float input
(the models' first step casts uint8 to float32 anyway, so the values are the
same). Only public Keras 3 APIs are used: ``keras.models.clone_model`` with a
``call_function`` walks a functional graph, and ``keras.ops.custom_gradient``
makes the gate on both supported backends.
"""

import dataclasses

from explanations.caveats import grad_cam_caveat
from plumbing.backend import load_keras
from plumbing.errors import FeatpipeError

keras = load_keras()

SPATIAL_RANK = 4  # (batch, height, width, channels)


@dataclasses.dataclass(frozen=True)
class GradientGraphs:
    """The three models the gradient methods run, for one stored image shape.

    Attributes
    ----------
    to_conv : keras.Model or None
        float32 images (n, H, W, C) → activations (n, h, w, k) of ``conv_layer``;
        ``None`` when the model has no convolutional layer (no Grad-CAM).
    from_conv : keras.Model or None
        Those activations → class scores (n, n_classes).
    guided : keras.Model
        float32 images → class scores, with guided ReLUs.
    conv_layer : str or None
        The name of the layer Grad-CAM reads.
    class_score : str
        What a class score is: ``"logit (before the softmax)"``, or
        ``"model output"`` when the model ends in no softmax.
    caveat : str or None
        Why Grad-CAM's maps need care here (:mod:`explanations.caveats`):
        the class score reads ``conv_layer`` through a Flatten layer.
    """

    to_conv: object
    from_conv: object
    guided: object
    conv_layer: str
    class_score: str
    caveat: str = None


def gradient_graphs(model, conv_layer=None):
    """Build :class:`GradientGraphs` for ``model``.

    Parameters
    ----------
    model : keras.Model
        Functional or Sequential, one image input (n, H, W, C), class
        probabilities (or scores) out.
    conv_layer : str or None
        The layer Grad-CAM reads; ``None`` takes :func:`last_conv_layer`.
    """
    layer = find_layer(model, conv_layer) if conv_layer else last_conv_layer(model)
    class_score = "logit (before the softmax)" if _is_softmax(final_layer(model)) else "model output"
    guided = class_score_model(model, guided=True)
    if layer is None:
        return GradientGraphs(None, None, guided, None, class_score)
    to_conv, upper = split_at(model, layer)
    if upper is None:
        raise FeatpipeError(f"{model.name}: conv_layer {layer.name!r} is the model's output, not a layer inside it")
    flatten = next((inner for inner in iter_layers(upper) if isinstance(inner, keras.layers.Flatten)), None)
    caveat = grad_cam_caveat(layer.name, flatten.name) if flatten is not None else None
    return GradientGraphs(to_conv, class_score_model(upper), guided, layer.name, class_score, caveat)


def iter_layers(model):
    """The layers of ``model`` in graph order, a nested model's layers in its place."""
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            yield from iter_layers(layer)
        else:
            yield layer


def last_conv_layer(model):
    """The output of the last convolutional block: what Grad-CAM reads.

    That is the last layer with a spatial (4-D) output that comes after a
    convolution and is not a pooling layer: ``block5_conv3`` for VGG16,
    ``conv5_block3_out`` for ResNet50, ``out_relu`` for MobileNetV2. Pooling
    is skipped because it only coarsens the same activations (VGG's
    ``block5_pool`` is 7x7 where ``block5_conv3`` is 14x14). ``None`` when
    there is no convolution at all.
    """
    convolutions = (keras.layers.Conv2D, keras.layers.DepthwiseConv2D, keras.layers.SeparableConv2D)
    pooling = (keras.layers.MaxPooling2D, keras.layers.AveragePooling2D)
    chosen, seen_convolution = None, False
    for layer in iter_layers(model):
        seen_convolution = seen_convolution or isinstance(layer, convolutions)
        if seen_convolution and not isinstance(layer, pooling) and _output_rank(layer) == SPATIAL_RANK:
            chosen = layer
    return chosen


def find_layer(model, name):
    """The layer called ``name`` anywhere in ``model`` (nested models included), with a spatial output."""
    spatial = [layer for layer in iter_layers(model) if _output_rank(layer) == SPATIAL_RANK]
    for layer in spatial:
        if layer.name == name:
            return layer
    raise FeatpipeError(
        f"conv_layer {name!r} is not a layer with a spatial output in {model.name}; "
        f"expected one of: {', '.join(layer.name for layer in spatial) or '(none)'}"
    )


def final_layer(model):
    """The last layer of ``model``, looking inside a nested model that ends it."""
    last = model.layers[-1]
    return final_layer(last) if isinstance(last, keras.Model) else last


def _output_rank(layer):
    try:
        return len(layer.output.shape)
    except (AttributeError, ValueError):  # a layer called more than once has no single output
        return None


def rebuild(model, call_layer):
    """``model`` again on a float32 input, each layer call going through ``call_layer``.

    Parameters
    ----------
    model : keras.Model
    call_layer : callable ``call_layer(layer, *args, **kwargs) -> outputs``
        Called for every layer (not for nested models, which are rebuilt
        with the same ``call_layer`` and called whole).

    Returns
    -------
    keras.Model sharing ``model``'s layers.
    """
    inputs = float_input(model)

    def call(layer, *args, **kwargs):
        if isinstance(layer, keras.Model):
            return rebuild(layer, call_layer)(*args, **kwargs)
        return call_layer(layer, *args, **kwargs)

    if isinstance(model, keras.Sequential):
        outputs = inputs
        for layer in model.layers:
            outputs = call(layer, outputs)
        return keras.Model(inputs, outputs, name=model.name)
    # Returning each layer itself shares it (and its weights) with ``model``.
    return keras.models.clone_model(
        model, input_tensors=_like_input(model, inputs), clone_function=lambda layer: layer, call_function=call
    )


def _like_input(model, inputs):
    """``inputs`` in the structure of ``model.input`` (a model made with ``inputs=[x]`` wants a list)."""
    return [inputs] if isinstance(model.input, (list, tuple)) else inputs


def float_input(model):
    """A float32 ``keras.Input`` shaped like ``model``'s one input."""
    if len(model.inputs) != 1:
        raise FeatpipeError(f"{model.name}: expected a model with one image input, got {len(model.inputs)} inputs")
    return keras.Input(shape=tuple(model.inputs[0].shape[1:]), dtype="float32", name=f"{model.name}_float_input")


def split_at(model, layer):
    """``model`` cut at ``layer``'s output.

    Returns
    -------
    lower : keras.Model
        ``model``'s input (float32) → ``layer``'s output.
    upper : keras.Model or None
        ``layer``'s output → ``model``'s output; ``None`` when ``layer``
        gives the output itself.
    """
    cut = []

    def call(op, *args, **kwargs):
        if op is layer:
            outputs = op(*args, **kwargs)
            cut.append(outputs)
            return outputs
        if isinstance(op, keras.Model) and any(inner is layer for inner in iter_layers(op)):
            inner_lower, inner_upper = split_at(op, layer)
            activations = inner_lower(*args, **kwargs)
            cut.append(activations)
            return activations if inner_upper is None else inner_upper(activations)
        if isinstance(op, keras.Model):
            return rebuild(op, _plain_call)(*args, **kwargs)
        return op(*args, **kwargs)

    functional = _as_functional(model)
    whole = keras.models.clone_model(
        functional, input_tensors=_like_input(functional, float_input(model)), clone_function=lambda op: op,
        call_function=call,
    )
    if any(output is cut[0] for output in whole.outputs):
        return keras.Model(whole.inputs[0], cut[0]), None  # the cut is the output (a backbone's last block)
    try:
        upper = keras.Model(cut[0], whole.outputs[0] if len(whole.outputs) == 1 else whole.outputs)
    except ValueError:  # Keras: an output is not connected to the cut, e.g. a skip connection around it
        raise FeatpipeError(
            f"{model.name}: the layers after {layer.name!r} also read earlier layers, so Grad-CAM "
            f"cannot start there; pass conv_layer= with a layer that everything after it depends on"
        ) from None
    return keras.Model(whole.inputs[0], cut[0]), upper


def _plain_call(layer, *args, **kwargs):
    return layer(*args, **kwargs)


def _as_functional(model):
    """A Sequential model as a functional one with the same layers (clone_model's walk needs one)."""
    if not isinstance(model, keras.Sequential):
        return model
    return rebuild(model, _plain_call)


def class_score_model(model, guided=False):
    """``model`` (float32 in) ending in class scores before its final softmax.

    Parameters
    ----------
    guided : bool
        Put a :class:`PositiveGradientGate` after every ReLU, so that the
        gradient to the input is guided backpropagation's (Springenberg et
        al. 2015): a ReLU passes a gradient only where its input was positive
        (its own rule) and the gradient is positive (the gate's).
    """
    final = final_layer(model)

    def call_layer(layer, *args, **kwargs):
        if layer is final and _is_softmax(layer):
            outputs = _without_softmax(layer, *args, **kwargs)
        else:
            outputs = layer(*args, **kwargs)
        if guided and _applies_relu(layer):
            outputs = PositiveGradientGate(name=f"{layer.name}_guided")(outputs)
        return outputs

    return rebuild(model, call_layer)


def _is_softmax(layer):
    return isinstance(layer, keras.layers.Softmax) or getattr(layer, "activation", None) is keras.activations.softmax


def _applies_relu(layer):
    return isinstance(layer, keras.layers.ReLU) or getattr(layer, "activation", None) is keras.activations.relu


def _without_softmax(layer, inputs, *args, **kwargs):
    """The logits a softmax layer would have turned into probabilities."""
    if isinstance(layer, (keras.layers.Softmax, keras.layers.Activation)):
        return inputs
    # A Dense (or conv) layer with a softmax activation: a twin without it, holding a copy of its weights.
    twin = layer.__class__.from_config({**layer.get_config(), "activation": "linear", "name": f"{layer.name}_logits"})
    outputs = twin(inputs, *args, **kwargs)
    twin.set_weights(layer.get_weights())
    return outputs


@keras.ops.custom_gradient
def pass_positive_gradient(x):
    """Identity forward; backward, only the positive part of the incoming gradient."""

    def gradient(*args, upstream=None):
        upstream = args[0] if upstream is None else upstream
        return keras.ops.relu(upstream)

    return keras.ops.copy(x), gradient


class PositiveGradientGate(keras.layers.Layer):
    """Identity layer whose gradient is ``max(upstream, 0)``: guided backpropagation's ReLU rule."""

    def call(self, x):
        return pass_positive_gradient(x)

    def compute_output_shape(self, input_shape):
        return input_shape
