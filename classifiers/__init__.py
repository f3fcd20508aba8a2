"""The models of the report's rows: the shallow learners on feature matrices, the pixel
baseline, the CNNs on the images (:mod:`classifiers.cnn`), their records and evaluation,
and every trained model as one object that takes images (:func:`load_model`).

A registry maps each classifier name (``rf``, ``svm``, ``dense``, ``logreg``, ``knn``) to a
builder taking the seed and plain options; :func:`available` lists them.
:func:`load_model` opens any ``data/models/<name>/`` folder into an
:class:`ImageClassifier`: uint8 images as the image store holds them in,
``predict``, ``predict_proba`` (or ``decision_function``) out. Importing this
package is cheap: Keras is imported only when a Keras model is fitted, built or loaded.
"""

import importlib

from classifiers import dense, knn, logreg, rf, svm  # noqa: F401  (each registers its classifier)
from classifiers.evaluation import check_training_data, fit_and_evaluate, score
from classifiers.registry import available, build, check_names, get, register
from classifiers.training import train_and_score

__all__ = [
    "ImageClassifier",
    "KerasImageClassifier",
    "available",
    "build",
    "check_names",
    "check_training_data",
    "fit_and_evaluate",
    "get",
    "load_model",
    "register",
    "score",
    "train_and_score",
]

# Imported on first use (PEP 562): a stage that only fits classifiers neither runs the
# loading code nor imports what it needs (the backbones, the CNNs), so it doesn't depend on them.
_ON_FIRST_USE = {
    "ImageClassifier": "classifiers.image_model",
    "KerasImageClassifier": "classifiers.image_model",
    "load_model": "classifiers.loading",
}


def __getattr__(name):
    if name in _ON_FIRST_USE:
        return getattr(importlib.import_module(_ON_FIRST_USE[name]), name)
    raise AttributeError(f"module 'classifiers' has no attribute {name!r}")
