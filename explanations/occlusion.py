"""Occlusion sensitivity (Zeiler & Fergus 2014): how much does hiding each part of an image cost its class?

A square (``patch`` pixels a side) slides over the image in steps of
``stride``; each occluded copy is scored, and the drop of the explained
class's score is credited to the pixels the patch covered. A pixel's value
is the mean drop over the patches that covered it. The last row and column
of patches sit flush with the border, so every pixel is covered.

The patch is filled with the image's own mean colour (per channel; LIME's
"off" superpixels use it too): of all constant fills it changes the image
least on average, so a map shows more the loss of what was hidden and less
the model's reaction to a foreign patch. A fixed mid-grey 128 is brighter
than most of a Fashion-MNIST image (mean about 72) and paints a conspicuous
square onto its black background. No occluder is neutral everywhere (on
black background the mean is still a grey square), so ``fill`` also takes a
fixed value 0-255.

The copies of all images are scored in blocks of :data:`COPIES_PER_CALL`
through :meth:`classifiers.ImageClassifier.scores` (which batches them through the
model's compiled forward pass); memory stays bounded whatever the image size.
"""

import numpy as np

from plumbing.errors import FeatpipeError
from storage.image_store import check_images

IMAGE_MEAN = "mean"
COPIES_PER_CALL = 512


def occlusion_maps(model, images, labels, patch=8, stride=4, fill=IMAGE_MEAN):
    """Occlusion sensitivity map of each image for its class.

    Parameters
    ----------
    model : classifiers.ImageClassifier
    images : ndarray of shape (n_samples, height, width, channels), uint8
    labels : array-like of shape (n_samples,), the class to explain for each image
    patch : int, side of the square in pixels
    stride : int, step between patch positions in pixels
    fill : "mean" or int
        The patch's colour: each image's mean colour, or one value 0-255.

    Returns
    -------
    maps : ndarray of shape (n_samples, height, width), float32
        Positive where hiding the pixel lowers the class's score (evidence
        for the class), negative where it raises it.
    settings : dict, what the output file records about the method
    """
    images = check_images(images)
    check_occlusion(images.shape[1:3], patch, stride)
    check_fill(fill)
    columns = model.columns(labels, len(images))
    corners = patch_corners(images.shape[1:3], patch, stride)
    coverage = _coverage(images.shape[1:3], corners, patch)
    colours = np.stack([fill_colour(image, fill) for image in images])
    scores = _scores_of_copies(model, images, colours, corners, patch)
    maps = np.empty(images.shape[:3], np.float32)
    for index, column in enumerate(columns):
        drops = scores[index, 0, column] - scores[index, 1:, column]
        maps[index] = _credit(drops, corners, patch, images.shape[1:3]) / coverage
    settings = {
        "patch": int(patch),
        "stride": int(stride),
        "fill": fill if isinstance(fill, str) else int(fill),
        "values": f"drop of the class's {model.score_kind} when the patch covers the pixel, "
                  "averaged over the patches covering it",
    }
    return maps, settings


def check_occlusion(image_size, patch, stride):
    """Refuse a patch or stride that is not a positive integer, a patch larger than the images, a stride larger than the patch."""
    for name, value in (("patch", patch), ("stride", stride)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise FeatpipeError(f"occlusion {name}: expected an integer >= 1, got {value!r}")
    for name, check in (("patch", lambda: check_patch(image_size, patch)), ("stride", lambda: check_stride(patch, stride))):
        try:
            check()
        except FeatpipeError as error:
            raise FeatpipeError(f"occlusion {name}: {error}") from None


def check_patch(image_size, patch):
    """Refuse a patch larger than images of ``image_size`` (height, width)."""
    height, width = image_size
    if patch > min(height, width):
        raise FeatpipeError(f"expected at most the image size ({height}x{width}), got {patch}")


def check_stride(patch, stride):
    """Refuse a stride larger than the patch: the pixels between two patches would have no value (0/0)."""
    if stride > patch:
        raise FeatpipeError(f"expected at most the patch ({patch}), got {stride}: a larger stride leaves pixels no patch covers")


def check_fill(fill):
    """Refuse a fill that is neither ``"mean"`` nor an integer 0-255."""
    if isinstance(fill, str) and fill == IMAGE_MEAN:
        return
    if isinstance(fill, (bool, str)) or not isinstance(fill, (int, np.integer)) or not 0 <= fill <= 255:
        raise FeatpipeError(f"fill: expected \"mean\" or an integer 0-255, got {fill!r}")


def fill_colour(image, fill):
    """The colour (channels,) uint8 that hides a region of ``image`` (height, width, channels)."""
    if isinstance(fill, str):
        return np.round(image.mean(axis=(0, 1))).astype(np.uint8)
    return np.full(image.shape[-1], fill, np.uint8)


def patch_corners(image_size, patch, stride):
    """Top-left corners (row, column) of every patch position, border-flush ones included."""
    rows, columns = (_starts(size, patch, stride) for size in image_size)
    return [(row, column) for row in rows for column in columns]


def _starts(size, patch, stride):
    starts = list(range(0, size - patch + 1, stride))
    if starts[-1] != size - patch:
        starts.append(size - patch)
    return starts


def _coverage(image_size, corners, patch):
    """How many patches cover each pixel, (height, width)."""
    return _credit(np.ones(len(corners)), corners, patch, image_size)


def _credit(values, corners, patch, image_size):
    """Sum, at each pixel, the values of the patches covering it."""
    total = np.zeros(image_size, np.float64)
    for value, (row, column) in zip(values, corners):
        total[row : row + patch, column : column + patch] += value
    return total


def _scores_of_copies(model, images, colours, corners, patch):
    """Scores (n_images, 1 + n_corners, n_classes): each image itself, then each of its occluded copies.

    The copies of all images queue up together and go to the model in blocks
    of :data:`COPIES_PER_CALL`, so only the very last batch is padded.
    """
    per_image = 1 + len(corners)
    total = len(images) * per_image
    scored = [model.scores(_copies(images, colours, corners, patch, range(start, min(start + COPIES_PER_CALL, total))))
              for start in range(0, total, COPIES_PER_CALL)]
    return np.concatenate(scored).reshape(len(images), per_image, -1)


def _copies(images, colours, corners, patch, jobs):
    """The images for ``jobs`` (indices into image-major order: the image itself, then one copy per corner)."""
    per_image = 1 + len(corners)
    copies = images[[job // per_image for job in jobs]].copy()
    for copy, job in zip(copies, jobs):
        image, position = divmod(job, per_image)
        if position:  # position 0 is the image itself
            row, column = corners[position - 1]
            copy[row : row + patch, column : column + patch] = colours[image]
    return copies
