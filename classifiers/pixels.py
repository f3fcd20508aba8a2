"""Raw pixels as features: what the pixel baseline (a random forest from the registry) learns from."""

import numpy as np


def pixel_matrix(images):
    """Flatten uint8 images to pixel features scaled to [0, 1].

    Parameters
    ----------
    images : ndarray of shape (n_samples, height, width, channels), uint8

    Returns
    -------
    ndarray of shape (n_samples, height * width * channels), float32
    """
    images = np.asarray(images)
    flat = images.reshape(len(images), -1).astype(np.float32)
    flat /= 255.0
    return flat
