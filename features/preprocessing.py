"""Turn stored uint8 images into what a backbone was trained on, inside the model.

The steps, in order, for every backbone:

1. cast uint8 to float32 (values stay 0-255);
2. grayscale to 3 channels by repeating the one channel (and RGB to
   grayscale for a user's one-channel model);
3. resize to the backbone's input size with bilinear interpolation
   (``keras.layers.Resizing``: no antialiasing, the aspect ratio is not
   kept, so a non-square image is stretched);
4. the backbone's own ``preprocess_input`` (VGG and ResNet50: ``caffe``,
   RGB to BGR and the ImageNet channel means subtracted; MobileNetV2 and
   InceptionV3: ``tf``, scaled to [-1, 1]; DenseNet121: ``torch``, scaled to
   [0, 1] then ImageNet mean/std; EfficientNetB0 rescales inside itself).

All of it is one Keras layer, so it runs in the compiled graph on the
accelerator next to the forward pass; the host only ships small uint8
batches. It always computes in float32, whatever the precision policy of the
backbone after it.
"""

from features.backbones import PREPROCESSING_MODES
from plumbing.backend import load_keras

keras = load_keras()

# The modes of keras.applications.imagenet_utils.preprocess_input; "builtin"
# and "none" take the 0-255 values as they are.
IMAGENET_UTILS_MODES = ("caffe", "tf", "torch")

RESIZE_METHOD = "bilinear"
RESIZE_DESCRIPTION = "bilinear (keras.layers.Resizing; no antialiasing; aspect ratio not kept)"


@keras.saving.register_keras_serializable(package="featpipe")
class ResizeAndRescale(keras.layers.Layer):
    """uint8 images of any stored size to a backbone's preprocessed float32 input.

    Parameters
    ----------
    input_size : tuple of (height, width)
        The backbone's input size.
    in_channels, out_channels : {1, 3}
        Channels stored and channels the backbone takes.
    preprocessing : str
        The backbone's preprocessing mode, a key of
        :data:`features.backbones.PREPROCESSING_MODES` (``Backbone.preprocessing``).

    Call it on ``images`` of shape (n_samples, height, width, in_channels),
    uint8; it returns float32 of shape (n_samples, *input_size, out_channels).
    The layer is configured by names and numbers only, so a model holding it
    saves to ``.keras`` and loads again once this module is imported.
    """

    def __init__(self, input_size, in_channels, out_channels=3, preprocessing="none", **kwargs):
        # Always float32, also when loaded from a config that names the saved dtype.
        super().__init__(**{**kwargs, "dtype": "float32"})
        if preprocessing not in PREPROCESSING_MODES:
            expected = ", ".join(PREPROCESSING_MODES)
            raise ValueError(f"unknown preprocessing {preprocessing!r}; expected one of: {expected}")
        height, width = input_size
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.preprocessing = preprocessing
        self.resize = keras.layers.Resizing(height, width, interpolation=RESIZE_METHOD, dtype="float32")

    def build(self, input_shape):
        # Nothing to create (Resizing has no weights), but a layer holding a
        # sublayer must say it is built, or loading a saved model warns.
        self.resize.build(tuple(input_shape[:-1]) + (self.out_channels,))

    def call(self, images):
        x = keras.ops.cast(images, "float32")
        x = match_channels(x, self.in_channels, self.out_channels)
        if tuple(images.shape[1:3]) != (self.resize.height, self.resize.width):
            # At the input size already (photos prepared at 224), the bilinear resize is the identity: skipped.
            x = self.resize(x)
        if self.preprocessing in IMAGENET_UTILS_MODES:
            # What every application's own preprocess_input calls with its mode.
            x = keras.applications.imagenet_utils.preprocess_input(x, mode=self.preprocessing)
        return x

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.resize.height, self.resize.width, self.out_channels)

    def get_config(self):
        return {
            **super().get_config(),
            "input_size": (self.resize.height, self.resize.width),
            "in_channels": self.in_channels,
            "out_channels": self.out_channels,
            "preprocessing": self.preprocessing,
        }


def match_channels(x, in_channels, out_channels):
    """Repeat a gray channel to RGB, or average RGB to gray (ITU-R 601 weights)."""
    if in_channels == out_channels:
        return x
    if in_channels == 1 and out_channels == 3:
        return keras.ops.repeat(x, 3, axis=-1)
    if in_channels == 3 and out_channels == 1:
        return keras.ops.image.rgb_to_grayscale(x)
    raise ValueError(f"cannot turn {in_channels}-channel images into {out_channels}-channel input")
