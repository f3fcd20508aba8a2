"""The models of the report's rows: the shallow learners on feature matrices, the pixel
baseline, the CNNs on the images (:mod:`classifiers.cnn`), their records and evaluation.

A registry maps each classifier name (``rf``, ``svm``, ``dense``, ``logreg``, ``knn``) to a builder
taking the seed and plain options; :func:`available` lists them. Importing
this package is cheap: Keras is imported only when a dense head is fitted.
"""

from classifiers import dense, knn, logreg, rf, svm  # noqa: F401  (each registers its classifier)
from classifiers.evaluation import check_training_data, fit_and_evaluate, score
from classifiers.registry import available, build, check_names, get, register
from classifiers.training import train_and_score

__all__ = [
    "available",
    "build",
    "check_names",
    "check_training_data",
    "fit_and_evaluate",
    "get",
    "register",
    "score",
    "train_and_score",
]
