"""LIME for images (Ribeiro et al. 2016), from maintained parts: scikit-image's SLIC and scikit-learn's Ridge.

For each image:

1. superpixels by SLIC-zero (``skimage.segmentation.slic(slic_zero=True)``),
   which adapts its compactness to each superpixel: no knob to tune between
   28x28 grayscale and 224x224 photos, and no collapse on noisy images
   (plain SLIC at compactness 10 merged a noise image into one segment);
2. ``samples`` random on/off patterns of the superpixels, drawn as the
   paper does (the number switched on uniform, then which ones uniform); the
   first pattern is the image itself; "off" is the image's mean colour, as
   for occlusion (:mod:`explanations.occlusion` says why);
3. the explained class's score of every perturbed image, scored in blocks
   through :meth:`classifiers.ImageClassifier.scores`;
4. a Ridge regression (alpha 1, as the ``lime`` package) of those scores on
   the patterns, weighted by LIME's exponential kernel on the cosine
   distance to the all-on pattern, ``exp(-d**2 / kernel_width**2)``.

The map gives each pixel its superpixel's coefficient: the score the
superpixel adds when it is shown. The weighted R² of each fit says how well
the linear stand-in follows the model near the image.
"""

import numpy as np

from explanations.occlusion import IMAGE_MEAN, check_fill, fill_colour
from plumbing.errors import FeatpipeError
from storage.image_store import check_images

PATTERNS_PER_CALL = 256


def lime_maps(model, images, labels, samples=1000, segments=50, seed=0, kernel_width=0.25, fill=IMAGE_MEAN):
    """LIME map of each image for its class.

    Parameters
    ----------
    model : classifiers.ImageClassifier
    images : ndarray of shape (n_samples, height, width, channels), uint8
    labels : array-like of shape (n_samples,), the class to explain for each image
    samples : int, perturbed copies per image (the image itself included)
    segments : int, the number of superpixels SLIC aims for
    seed : int, seeds the perturbations (image ``i`` gets its own stream)
    kernel_width : float, width of the exponential kernel on cosine distance
    fill : "mean" or int, the colour of a superpixel switched off: the image's mean colour, or one value 0-255

    Returns
    -------
    maps : ndarray of shape (n_samples, height, width), float32, signed
    settings : dict; ``r2`` and ``superpixels`` hold one value per image
    """
    images = check_images(images)
    check_lime(samples, segments, kernel_width)
    check_fill(fill)
    columns = model.columns(labels, len(images))
    streams = np.random.SeedSequence(seed).spawn(len(images))
    maps = np.empty(images.shape[:3], np.float32)
    fits = [lime_fit(model, image, column, samples, segments, np.random.default_rng(stream), kernel_width, fill)
            for image, column, stream in zip(images, columns, streams)]
    for index, (superpixels, weights, _) in enumerate(fits):
        maps[index] = weights[superpixels]
    settings = {
        "samples": int(samples),
        "segments": int(segments),
        "seed": int(seed),
        "kernel_width": float(kernel_width),
        "fill": fill if isinstance(fill, str) else int(fill),
        "segmentation": "SLIC-zero (scikit-image)",
        "regression": "Ridge(alpha=1), weights exp(-d^2/kernel_width^2), d = cosine distance to the image",
        "values": f"the superpixel's Ridge coefficient: the class's {model.score_kind} it adds when shown",
        "r2": np.array([r2 for _, _, r2 in fits], np.float32),
        "superpixels": np.array([weights.size for _, weights, _ in fits], np.int32),
    }
    return maps, settings


def check_lime(samples, segments, kernel_width):
    """Refuse settings LIME can't work with."""
    for name, value, least in (("samples", samples, 2), ("segments", segments, 1)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < least:
            raise FeatpipeError(f"lime {name}: expected an integer >= {least}, got {value!r}")
    if not kernel_width > 0:
        raise FeatpipeError(f"lime kernel_width: expected a number > 0, got {kernel_width!r}")


def lime_fit(model, image, column, samples, segments, rng, kernel_width=0.25, fill=IMAGE_MEAN):
    """LIME for one image and one score column.

    Parameters
    ----------
    image : ndarray of shape (height, width, channels), uint8
    column : int, the score column explained
    rng : numpy.random.Generator

    Returns
    -------
    superpixels : ndarray of shape (height, width), int, superpixel of each pixel
    weights : ndarray of shape (n_superpixels,), the Ridge coefficients
    r2 : float, the weighted R² of the fit
    """
    from sklearn.linear_model import Ridge
    from sklearn.metrics import pairwise_distances

    superpixels = superpixel_labels(image, segments)
    colour = fill_colour(image, fill)
    patterns = random_patterns(rng, superpixels.max() + 1, samples)
    scores = np.concatenate([
        model.scores(perturbed(image, superpixels, patterns[start : start + PATTERNS_PER_CALL], colour))[:, column]
        for start in range(0, samples, PATTERNS_PER_CALL)
    ])
    distances = pairwise_distances(patterns, patterns[:1], metric="cosine").ravel()
    kernel = np.exp(-(distances**2) / kernel_width**2)
    ridge = Ridge(alpha=1.0).fit(patterns, scores, sample_weight=kernel)
    return superpixels, ridge.coef_.astype(np.float32), float(ridge.score(patterns, scores, sample_weight=kernel))


def superpixel_labels(image, segments):
    """SLIC-zero superpixels of ``image`` (height, width, 1 or 3), numbered 0..k-1, shape (height, width)."""
    from skimage.segmentation import slic

    gray = image.shape[-1] == 1
    labels = slic(
        image[..., 0] if gray else image, n_segments=segments, slic_zero=True,
        channel_axis=None if gray else -1, start_label=0,
    )
    return np.unique(labels, return_inverse=True)[1].reshape(labels.shape)


def random_patterns(rng, n_superpixels, samples):
    """On/off patterns (samples, n_superpixels) of 0/1; row 0 is all on (the image itself).

    As in the paper and the ``lime`` package: the number switched off is
    uniform in 1..n-1, then which ones is uniform.
    """
    patterns = np.ones((samples, n_superpixels), np.float64)
    count = samples - 1
    switched_off = rng.integers(1, max(n_superpixels, 2), size=count)
    keys = rng.random((count, n_superpixels))
    cutoff = np.sort(keys, axis=1)[np.arange(count), np.minimum(switched_off, n_superpixels) - 1]
    patterns[1:][keys <= cutoff[:, None]] = 0.0
    return patterns


def perturbed(image, superpixels, patterns, colour):
    """Copies of ``image`` with the superpixels each pattern switches off set to ``colour``; (len(patterns), H, W, C) uint8."""
    shown = patterns[:, superpixels].astype(bool)  # (n, height, width)
    return np.where(shown[..., None], image[None], colour).astype(np.uint8)
