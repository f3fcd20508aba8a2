"""Turn one image file, of any format and mode Pillow reads, into a square uint8 array.

The rules, in order:

1. The EXIF orientation is applied, so a photo stands as its camera meant.
2. Modes become 8-bit ``L`` (grayscale) or ``RGB``: 16-bit grayscale is
   scaled (value / 257), 1-bit and float (read as 0-255, clipped) become
   ``L``; palette, CMYK, YCbCr, LAB and HSV become ``RGB``; transparent pixels
   (RGBA, LA, palette transparency) are laid over white.
3. The shorter side is resized to ``size`` (Lanczos), then the centre is
   cropped to ``size`` x ``size``: nothing is stretched, the borders of the
   longer side are lost.

An image store holds one channel mode: ``L`` (1 channel) when every image
read was grayscale, else ``RGB`` (3), grayscale images then repeating their
one channel (:func:`with_channels`). Decoding for a given channel mode
(``featpipe predict``: a model's store) turns a colour image into ``L``
before the resize (Pillow's ``convert("L")``: ITU-R 601-2 luma), as a
grayscale photo would have been, and repeats a grayscale one after it.
"""

import warnings

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

CHANNELS = {"L": 1, "RGB": 3}
GRAYSCALE_MODES = frozenset({"1", "L", "LA", "La", "I", "I;16", "I;16L", "I;16B", "I;16N", "F"})
SIXTEEN_BIT_MODES = frozenset({"I", "I;16", "I;16L", "I;16B", "I;16N"})
WHITE = (255, 255, 255, 255)


class UnreadableImage(Exception):
    """A file that cannot become an image; ``str(error)`` is the reason, for people."""


def read_image(path, size, channel_mode=None):
    """Decode ``path`` into a ``size`` x ``size`` uint8 array.

    Parameters
    ----------
    path : pathlib.Path
    size : int
    channel_mode : {None, "L", "RGB"}
        ``None``: as the file is, grayscale or colour (what ``prepare`` reads).
        ``"L"`` or ``"RGB"``: in that channel mode (see the module docstring).

    Returns
    -------
    ndarray of shape (size, size) for a grayscale image, (size, size, 3) for a
    colour one; (size, size, 1 or 3) with a ``channel_mode``.

    Raises
    ------
    UnreadableImage
        With the reason: empty, not an image, truncated, too many pixels, no permission.
    """
    image = open_image(path, size)
    try:
        image = to_8bit(image)
    except ValueError:  # modes Pillow cannot convert, such as LAB to RGB
        raise UnreadableImage(f"mode {image.mode} cannot be converted to RGB") from None
    if channel_mode == "L" and image.mode != "L":
        image = image.convert("L")
    square = ImageOps.fit(image, (size, size), method=Image.Resampling.LANCZOS)
    pixels = np.asarray(square, dtype=np.uint8)
    return pixels if channel_mode is None else with_channels(pixels, CHANNELS[channel_mode])


def with_channels(pixels, channels):
    """A decoded image (height, width) or (height, width, 3) as (height, width, ``channels``), gray repeated for 3."""
    if pixels.ndim == 3:
        if pixels.shape[-1] != channels:
            raise ValueError(f"cannot make a {pixels.shape[-1]}-channel image {channels}-channel; decode it in that mode")
        return pixels
    return pixels[..., np.newaxis] if channels == 1 else np.repeat(pixels[..., np.newaxis], 3, axis=2)


def open_image(path, size):
    """Decode ``path`` fully, EXIF orientation applied, or raise :class:`UnreadableImage`."""
    try:
        if path.stat().st_size == 0:
            raise UnreadableImage("empty file")
    except OSError as error:
        raise UnreadableImage(f"cannot read: {error.strerror or error}") from None
    # Pillow only warns between its pixel limit and twice that; a bomb is a bomb.
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            with Image.open(path) as image:
                # JPEGs decode at 1/2, 1/4 or 1/8 scale when that still leaves
                # twice the target size: much faster for photos, no visible loss.
                image.draft(None, (2 * size, 2 * size))
                image.load()
                return ImageOps.exif_transpose(image)
        except PermissionError:
            raise UnreadableImage("permission denied") from None
        except UnidentifiedImageError:
            raise UnreadableImage("not an image Pillow can read") from None
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
            # Pillow's message ends "..., could be decompression bomb DOS attack."; keep the numbers.
            numbers = str(error).split(", could be")[0]
            raise UnreadableImage(f"too many pixels, a possible decompression bomb: {numbers}") from None
        except Exception as error:  # noqa: BLE001 - Pillow's plugins raise all kinds on corrupt data
            raise UnreadableImage(f"truncated or corrupt: {str(error) or type(error).__name__}") from None


def to_8bit(image):
    """``image`` as an ``L`` (grayscale) or ``RGB`` Pillow image, by the rules in the module docstring."""
    mode = image.mode
    if mode in SIXTEEN_BIT_MODES:
        values = np.asarray(image, dtype=np.float64)
        return Image.fromarray(np.rint(np.clip(values, 0, 65535) / 257).astype(np.uint8), "L")
    if mode == "F":
        return Image.fromarray(np.rint(np.clip(np.asarray(image), 0, 255)).astype(np.uint8), "L")
    if _has_transparency(image):
        flat = Image.alpha_composite(Image.new("RGBA", image.size, WHITE), image.convert("RGBA"))
        return flat.convert("L" if mode in GRAYSCALE_MODES else "RGB")
    if mode in ("L", "RGB"):
        return image
    return image.convert("L" if mode in GRAYSCALE_MODES else "RGB")


def _has_transparency(image):
    return image.mode in ("RGBA", "RGBa", "LA", "La", "PA") or (image.mode == "P" and "transparency" in image.info)
