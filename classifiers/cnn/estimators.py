"""The CNNs with scikit-learn manners, so that the learning curves fit them as they fit every head.

:class:`ScratchCNNClassifier` and :class:`FinetuneClassifier` store their
settings in ``__init__`` and do the work in ``fit``: :func:`classifiers.cnn.scratch.fit_scratch_cnn`
and :func:`classifiers.cnn.finetune.fit_finetune` on uint8 images of shape
(n_samples, height, width, channels), as stored. ``predict`` returns class
indices. They pickle unfitted (``curves`` sends them to joblib's workers).

Example::

    cnn = ScratchCNNClassifier(n_classes=10, settings={"epochs": 30}, seed=0).fit(images, labels)
    accuracy = cnn.score(test_images, test_labels)
"""

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin


class _ImageCNN(ClassifierMixin, BaseEstimator):
    """What both CNN estimators share: the settings, the seed, ``predict``.

    Parameters
    ----------
    n_classes : int, the classes of the image store (a draw may hold fewer)
    settings : dict, keyword arguments of the fit function (the ``scratch`` or ``finetune`` params)
    seed : int
    """

    # Fitted in this process, one at a time (classifiers.cores.fits_in_this_process).
    fits_in_this_process = True

    def __init__(self, n_classes, settings=None, seed=0):
        self.n_classes = n_classes
        self.settings = settings
        self.seed = seed

    def fit(self, X, y):
        """Fit on ``X`` (uint8 images, ndarray of shape (n_samples, height, width, channels)) and class indices ``y``."""
        self.model_, self.history_ = self._fit(np.asarray(X), np.asarray(y), dict(self.settings or {}))
        self.classes_ = np.arange(self.n_classes)
        return self

    def predict(self, X):
        """Class indices of ``X``, ndarray of shape (n_samples,)."""
        from classifiers.cnn.training import predict_labels

        return predict_labels(self.model_, X)


class ScratchCNNClassifier(_ImageCNN):
    """The scratch CNN (:func:`classifiers.cnn.scratch.fit_scratch_cnn`) as an estimator."""

    def _fit(self, images, labels, settings):
        from classifiers.cnn.scratch import fit_scratch_cnn

        return fit_scratch_cnn(images, labels, self.n_classes, seed=self.seed, **settings)


class FinetuneClassifier(_ImageCNN):
    """A fine-tuned backbone (:func:`classifiers.cnn.finetune.fit_finetune`) as an estimator.

    ``settings`` holds ``backbone`` and ``weights`` with the other keyword arguments.
    """

    def _fit(self, images, labels, settings):
        from classifiers.cnn.finetune import fit_finetune

        finetuned, history = fit_finetune(images, labels, self.n_classes, seed=self.seed, **settings)
        return finetuned.model, history
