"""The backbone registry: each pretrained CNN with its own preprocessing.

An entry (a :class:`Backbone`) carries everything extraction needs to know
about one network, so that nothing else has to know that VGG wants BGR with
the ImageNet mean subtracted: the Keras application builder, its
``preprocess_input``, the input size, the layers offered with their feature
sizes, the default layer, and the name of the ImageNet weights file Keras
downloads for it. Adding a backbone is one decorated function (timm's
``register_model`` pattern); :func:`get_backbone` and :func:`list_backbones`
are the ways in.

Layers. Every entry offers ``avg_pool``: the last convolutional block's
output averaged over its spatial positions (Keras' ``pooling="avg"``). For
VGG16/19 that is block5_pool averaged, 512 numbers, the same as
``VGG16(include_top=False, pooling="avg")``; VGG also offers its
fully-connected layers ``fc1`` and ``fc2`` (4096 each, after ReLU), and
``fc2`` is its default. For the others ``avg_pool`` is the default.

A user's own ``.keras`` model file works too (:func:`load_model_file`); it
gets no preprocessing beyond the resize, since featpipe can't know how it
was trained.

Keras is imported only when a model is built, so listing the registry (and
``featpipe --help``) stays fast.
"""

import dataclasses
from pathlib import Path

from plumbing.errors import FeatpipeError, first_line
from plumbing.registry import Registry

BACKBONES = Registry("backbone", alternatives="or a path to a .keras model file")

# Keras' application names for the preprocessing modes of imagenet_utils.
PREPROCESSING_MODES = {
    "caffe": "caffe: RGB->BGR, ImageNet mean subtracted per channel, no scaling",
    "tf": "tf: scaled to [-1, 1]",
    "torch": "torch: scaled to [0, 1], ImageNet mean and std normalised per channel",
    "builtin": "builtin: 0-255 input; the model rescales and normalises inside itself",
    "none": "none: 0-255 input as given (a user's model file)",
}


@dataclasses.dataclass(frozen=True)
class Tap:
    """Where a registry layer comes from in the Keras model.

    ``source`` is the Keras layer whose output is taken; ``pool`` adds a
    global average over its spatial positions (for a 4-D conv output).
    """

    dim: int
    source: str
    pool: bool = False


@dataclasses.dataclass(frozen=True)
class Backbone:
    """One pretrained CNN and how to feed it.

    Attributes
    ----------
    name : str
        Registry key, e.g. ``"vgg16"``.
    application : str
        The Keras application, ``"<module>.<builder>"`` under
        ``keras.applications``, e.g. ``"vgg16.VGG16"``.
    input_size : tuple of (height, width)
        The size images are resized to.
    preprocessing : str
        One of :data:`PREPROCESSING_MODES`.
    layers : dict of str to Tap
        The layers offered, by name.
    default_layer : str
    imagenet_file : str or None
        The file Keras looks for in its cache (``~/.keras/models/``) for
        ``weights="imagenet"``.
    channels : {1, 3}
        Channels the network takes (3 for every registry entry).
    description : str
        One line for ``featpipe backbones``.
    blocks : tuple of str
        The convolutional blocks fine-tuning can unfreeze, first to last:
        each a regular expression matched at the start of a layer name
        (mostly a plain prefix, e.g. ``"block5_"``). A block's layers run
        from after the previous block's last matching layer to its own last
        matching one, so layers between two blocks (a transition) go with
        the later block and layers after the last block (a final 1x1 conv)
        with it. Empty: nothing to unfreeze (a user's model file).
    """

    name: str
    application: str
    input_size: tuple
    preprocessing: str
    layers: dict
    default_layer: str
    imagenet_file: str = None
    channels: int = 3
    description: str = ""
    blocks: tuple = ()

    @property
    def module_name(self):
        return self.application.split(".")[0]

    def resolve_layer(self, layer=None):
        """The layer name to use: ``layer``, or the default when ``None``."""
        layer = layer or self.default_layer
        if layer not in self.layers:
            raise FeatpipeError(
                f"backbone {self.name} has no layer {layer!r}; expected one of: "
                + ", ".join(f"{name} ({tap.dim})" for name, tap in self.layers.items())
            )
        return layer

    def build(self, keras, weights):
        """The full Keras application (with its top), weights as Keras takes them.

        ``weights`` is ``"imagenet"``, ``None`` (random) or a path to a weights file.
        """
        module = getattr(keras.applications, self.module_name)
        builder = getattr(module, self.application.split(".")[1])
        return builder(weights=weights, include_top=True, input_shape=tuple(self.input_size) + (3,))

    def preprocess_function(self, keras):
        """The application's own ``preprocess_input`` (identity for ``builtin``)."""
        if self.preprocessing in ("builtin", "none"):
            return None
        return getattr(keras.applications, self.module_name).preprocess_input


def register_backbone(**fields):
    """Decorator: add the entry the decorated function describes to the registry.

    The function's name is the registry key; its docstring is its one-line
    description in ``featpipe backbones``.
    """

    def add(function):
        entry = Backbone(name=function.__name__, description=(function.__doc__ or "").strip(), **fields)
        if entry.default_layer not in entry.layers:
            raise ValueError(f"{entry.name}: default layer {entry.default_layer!r} is not offered")
        BACKBONES.add(entry.name, entry)
        return function

    return add


def list_backbones():
    """Registry names, sorted."""
    return BACKBONES.names()


def get_backbone(name):
    """The registry entry called ``name``; an unknown name lists the known ones."""
    return BACKBONES.get(name)


def is_model_file(name):
    """Whether ``name`` means a user's Keras model file rather than a registry entry."""
    return str(name).endswith(".keras")


def resolve_layer(backbone, layer=None):
    """The layer features are taken from: ``layer``, or the backbone's default.

    The one place this is decided. A registry name checks ``layer`` against
    the layers it offers; a model file has no default, so it needs ``layer``
    (whether the file has it is checked when the model loads).
    """
    if is_model_file(backbone):
        if not layer:
            raise FeatpipeError(f"{backbone}: a model file needs a layer (--layer NAME, or `layer:` in extract.backbones)")
        return layer
    return get_backbone(backbone).resolve_layer(layer)


def _prefixes(pattern, first, last):
    """``pattern`` filled with each block number from ``first`` to ``last``."""
    return tuple(pattern.format(number) for number in range(first, last + 1))


def _vgg_layers():
    return {
        "fc1": Tap(4096, "fc1"),
        "fc2": Tap(4096, "fc2"),
        "avg_pool": Tap(512, "block5_pool", pool=True),
    }


@register_backbone(
    application="vgg16.VGG16",
    input_size=(224, 224),
    preprocessing="caffe",
    layers=_vgg_layers(),
    default_layer="fc2",
    imagenet_file="vgg16_weights_tf_dim_ordering_tf_kernels.h5",
    blocks=_prefixes("block{}_", 1, 5),
)
def vgg16():
    """VGG16 (Simonyan & Zisserman 2014), 138M parameters."""


@register_backbone(
    application="vgg19.VGG19",
    input_size=(224, 224),
    preprocessing="caffe",
    layers=_vgg_layers(),
    default_layer="fc2",
    imagenet_file="vgg19_weights_tf_dim_ordering_tf_kernels.h5",
    blocks=_prefixes("block{}_", 1, 5),
)
def vgg19():
    """VGG19, 144M parameters."""


@register_backbone(
    application="resnet50.ResNet50",
    input_size=(224, 224),
    preprocessing="caffe",
    layers={"avg_pool": Tap(2048, "avg_pool")},
    default_layer="avg_pool",
    imagenet_file="resnet50_weights_tf_dim_ordering_tf_kernels.h5",
    blocks=_prefixes("conv{}_", 2, 5),
)
def resnet50():
    """ResNet50 (He et al. 2015), 26M parameters."""


@register_backbone(
    application="mobilenet_v2.MobileNetV2",
    input_size=(224, 224),
    preprocessing="tf",
    # Keras leaves this model's pooling layer unnamed; pooling out_relu is the same thing.
    layers={"avg_pool": Tap(1280, "out_relu", pool=True)},
    default_layer="avg_pool",
    imagenet_file="mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224.h5",
    # The inverted-residual blocks, then the final 1x1 conv to 1280 channels.
    blocks=_prefixes("block_{}_", 1, 16) + ("Conv_1",),
)
def mobilenet_v2():
    """MobileNetV2 (alpha 1.0), 3.5M parameters: the fast one."""


@register_backbone(
    application="efficientnet.EfficientNetB0",
    input_size=(224, 224),
    preprocessing="builtin",
    layers={"avg_pool": Tap(1280, "avg_pool")},
    default_layer="avg_pool",
    imagenet_file="efficientnetb0.h5",
    # Stages block1a.. to block7a; the top 1x1 conv after block7 goes with it.
    blocks=_prefixes("block{}", 1, 7),
)
def efficientnet_b0():
    """EfficientNetB0, 5.3M parameters; rescaling is part of the model."""


@register_backbone(
    application="inception_v3.InceptionV3",
    input_size=(299, 299),
    preprocessing="tf",
    layers={"avg_pool": Tap(2048, "avg_pool")},
    default_layer="avg_pool",
    imagenet_file="inception_v3_weights_tf_dim_ordering_tf_kernels.h5",
    # Inside a block Keras leaves the layers unnamed (conv2d_<n>, numbered
    # per process), so each block is found by the concatenation that ends it;
    # "$" keeps mixed1 from matching mixed10, and mixed9 from mixed9_1.
    blocks=_prefixes("mixed{}$", 0, 10),
)
def inception_v3():
    """InceptionV3 at 299x299, 24M parameters."""


@register_backbone(
    application="densenet.DenseNet121",
    input_size=(224, 224),
    preprocessing="torch",
    layers={"avg_pool": Tap(1024, "avg_pool")},
    default_layer="avg_pool",
    imagenet_file="densenet121_weights_tf_dim_ordering_tf_kernels.h5",
    blocks=_prefixes("conv{}_", 2, 5),
)
def densenet121():
    """DenseNet121, 8M parameters."""


def load_model_file(keras, path, layer):
    """A user's ``.keras`` model and the tap for ``layer`` in it.

    Returns
    -------
    model : keras.Model
    backbone : Backbone
        An ad-hoc entry: input size from the model, no preprocessing, the
        one requested layer with its dimension (4-D outputs are averaged
        over their spatial positions, as ``avg_pool`` is for the registry).
    """
    path = Path(path)
    if not path.exists():
        raise FeatpipeError(f"model file not found: {path}")
    try:
        model = keras.saving.load_model(path, compile=False)
    except Exception as error:  # Keras raises many kinds for a file it can't read
        raise FeatpipeError(f"cannot load model file {path}: {type(error).__name__}: {first_line(error)}") from None
    names = [item.name for item in model.layers]
    if not layer or layer not in names:
        got = f"no layer {layer!r}" if layer else "--layer is required for a model file"
        raise FeatpipeError(f"{path}: {got}; expected one of: {', '.join(names)}")
    shape = model.get_layer(layer).output.shape
    input_shape = tuple(model.inputs[0].shape) if len(model.inputs) == 1 else ()
    if len(input_shape) != 4 or None in input_shape[1:] or input_shape[-1] not in (1, 3) or len(shape) not in (2, 4):
        raise FeatpipeError(
            f"{path}: need one image input of fixed size with 1 or 3 channels and a 2-D or 4-D output at "
            f"{layer!r}; got input {input_shape or [tuple(t.shape) for t in model.inputs]}, output {tuple(shape)}"
        )
    height, width, channels = input_shape[1:]
    tap = Tap(int(shape[-1]), layer, pool=len(shape) == 4)
    entry = Backbone(
        name=str(path),
        application="file",
        input_size=(int(height), int(width)),
        preprocessing="none",
        layers={layer: tap},
        default_layer=layer,
        channels=int(channels),
    )
    return model, entry
